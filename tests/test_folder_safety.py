"""The results folder is hpconj's alone: a user's folder is never written, a user's file inside a
results folder is never deleted, and one folder has one live writer at a time (hpconj.folder)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY, copied, plotted_sweep, refusal, run_here

BUSY = "in use by another hpconj command"
FIGURE_SUFFIXES = (".png", ".svg")


# ----------------------------------------------------------------------------- helpers
def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path → bytes): equal snapshots mean nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def words(text: str) -> str:
    return " ".join(text.split())


def user_folder(folder: Path) -> Path:
    """A folder of a user's own files, one of them a config that hpconj could sweep."""
    (folder / "plots").mkdir(parents=True)
    (folder / "config.yaml").write_text("# my experiment: keep this comment\n" + yaml.safe_dump(TINY, sort_keys=False))
    (folder / "plots" / "paper_fig1.pdf").write_bytes(b"%PDF-1.4 my figure\x00\x01")
    (folder / "summary.md").write_text("# my notes\n")
    (folder / "optima.csv").write_text("mine,1\n")
    return folder


@pytest.fixture(scope="module")
def plotted(tmp_path_factory) -> Path:
    """A tiny finished and plotted sweep, made once; tests copy it before changing it."""
    folder = plotted_sweep(tmp_path_factory.mktemp("safety"), name="res")
    assert not (folder / ".hpconj.lock").exists()  # released by sweep and by plot
    return folder


@pytest.fixture
def results(plotted, tmp_path) -> Path:
    return copied(plotted, tmp_path)


def tiny_config(tmp_path: Path, name: str = "tiny.yaml", **changes) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**TINY, **changes}, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- 1, 2: whose folder
def test_a_users_folder_is_refused_and_left_alone(tmp_path):
    folder = user_folder(tmp_path / "mine")
    before, names = snapshot(folder), listing(folder)
    proc = run_here("sweep", str(tiny_config(tmp_path)), "--out", str(folder), "--quiet")
    refusal(proc, "not a results folder of hpconj")
    assert listing(folder) == names and snapshot(folder) == before
    fresh = run_here("sweep", str(tiny_config(tmp_path)), "--out", str(folder), "--fresh", "--quiet")
    refusal(fresh, "not a results folder of hpconj")  # --fresh deletes nothing of a user's
    assert listing(folder) == names and snapshot(folder) == before


def test_plot_writes_nothing_into_a_folder_hpconj_did_not_make(plotted, tmp_path):
    folder = user_folder(tmp_path / "mine")
    shutil.copy(plotted / "trials.csv", folder / "trials.csv")  # records, but no manifest.json of hpconj
    before, names = snapshot(folder), listing(folder)
    refusal(run_here("plot", str(folder)), "manifest.json")
    assert listing(folder) == names and snapshot(folder) == before


def test_out_dot_in_a_users_folder_is_refused_and_left_alone(tmp_path):
    folder = user_folder(tmp_path / "mine")
    before, names = snapshot(folder), listing(folder)
    # the user sweeps their own config into the folder they are in
    proc = run_here("sweep", "config.yaml", "--out", ".", "--quiet", cwd=folder)
    refusal(proc, "not a results folder of hpconj")
    assert listing(folder) == names and snapshot(folder) == before


def test_a_users_folder_with_a_damaged_manifest_is_refused(tmp_path):
    folder = user_folder(tmp_path / "mine")
    (folder / "manifest.json").write_text('{"name": "my own manifest"}\n')
    before = snapshot(folder)
    proc = run_here("sweep", str(tiny_config(tmp_path)), "--out", str(folder), "--quiet")
    refusal(proc, "not a results folder of hpconj")
    assert snapshot(folder) == before


def test_new_and_empty_folders_are_accepted(tmp_path):
    config = tiny_config(tmp_path, budget={"epochs": 1}, sweep={**TINY["sweep"], "lr": {"values": [0.1]}})
    new = tmp_path / "new" / "deeper"
    proc = run_here("sweep", str(config), "--out", str(new), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (new / "manifest.json").is_file() and (new / "trials.csv").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_here("sweep", str(config), "--out", str(empty), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (empty / "manifest.json").is_file() and (empty / "trials.csv").is_file()
    assert not (new / ".hpconj.lock").exists() and not (empty / ".hpconj.lock").exists()


# ----------------------------------------------------------------------------- 3: a user's files inside a results folder
def _add_user_files(folder: Path) -> dict[str, bytes]:
    """A user's files: a PDF and a PNG of their own in plots/ (hpconj owns only the figures its
    manifest lists, not every .png), and notes at the top."""
    (folder / "plots" / "mine.pdf").write_bytes(b"%PDF-1.4 mine\x00")
    (folder / "plots" / "mine.png").write_bytes(b"\x89PNG my own figure")
    (folder / "notes.txt").write_text("what I saw\n")
    return {name: (folder / name).read_bytes() for name in ("plots/mine.pdf", "plots/mine.png", "notes.txt")}


def _hpconj_figures(folder: Path) -> list[Path]:
    return [p for p in (folder / "plots").glob("*") if p.suffix in FIGURE_SUFFIXES and p.stem != "mine"]


def test_rerun_that_adds_trials_removes_only_hpconjs_analysis(results, tmp_path):
    assert _hpconj_figures(results), "the fixture should have figures"
    mine = _add_user_files(results)
    more = tiny_config(tmp_path, "more.yaml", sweep={**TINY["sweep"], "lr": {"values": [0.01, 0.1, 0.3, 1000.0]}})
    proc = run_here("sweep", str(more), "--out", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "16 trials run, 48 already done" in words(proc.stdout)
    assert _hpconj_figures(results) == []
    for name in ("summary.md", "optima.csv", "shifts.csv"):
        assert not (results / name).exists(), name
    for name, data in mine.items():
        assert (results / name).read_bytes() == data, name
    assert not (results / ".hpconj.lock").exists()


def test_fresh_removes_only_hpconjs_files(results, tmp_path):
    mine = _add_user_files(results)
    proc = run_here("sweep", str(tiny_config(tmp_path)), "--out", str(results), "--fresh")
    assert proc.returncode == 0, proc.stderr
    assert "48 trials run, 0 already done" in words(proc.stdout)
    assert _hpconj_figures(results) == []
    for name in ("summary.md", "optima.csv", "shifts.csv"):
        assert not (results / name).exists(), name
    for name, data in mine.items():
        assert (results / name).read_bytes() == data, name


def test_a_manifest_entry_cannot_make_hpconj_delete_outside_its_folder(results, tmp_path):
    """Figures are deleted by the names manifest.json records; a name that climbs out of plots/
    (a damaged or hostile manifest) is never a figure."""
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"mine")
    manifest = json.loads((results / "manifest.json").read_text())
    manifest["files"]["plots/../../precious.png"] = "0" * 64
    manifest["files"]["plots/sub/x.png"] = "0" * 64
    (results / "manifest.json").write_text(json.dumps(manifest))
    assert run_here("sweep", str(tiny_config(tmp_path)), "--out", str(results), "--fresh", "--quiet").returncode == 0
    assert outside.read_bytes() == b"mine"


# ----------------------------------------------------------------------------- 4, 5: one writer at a time
def _hold_lock(folder: Path) -> subprocess.Popen:
    script = ("import time\nfrom pathlib import Path\nfrom hpconj.folder import writer_lock\n"
              f"with writer_lock(Path({str(folder)!r}), command='holder'):\n"
              "    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    line = holder.stdout.readline()  # blocks until the lock is held, or the holder dies (EOF)
    assert line.strip() == "held", holder.stderr.read() if holder.poll() is not None else line
    return holder


def _trial_count(folder: Path) -> int:
    with sqlite3.connect(folder / "store.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]


def test_a_held_folder_refuses_writers_and_a_killed_holder_releases_it(results, tmp_path):
    config = tiny_config(tmp_path)
    before = snapshot(results)
    holder = _hold_lock(results)
    try:
        pid = f"pid {holder.pid}"
        refusal(run_here("sweep", str(config), "--out", str(results), "--quiet"), BUSY, pid)
        refusal(run_here("sweep", str(config), "--out", str(results), "--fresh", "--quiet"), BUSY, pid)
        refusal(run_here("plot", str(results)), BUSY, pid)
        # readers are refused too while a writer holds the folder
        refusal(run_here("table", str(results)), BUSY, pid)
        refusal(run_here("check", str(results), "--integrity"), BUSY, pid)
        now = snapshot(results)
        assert now.pop(".hpconj.lock")  # the holder's name, for the messages above
        assert now == before  # store.sqlite, trials.csv and every other file unchanged
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert (results / ".hpconj.lock").exists()  # left behind by the killed holder...
    proc = run_here("sweep", str(config), "--out", str(results), "--fresh", "--quiet")
    assert proc.returncode == 0, proc.stderr  # ...and taken over
    assert _trial_count(results) == 48
    assert not (results / ".hpconj.lock").exists()


def test_two_sweeps_at_once_train_each_trial_once(tmp_path):
    config = tiny_config(tmp_path, sweep={**TINY["sweep"], "lr": {"values": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0,
                                                                              1000.0]}})
    planned = 7 * 2 * 2 * 2 * 2
    folder = tmp_path / "res"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # no --quiet: the summary line says how many trials each one trained
    procs = [subprocess.Popen([sys.executable, "-m", "hpconj", "sweep", str(config), "--out", str(folder)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes, outputs
    ran = 0
    for code, (stdout, stderr) in zip(codes, outputs):
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        if code == 0:
            found = re.search(r"(\d+) trials run, (\d+) already done", words(stdout))
            assert found, stdout
            ran += int(found.group(1))
            assert int(found.group(1)) + int(found.group(2)) == planned
        else:
            assert code == 2, (code, stderr)
            lines = [line for line in stderr.splitlines() if line.strip() and "error" in line]
            assert len(lines) == 1 and BUSY in lines[0], stderr
    assert ran == planned  # no trial trained twice
    assert _trial_count(folder) == planned
    assert not (folder / ".hpconj.lock").exists()


# ----------------------------------------------------------------------------- 6: another experiment
def test_folder_of_another_experiment_is_refused_and_unchanged(results, tmp_path):
    before = snapshot(results)
    other = tiny_config(tmp_path, "other.yaml", budget={"epochs": 3})
    proc = run_here("sweep", str(other), "--out", str(results), "--quiet")
    refusal(proc, "different experiment")
    assert snapshot(results) == before
