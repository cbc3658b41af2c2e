"""Claims (`expect:`): judged from an estimate's interval against a band, written by `hpconj plot`,
judged again by `hpconj check`."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from conftest import TINY, merged, run_cli
from hpconj.claims import FAILS, HOLDS, INCONCLUSIVE, MISSING, claims_table, verdict
from hpconj.config import Claim, ConfigError, config_from_dict
from hpconj.folder import INPUT_FILES, read_table, record_hashes
from hpconj.integrity import CheckReport
from hpconj.repro import compare_claims

SLOPE = {"id": "b-shift", "claim": "the standard optimum grows with B", "source": "Goyal et al. 2017",
         "kind": "slope", "parameterization": "standard", "axis": "batch_size", "at": {"momentum": 0.0},
         "band": [0.0, 2.0]}


def test_a_verdict_reads_the_whole_interval():
    assert verdict(1.0, 0.8, 1.2, (0.5, 1.5), 3) == (HOLDS, pytest.approx(math.nan, nan_ok=True))
    assert verdict(2.0, 1.8, 2.2, (0.5, 1.5), 3)[0] == FAILS
    judged, seeds = verdict(1.4, 1.2, 1.6, (0.5, 1.5), 3)  # half-width 0.2, 0.1 from the end
    assert judged == INCONCLUSIVE and seeds == 12  # 3 · (0.2 / 0.1)²
    assert verdict(1.5, 1.4, 1.6, (0.5, 1.5), 3) == (INCONCLUSIVE, math.inf)  # on the end itself
    assert verdict(math.nan, math.nan, math.nan, (0, 1), 1)[0] == MISSING


@pytest.mark.parametrize("change, words", [
    ({"band": [2.0, 1.0]}, "expect[0].band: must be ascending"),
    ({"axis": None}, "expect[0].axis: a slope claim names the axis"),
    ({"parameterization": "sqrt"}, "expect[0].parameterization: must be one of the config's parameterizations"),
    ({"at": {"temperature": 1.0}}, "expect[0].at.temperature: not an axis"),
])
def test_a_malformed_claim_is_one_line(change, words):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(merged(TINY, {"expect": [{**SLOPE, **change}]}))
    assert len(caught.value.lines) == 1 and words in caught.value.lines[0], caught.value.lines


def test_claims_change_no_trial_and_no_experiment():
    plain = config_from_dict(TINY)
    claimed = config_from_dict(merged(TINY, {"expect": [SLOPE]}))
    assert plain.experiment_key() == claimed.experiment_key()
    assert "expect" not in plain.canonical() and plain.config_hash() == config_from_dict(TINY).config_hash()


def _frames(slope: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    optima = pd.DataFrame({"parameterization": ["standard"], "n_seeds": [3]})
    shifts = pd.DataFrame({"parameterization": ["standard"], "axis": ["batch_size"], "fixed_momentum": [0.0],
                           "slope": [slope], "slope_lo": [slope - 0.1], "slope_hi": [slope + 0.1]})
    return optima, shifts


def test_check_reports_a_held_claim_that_no_longer_holds(tmp_path):
    (tmp_path / "config.yaml").write_text(json.dumps(merged(TINY, {"expect": [{**SLOPE, "band": [0.5, 1.5]}]})))
    report = CheckReport()
    compare_claims(tmp_path, _frames(1.0), _frames(1.0), report)
    assert not report.differences
    compare_claims(tmp_path, _frames(1.0), _frames(1.45), report)
    assert [d[:4] for d in report.differences] == [("claim b-shift (re-run)", "verdict", "holds", "inconclusive")]


def test_a_claim_without_its_row_is_missing():
    claim = Claim.model_validate({**SLOPE, "at": {"momentum": 0.5}})
    table = claims_table([claim], *_frames(1.0))
    assert list(table["verdict"]) == [MISSING]


def test_plot_writes_the_verdicts_and_check_catches_an_edited_one(write_config, tmp_path):
    claims = [SLOPE, {**SLOPE, "id": "impossible", "claim": "a slope of 10", "band": [9.0, 11.0]},
              {"id": "opt", "claim": "an optimum somewhere", "source": "a test", "kind": "optimum",
               "parameterization": "conjugate", "at": {"batch_size": 8, "momentum": 0.0}, "band": [-20.0, 20.0]}]
    path = write_config(expect=claims, sweep={"lr": {"_replace": True, "log2_range": [-8, 2], "step": 1}},
                        seeds=3, budget={"epochs": 2})
    out = tmp_path / "claims"
    assert run_cli("sweep", str(path), "--out", str(out), "--quiet").returncode == 0
    done = run_cli("plot", str(out))
    assert done.returncode == 0, done.stderr
    table = read_table(out / "claims.csv")
    verdicts = dict(zip(table["id"], table["verdict"]))
    assert verdicts["impossible"] == FAILS and verdicts["opt"] == HOLDS
    assert "## Claims" in (out / "summary.md").read_text() and "claims (band from the source" in done.stdout
    assert run_cli("check", str(out), "--trials", "3").returncode == 0
    forged = table.copy()
    forged.loc[forged["id"] == "impossible", "verdict"] = HOLDS
    forged.to_csv(out / "claims.csv", index=False)
    manifest = json.loads((out / "manifest.json").read_text())
    record_hashes(out, [n for n in (*INPUT_FILES, "claims.csv", "summary.md", "optima.csv", "shifts.csv")
                        if n in manifest.get("files", {}) and (out / n).is_file()])
    done = run_cli("check", str(out), "--trials", "3")
    assert done.returncode == 1 and "claims.csv claim impossible" in done.stdout
