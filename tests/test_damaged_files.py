"""A damaged results folder is reported in one line (exit 2) and never analysed into new files, and
its damage is never laundered into fresh hashes (hpconj.folder, hpconj.report, hpconj.repro)."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import copied, plotted_sweep, refusal, run_here
from hpconj.folder import sha256_file


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny finished and plotted sweep, made once; tests copy it before damaging it."""
    return plotted_sweep(tmp_path_factory.mktemp("damaged"))


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return copied(finished, tmp_path)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def every_reader_refuses(folder: Path, *needles: str) -> None:
    """plot, table and check each refuse the folder with one line holding the needles; nothing changes."""
    before = snapshot(folder)
    for args in (("plot",), ("table",), ("check", "--trials", "1")):
        refusal(run_here(args[0], str(folder), *args[1:]), *needles)
    assert snapshot(folder) == before


def set_cell(path: Path, row: int, column: str, value: str) -> None:
    """Put `value` into data row `row` (0-based; file line row + 2) of a CSV, leaving every other byte."""
    lines = path.read_text().splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    cells = next(csv.reader([lines[row + 1]]))
    cells[header.index(column)] = value
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    lines[row + 1] = buffer.getvalue()
    path.write_text("".join(lines))


ANALYSIS = ("optima.csv", "summary.md", "shifts.csv", "manifest.json")


def analysis_bytes(folder: Path) -> dict[str, bytes]:
    names = [*ANALYSIS, *(str(p.relative_to(folder)) for p in sorted((folder / "plots").glob("*.png")))]
    assert len(names) > len(ANALYSIS)
    return {name: (folder / name).read_bytes() for name in names}


# ----------------------------------------------------------------------------- 1: records that disagree with the manifest
def test_truncated_trials_are_refused_and_not_laundered(copy):
    lines = (copy / "trials.csv").read_text().splitlines(keepends=True)
    (copy / "trials.csv").write_text("".join(lines[: 1 + (len(lines) - 1) // 2]))
    before = analysis_bytes(copy)
    line = refusal(run_here("plot", str(copy)), "do not match manifest.json", "nothing written")
    assert "trials.csv" in line
    assert analysis_bytes(copy) == before
    assert run_here("check", str(copy), "--integrity").returncode == 1
    refusal(run_here("table", str(copy)), "do not match manifest.json")

    accepted = run_here("plot", str(copy), "--accept-unverified")
    assert accepted.returncode == 0, accepted.stderr
    summary = (copy / "summary.md").read_text()
    assert "Unverified results" in summary
    assert "trials.csv: edited since it was recorded" in summary
    assert "trials.csv: 24 rows, but manifest.json records 48 trials" in summary
    integrity = run_here("check", str(copy), "--integrity")
    assert integrity.returncode == 1 and "trials.csv" in integrity.stdout  # still damaged: not re-certified


# ----------------------------------------------------------------------------- 2: malformed cells
@pytest.mark.parametrize("column, value", [
    ("lr", "abc"), ("batch_size", "x"), ("status", "weird"), ("seed", "inf"), ("steps", "1e400"), ("batch_size", ""),
    ("momentum", "1.5"), ("batch_size", "0"), ("lr", "-0.1"), ("trial_id", ""),
])
def test_a_malformed_cell_is_named_by_file_column_and_line(copy, column, value):
    set_cell(copy / "trials.csv", 3, column, value)  # the fourth data row: line 5 of the file
    before = snapshot(copy)
    needles = ("trials.csv", f"column {column}", "line 5", repr(value))
    # the column typing is shared by every reader: all commands for one column, the two
    # different readers (report's and check's) for the others
    if column == "lr":
        refusal(run_here("plot", str(copy)), *needles)
        refusal(run_here("table", str(copy)), *needles)
    refusal(run_here("plot", str(copy), "--accept-unverified"), *needles)  # a malformed table is never analysed
    refusal(run_here("check", str(copy), "--trials", "1"), *needles)
    assert snapshot(copy) == before


# ----------------------------------------------------------------------------- 3: a damaged manifest
def test_truncated_manifest_is_named_and_nothing_changes(copy):
    manifest = copy / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    before = snapshot(copy)
    refusal(run_here("plot", str(copy)), "manifest.json")
    refusal(run_here("table", str(copy)), "manifest.json")
    refusal(run_here("check", str(copy), "--integrity"), "manifest.json")
    refusal(run_here("check", str(copy), "--trials", "1"), "manifest.json")
    assert snapshot(copy) == before


# ----------------------------------------------------------------------------- 4: no table at all
@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b""], ids=["binary", "empty"])
def test_unreadable_trials_file_is_one_line(copy, content):
    (copy / "trials.csv").write_bytes(content)
    every_reader_refuses(copy, "trials.csv")


# ----------------------------------------------------------------------------- 5: a forger who recomputed the hash
def test_forged_trials_with_a_row_deleted_are_caught_by_their_count(copy):
    trials = pd.read_csv(copy / "trials.csv")
    ok = trials.index[trials["status"] == "ok"]
    trials.loc[ok[0], ["val_loss", "metric"]] = 0.001
    trials.drop(index=ok[1]).to_csv(copy / "trials.csv", index=False)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["trials.csv"] = sha256_file(copy / "trials.csv")
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    before = analysis_bytes(copy)
    refusal(run_here("plot", str(copy)), "47 rows, but manifest.json records 48", "nothing written")
    assert analysis_bytes(copy) == before


# ----------------------------------------------------------------------------- 6: check's words
def test_integrity_of_a_clean_folder_says_intact(copy):
    proc = run_here("check", str(copy), "--integrity")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "intact" in proc.stdout and "reproduces" not in proc.stdout


def test_differences_table_shows_plain_numbers(copy):
    trials = pd.read_csv(copy / "trials.csv")
    victim = trials.index[trials["status"] == "ok"][2]
    trials.loc[victim, ["val_loss", "metric"]] = 0.001
    trials.to_csv(copy / "trials.csv", index=False)
    optima = pd.read_csv(copy / "optima.csv")
    optima.loc[1, "lr_opt"] *= 1.5
    optima.to_csv(copy / "optima.csv", index=False)
    proc = run_here("check", str(copy), "--trials", "all")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "does not reproduce" in proc.stdout and "val_loss" in proc.stdout and "lr_opt" in proc.stdout
    assert "np.float64(" not in proc.stdout and "np.int64(" not in proc.stdout


# ----------------------------------------------------------------------------- 7: a damaged config
def test_malformed_config_yaml_is_named(copy):
    (copy / "config.yaml").write_text("name: tiny\nsweep: [unclosed\nbudget: {epochs: 2}\n")
    every_reader_refuses(copy, "config.yaml")


def test_a_file_named_plots_is_refused_before_anything_is_written(copy):
    shutil.rmtree(copy / "plots")
    (copy / "plots").write_text("not a folder")
    before = snapshot(copy)
    refusal(run_here("plot", str(copy)), "plots", "not a folder")
    assert snapshot(copy) == before
