"""`hpconj sweep` end to end, as a user runs it: results folder, resume, refusal, failures."""
from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from conftest import FRAGILE_MODEL, ROOT, run_cli

REQUIRED_COLUMNS = [
    "trial_id", "status", "parameterization", "optimizer", "lr", "batch_size", "momentum", "seed", "train_loss",
    "val_loss", "val_error", "metric", "steps", "examples", "wall_s",
]


def _without_timing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["wall_s"])


def test_sweep_writes_every_result_file(write_config, tmp_path):
    out = tmp_path / "res"
    proc = run_cli("sweep", str(write_config()), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("store.sqlite", "trials.csv", "curves.csv", "config.yaml", "manifest.json"):
        assert (out / name).is_file(), name
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert len(trials) == 48 and trials["trial_id"].is_unique
    diverged = trials[trials["status"] == "diverged"]
    assert len(diverged) > 0 and (diverged["lr"] == 1000.0).all()
    assert (diverged["metric"] == math.inf).all()
    ok = trials[trials["status"] == "ok"]
    assert (ok["metric"] == ok["val_loss"]).all() and ok["metric"].between(0, 10).all()
    assert (trials["examples"] == trials["steps"] * trials["batch_size"]).all()
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == ["trial_id", "step", "examples", "train_loss"]
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["trials"]["planned"] == 48 and manifest["trials"]["ok"] + manifest["trials"]["diverged"] == 48
    for key in ("hpconj", "torch", "python", "platform", "cpu_capability", "arithmetic", "device", "git", "config_hash",
                "started", "ended"):
        assert key in manifest
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["seeds"] == [0, 1] and resolved["sweep"]["batch_size"] == [8, 32]
    with sqlite3.connect(out / "store.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 48
    assert "best grid lr" in proc.stdout


def test_rerun_resumes_and_runs_nothing_twice(write_config, tmp_path):
    config, out = write_config(), tmp_path / "res"
    first = run_cli("sweep", str(config), "--out", str(out), "--max-trials", "20")
    assert first.returncode == 0, first.stderr
    assert len(pd.read_csv(out / "trials.csv")) == 20
    assert json.loads((out / "manifest.json").read_text())["status"] == "partial"
    second = run_cli("sweep", str(config), "--out", str(out))
    assert second.returncode == 0
    assert "28 trials run, 20 already done" in " ".join(second.stdout.split())
    third = run_cli("sweep", str(config), "--out", str(out))
    assert "0 trials run, 48 already done" in " ".join(third.stdout.split())


def test_sweep_killed_with_sigkill_resumes_to_the_same_table(write_config, tmp_path):
    config = write_config(sweep={"lr": {"values": [0.01, 0.03, 0.1, 0.3, 1000.0]}})
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli("sweep", str(config), "--out", str(whole), "--quiet").returncode == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # one trial per stack in one worker: results arrive one at a time, so that the kill lands
    # mid-sweep however fast the machine (whole cohorts can all finish between two polls);
    # the resumed run below stacks them again, which must not change the table either
    proc = subprocess.Popen([sys.executable, "-m", "hpconj", "sweep", str(config), "--out", str(killed), "--quiet",
                             "--chunk-size", "1", "--workers", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store, recorded, deadline = killed / "store.sqlite", 0, time.time() + 120
    while recorded < 15 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if store.exists():
            try:
                with sqlite3.connect(store, timeout=5) as db:
                    recorded = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 15 <= recorded < 80

    resumed = run_cli("sweep", str(config), "--out", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a, b = pd.read_csv(whole / "trials.csv"), pd.read_csv(killed / "trials.csv")
    pd.testing.assert_frame_equal(_without_timing(a), _without_timing(b))
    pd.testing.assert_frame_equal(pd.read_csv(whole / "curves.csv"), pd.read_csv(killed / "curves.csv"))


def test_folder_of_a_different_experiment_is_refused_unless_fresh(write_config, tmp_path):
    out = tmp_path / "res"
    assert run_cli("sweep", str(write_config()), "--out", str(out), "--quiet").returncode == 0
    changed = write_config("changed.yaml", sweep={"batch_size": [8]})
    refused = run_cli("sweep", str(changed), "--out", str(out))
    assert refused.returncode == 2
    assert "different experiment" in refused.stderr and "sweep.batch_size: [8, 32] → [8]" in refused.stderr
    assert "--fresh" in refused.stderr and "Traceback" not in refused.stderr
    assert len(pd.read_csv(out / "trials.csv")) == 48  # nothing lost
    fresh = run_cli("sweep", str(changed), "--out", str(out), "--fresh", "--quiet")
    assert fresh.returncode == 0
    assert len(pd.read_csv(out / "trials.csv")) == 24


def test_added_lr_values_and_seeds_extend_a_folder(write_config, tmp_path):
    out = tmp_path / "res"
    assert run_cli("sweep", str(write_config()), "--out", str(out), "--quiet").returncode == 0
    more = write_config("more.yaml", sweep={"lr": {"values": [0.01, 0.1, 0.3, 1000.0]}}, seeds=[0, 1, 2])
    proc = run_cli("sweep", str(more), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "48 already done" in " ".join(proc.stdout.split())
    assert len(pd.read_csv(out / "trials.csv")) == 4 * 2 * 2 * 2 * 3


def test_failing_user_model_is_recorded_and_reported(write_config, tmp_path):
    (tmp_path / "fragile.py").write_text(FRAGILE_MODEL)
    config = write_config(task={"_replace": True, "model": "fragile:build", "data": "teacher"})
    out = tmp_path / "res"
    proc = run_cli("sweep", str(config), "--out", str(out), "--quiet", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "24 trial(s) failed" in lines[0] and "cannot take 32 examples" in lines[0]
    trials = pd.read_csv(out / "trials.csv")
    assert (trials[trials["batch_size"] == 32]["status"] == "failed").all()
    assert set(trials[trials["batch_size"] == 8]["status"]) <= {"ok", "diverged"}
    assert trials[trials["status"] == "failed"]["error"].str.contains("RuntimeError").all()


def test_unwritable_output_folder_is_one_line(write_config, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_cli("sweep", str(write_config()), "--out", str(blocker / "res"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --out") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(write_config, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_cli("sweep", str(write_config()), "--out", str(blocker / "res"), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_cuda_request_without_cuda_is_bad_input(write_config, tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # on a GPU machine the request is valid; tests/test_cuda covers that path
    proc = run_cli("sweep", str(write_config()), "--out", str(tmp_path / "r"), "--device", "cuda")
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


def test_validate_init_and_tasks(tmp_path):
    example = tmp_path / "example.yaml"
    assert run_cli("init", str(example)).returncode == 0
    again = run_cli("init", str(example))
    assert again.returncode == 2 and "--force" in again.stderr
    proc = run_cli("validate", str(example))
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "552 trials in 3 cohorts" in text and "mlp 64-64-64-10 on digits" in text
    listing = run_cli("tasks")
    assert listing.returncode == 0
    for name in ("mlp", "deep_linear", "quadratic", "teacher", "digits", "mnist1d", "nesterov", "conjugate"):
        assert name in listing.stdout


def test_console_script_and_module_agree():
    script = Path(sys.executable).with_name("hpconj")
    assert script.exists()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "sweep" in proc.stdout


def test_user_model_that_raises_when_built_is_bad_input(write_config, tmp_path):
    (tmp_path / "broken.py").write_text("def build(input_dim, output_dim):\n    raise ValueError('width must be even')\n")
    config = write_config(task={"_replace": True, "model": "broken:build", "data": "teacher"})
    for command in ("validate", "sweep"):
        proc = run_cli(command, str(config), "--out", str(tmp_path / "r"), cwd=tmp_path) if command == "sweep" \
            else run_cli(command, str(config), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "broken:build raised ValueError: width must be even" in lines[0]
        assert "Traceback" not in proc.stderr


def test_plot_and_table_commands(write_config, tmp_path):
    parent = tmp_path / "results"
    assert run_cli("sweep", str(write_config()), "--out", str(parent / "tiny"), "--quiet").returncode == 0
    proc = run_cli("plot", str(parent))  # a parent folder means every sweep inside it
    assert proc.returncode == 0, proc.stderr
    folder = parent / "tiny"
    optima = pd.read_csv(folder / "optima.csv")
    assert len(optima) == 2 * 2 * 2  # parameterization × B × β
    assert {"lr_opt", "lr_lo", "lr_hi", "metric_opt", "at_edge", "n_seeds"} <= set(optima.columns)
    shifts = pd.read_csv(folder / "shifts.csv")
    assert {"slope", "slope_lo", "slope_hi", "shift_octaves", "regret_max", "regret_mean", "n_slices",
            "n_edge"} <= set(shifts.columns)
    summary = (folder / "summary.md").read_text()
    assert "## Optima" in summary and "## Shifts" in summary and "**standard**" in summary
    for name in ("loss_vs_lr_batch_size", "optimum_shift_batch_size", "metric_heatmap", "training_curves"):
        assert (folder / "plots" / f"{name}.png").stat().st_size > 10_000
        assert (folder / "plots" / f"{name}.svg").is_file()
    table = run_cli("table", str(folder))
    assert table.returncode == 0 and "optimal lr per slice" in table.stdout and "standard" in table.stdout
    missing = run_cli("plot", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such results folder" in missing.stderr
