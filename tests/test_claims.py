"""Claims (`expect:`): judged from an estimate's interval against a band, written by `hpconj plot`,
judged again by `hpconj check`."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

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


def _frames(slope: float) -> SimpleNamespace:
    optima = pd.DataFrame({"parameterization": ["standard"], "n_seeds": [3]})
    shifts = pd.DataFrame({"parameterization": ["standard"], "axis": ["batch_size"], "fixed_momentum": [0.0],
                           "slope": [slope], "slope_lo": [slope - 0.1], "slope_hi": [slope + 0.1]})
    return SimpleNamespace(optima=optima, shifts=shifts)


def test_check_reports_a_held_claim_that_no_longer_holds(tmp_path):
    (tmp_path / "config.yaml").write_text(json.dumps(merged(TINY, {"expect": [{**SLOPE, "band": [0.5, 1.5]}]})))
    report = CheckReport()
    compare_claims(tmp_path, _frames(1.0), _frames(1.0), report)
    assert not report.differences
    compare_claims(tmp_path, _frames(1.0), _frames(1.45), report)
    assert [d[:4] for d in report.differences] == [("claim b-shift (re-run)", "verdict", "holds", "inconclusive")]


def test_a_claim_without_its_row_is_missing():
    claim = Claim.model_validate({**SLOPE, "at": {"momentum": 0.5}})
    table = claims_table([claim], _frames(1.0))
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


def _claim(kind: str, **fields) -> Claim:
    return Claim.model_validate({"id": kind, "claim": "c", "source": "s", "kind": kind, "parameterization": "standard",
                                 "band": [0.0, 1.0], **fields})


def test_every_kind_reads_its_number_and_interval():
    """One row per table, with numbers whose log2 are round: each kind's estimate and interval."""
    frames = SimpleNamespace(
        optima=pd.DataFrame({"parameterization": ["standard"], "batch_size": [32], "n_seeds": [4], "at_edge": [False],
                             "log2_lr_opt": [-2.0], "lr_lo": [0.125], "lr_hi": [0.5], "lr_div": [1.0]}),
        shifts=pd.DataFrame({"parameterization": ["standard"] * 2, "axis": ["batch_size", "momentum"],
                             "fixed_momentum": [0.0, None], "fixed_batch_size": [None, 32],
                             "slope": [1.0, 0.0], "slope_lo": [0.9, -0.1], "slope_hi": [1.1, 0.1],
                             "regret_max": [0.05, math.inf]}),
        shifts_time=pd.DataFrame({"parameterization": ["standard"], "axis": ["checkpoint"], "fixed_batch_size": [32],
                                  "slope": [-0.5], "slope_lo": [-0.7], "slope_hi": [-0.3]}),
        critical=pd.DataFrame({"parameterization": ["standard"], "momentum": [0.0], "b_crit": [400.0],
                               "b_crit_lo": [200.0], "b_crit_hi": [800.0]}),
        noise=pd.DataFrame({"row": ["seed", "mean"], "b_simple": [90.0, 100.0]}),
        targets=pd.DataFrame({"parameterization": ["standard"] * 2, "depth": [2, 32], "examples_to_target": [100.0, 800.0],
                              "examples_lo": [50.0, 400.0], "examples_hi": [200.0, 1600.0], "reached": [True, True],
                              "bound": [False, False]}),
    )
    claims = [
        _claim("regret", axis="batch_size", at={"momentum": 0.0}, band=[0.0, 0.1]),
        _claim("regret", id="diverges", axis="momentum", at={"batch_size": 32}, band=[0.0, 0.1]),
        _claim("time_slope", at={"batch_size": 32}, band=[-math.inf, 0.0]),
        _claim("critical_batch", at={"momentum": 0.0}, band=[-3.32, 3.32]),
        _claim("stability_gap", at={"batch_size": 32}, band=[0.0, 0.5]),
        _claim("time_to_target", at={"depth": 32}, versus={"depth": 2}, band=[1.0, math.inf]),
        _claim("time_to_target", id="alone", at={"depth": 2}, band=[0.0, 10.0]),
    ]
    table = claims_table(claims, frames).set_index("id")
    numbers = table[["estimate", "lo", "hi"]].to_dict("index")
    assert numbers["regret"] == {"estimate": 0.05, "lo": 0.05, "hi": 0.05}  # a seed mean: no interval
    assert numbers["time_slope"] == {"estimate": -0.5, "lo": -0.7, "hi": -0.3}
    assert numbers["critical_batch"] == pytest.approx({"estimate": 2.0, "lo": 1.0, "hi": 3.0})  # log2(B_crit/100)
    assert numbers["stability_gap"] == pytest.approx({"estimate": 2.0, "lo": 1.0, "hi": 3.0})  # 0 − (−2), from lr*'s
    assert numbers["time_to_target"] == pytest.approx({"estimate": 3.0, "lo": 1.0, "hi": 5.0})  # conservative
    assert numbers["alone"] == pytest.approx({"estimate": math.log2(100), "lo": math.log2(50), "hi": math.log2(200)})
    verdicts = table["verdict"].to_dict()
    assert verdicts == {"regret": HOLDS, "diverges": FAILS, "time_slope": HOLDS, "critical_batch": HOLDS,
                        "stability_gap": FAILS, "time_to_target": HOLDS, "alone": HOLDS}
    assert "versus depth=2" in table.loc["time_to_target", "where"]
    from hpconj.claims import band_text, estimate_text

    assert estimate_text(table.loc["diverges"]) == "∞ (diverges)" and estimate_text(table.loc["regret"]) == "0.05"
    assert band_text(table.loc["time_slope"]) == "≤ 0" and band_text(table.loc["time_to_target"]) == "≥ 1"


@pytest.mark.parametrize("change, words", [
    ({"kind": "regret", "axis": None}, "expect[0].axis: a regret claim names the axis"),
    ({"kind": "stability_gap"}, "expect[0].axis: a stability_gap claim names its slice by `at`"),
    ({"versus": {"momentum": 0.9}}, "expect[0].versus: only a time_to_target or best_momentum claim compares two slices"),
    ({"kind": "time_to_target", "axis": None, "versus": {"colour": 1.0}}, "expect[0].versus.colour: not an axis"),
    ({"band": [float("nan"), 1.0]}, "expect[0].band: must be ascending"),
])
def test_a_claim_of_a_new_kind_that_cannot_be_judged_is_one_line(change, words):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(merged(TINY, {"expect": [{**SLOPE, **change}]}))
    assert len(caught.value.lines) == 1 and words in caught.value.lines[0], caught.value.lines


def test_an_open_band_survives_config_yaml():
    """A band's open end is .inf in YAML and stays so in the config.yaml a sweep stores."""
    import yaml

    config = config_from_dict(merged(TINY, {"expect": [{**SLOPE, "band": [0.5, math.inf]}]}))
    stored = yaml.safe_dump(config.canonical())
    assert ".inf" in stored and config_from_dict(yaml.safe_load(stored)).expect[0].band == (0.5, math.inf)


def test_an_interval_end_next_to_the_band_is_shown_with_enough_decimals():
    """0.2505 against a band ending at 0.25 fails; "[0.25, …]" would read as touching it."""
    from hpconj.claims import estimate_text, verdict_text

    row = {"kind": "slope", "estimate": 0.2875, "lo": 0.2504735, "hi": 0.4287, "band_lo": -0.25, "band_hi": 0.25}
    assert estimate_text(row) == "0.2875 [0.2505, 0.4287]"
    assert estimate_text({**row, "lo": 0.21}) == "0.29 [0.21, 0.43]"
    assert verdict_text({"verdict": INCONCLUSIVE, "seeds_needed": 20174.0}) == "inconclusive (more than 1,000 seeds)"
    assert verdict_text({"verdict": INCONCLUSIVE, "seeds_needed": 12.0}) == "inconclusive (about 12 seeds)"


def test_the_best_momentum_and_its_move_between_two_slices():
    """best_momentum reads best_momentum.csv; with `versus` the difference to a second slice, with
    the conservative interval."""
    frames = SimpleNamespace(best_momentum=pd.DataFrame(
        {"parameterization": ["standard"] * 2, "batch_size": [4, 1024], "best_momentum": [0.0, 0.9],
         "beta_lo": [0.0, 0.5], "beta_hi": [0.5, 0.9]}))
    alone = _claim("best_momentum", at={"batch_size": 1024}, band=[0.5, 1.0])
    moved = _claim("best_momentum", id="moves", at={"batch_size": 1024}, versus={"batch_size": 4}, band=[0.4, 1.0])
    table = claims_table([alone, moved], frames).set_index("id")
    assert table.loc["best_momentum", ["estimate", "lo", "hi", "verdict"]].tolist() == [0.9, 0.5, 0.9, HOLDS]
    assert table.loc["moves", ["estimate", "lo", "hi"]].tolist() == pytest.approx([0.9, 0.0, 0.9])
    assert table.loc["moves", "verdict"] == INCONCLUSIVE and "versus batch_size=4" in table.loc["moves", "where"]
