"""The committed experiments (experiments/): every one exists with its README, configs and results;
its files are intact; its tables and verdicts are what its stored trials give; the READMEs' verdict
tables are what the results say; the cheapest are re-run in part."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, run_cli, run_here
from test_check_statistics import narrower_kernels, recorded_elsewhere
from hpconj.claims import FAILS, HOLDS, INCONCLUSIVE, MISSING
from hpconj.config import load_config
from hpconj.folder import CLAIMS_FILE, read_trials
from hpconj.integrity import CheckReport
from hpconj.repro import compare_analysis, compare_derived_tables

EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import catalogue  # noqa: E402  (experiments/catalogue.py)

CONFIGS = sorted(EXPERIMENTS.glob("e[0-9][0-9]_*/*.yaml"))
FOLDERS = [c.parent / "results" / c.stem for c in CONFIGS]
CHEAPEST = ["e01_batch_lr/results/nqm_batch", "e02_momentum/results/momentum_short"]


def test_every_catalogued_experiment_exists_with_a_readme_configs_and_results():
    assert list(catalogue.EXPERIMENTS) == sorted(p.name for p in EXPERIMENTS.glob("e[0-9][0-9]_*"))
    assert len(catalogue.EXPERIMENTS) == 12
    for name, (_, figure) in catalogue.EXPERIMENTS.items():
        folder = EXPERIMENTS / name
        assert (folder / "README.md").is_file() and (folder / figure).is_file(), name
        assert list(folder.glob("*.yaml")), name
        assert not catalogue.claims(folder).empty, f"{name}: no verdicts"
    for config, results in zip(CONFIGS, FOLDERS):
        assert load_config(config).name == config.stem, "a config's name is its results folder's"
        assert (results / "manifest.json").is_file(), f"{config}: no committed results"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f"{f.parent.parent.name}/{f.name}")
def test_a_committed_experiment_is_intact_and_its_verdicts_are_what_its_trials_give(folder):
    done = run_here("check", str(folder), "--integrity")
    assert done.returncode == 0, done.stdout + done.stderr
    stored = read_trials(folder)
    report = CheckReport()
    compare_analysis(folder, stored, stored, report, exact=True)  # optima, shifts, claims.csv vs the trials
    compare_derived_tables(folder, report)
    assert not report.differences, report.differences
    assert not (folder / "curves.csv").exists() and "curves.csv" in json.loads((folder / "manifest.json").read_text())["dropped"]
    if load_config(folder.parent.parent / f"{folder.name}.yaml").expect:
        verdicts = pd.read_csv(folder / CLAIMS_FILE)["verdict"]
        assert set(verdicts) <= {HOLDS, FAILS, INCONCLUSIVE, MISSING}


def test_a_compacted_folder_stays_checkable_and_a_sweep_exports_its_curves_again(write_config, tmp_path):
    """`hpconj compact` drops curves.csv: integrity, plot and a re-run check still pass, and a
    resumed sweep (the store keeps the curves) exports it again, recorded anew."""
    path = write_config(sweep={"lr": {"_replace": True, "values": [0.01, 0.1]}, "batch_size": [8]})
    out = tmp_path / "compacted"
    assert run_here("sweep", str(path), "--out", str(out), "--quiet").returncode == 0
    done = run_here("compact", str(out))
    assert done.returncode == 0 and "dropped curves.csv" in done.stdout, done.stdout + done.stderr
    assert not (out / "curves.csv").exists()
    assert json.loads((out / "manifest.json").read_text())["dropped"] == ["curves.csv"]
    for command in (("check", str(out), "--integrity"), ("plot", str(out), "--formats", "png"),
                    ("check", str(out), "--trials", "2")):
        done = run_here(*command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert sorted(p.suffix for p in (out / "plots").iterdir()) == [".png"] * len(list((out / "plots").iterdir()))
    assert run_here("sweep", str(path), "--out", str(out), "--quiet").returncode == 0
    assert (out / "curves.csv").is_file() and run_here("check", str(out), "--integrity").returncode == 0
    assert "dropped" not in json.loads((out / "manifest.json").read_text())
    assert run_here("plot", str(out), "--formats", "jpg").returncode == 2


def test_compact_refuses_a_damaged_curves_file_and_a_folder_it_did_not_make(write_config, tmp_path):
    """Dropping an edited curves.csv would hide the damage; a folder without hpconj's manifest is
    not hpconj's to change. Both: one line, exit 2, nothing deleted."""
    path = write_config(sweep={"lr": {"_replace": True, "values": [0.01]}, "batch_size": [8]})
    out = tmp_path / "damaged"
    assert run_here("sweep", str(path), "--out", str(out), "--quiet").returncode == 0
    curves = out / "curves.csv"
    curves.write_text(curves.read_text().replace("0.", "1.", 1))
    done = run_here("compact", str(out))
    assert done.returncode == 2 and "edited since it was recorded" in done.stderr and curves.is_file()
    assert "dropped" not in json.loads((out / "manifest.json").read_text())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "trials.csv").write_text("a user's table\n")
    (foreign / "curves.csv").write_text("a user's curves\n")
    done = run_here("compact", str(foreign))
    assert done.returncode == 2 and (foreign / "curves.csv").read_text() == "a user's curves\n"


def test_the_configs_claims_are_the_committed_ones():
    """A claim edited in experiments/<id>/<name>.yaml after its results were recorded would be
    judged on results that never saw it: the committed config.yaml must carry the same claims."""

    for config, results in zip(CONFIGS, FOLDERS):
        assert load_config(config).expect == load_config(results / "config.yaml").expect, config


def test_the_readme_tables_are_what_the_results_say():
    assert catalogue.main(["--check"]) == 0


def test_random_against_grid_search_is_reproduced_from_the_committed_dense_sweep(tmp_path):
    script = EXPERIMENTS / "e11_random_vs_grid" / "resample.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    now = pd.read_csv(tmp_path / "random_vs_grid.csv")
    committed = pd.read_csv(EXPERIMENTS / "e11_random_vs_grid" / "random_vs_grid.csv")
    pd.testing.assert_frame_equal(now, committed)


@pytest.mark.parametrize("name", CHEAPEST)
def test_the_cheapest_experiments_reproduce_in_part(name, tmp_path):
    """A sampled re-run (the best lr of every slice and its neighbours, every seed): the same
    conclusions, and every claim that held still holds."""
    folder = tmp_path / Path(name).name
    shutil.copytree(EXPERIMENTS / name, folder)
    done = run_here("check", str(folder), "--trials", "5%")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", CHEAPEST)
def test_the_cheapest_experiments_keep_their_conclusions_under_other_arithmetic(name, tmp_path):
    """As if recorded on another CPU, re-run here with narrower vector kernels: other bits, the same
    conclusions, and every claim that held still holds."""
    folder = tmp_path / Path(name).name
    shutil.copytree(EXPERIMENTS / name, folder)
    recorded_elsewhere(folder)
    done = run_cli("check", str(folder), "--trials", "5%", env=narrower_kernels())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same conclusions" in done.stdout
