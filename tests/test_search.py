"""Learning-rate search per slice (hpconj.search): the bracket rule on exact functions, random
search's draws, and real sweeps that search, resume, extend and are checked."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY, merged, run_cli
from hpconj.config import LrBracket, LrRandom, config_from_dict, lr_grid, LrLog2Range
from hpconj.folder import INPUT_FILES, read_trials, record_hashes
from hpconj.search import bracket_path, log2_lr, next_points, planned_trials, random_lrs
from hpconj.trials import slices

BRACKET = {"search": "bracket", "start": "2^-4", "step": 2, "precision": 0.25}
SEARCHED = merged(TINY, {"sweep": {"lr": {**BRACKET, "_replace": True}, "batch_size": [8], "momentum": [0.0]},
                         "budget": {"epochs": 1}})


def search_of(**settings) -> LrBracket:
    return LrBracket.model_validate({**BRACKET, **settings})


def searched_x(f, search: LrBracket) -> dict[float, float]:
    """Run the bracket rule on f (x = log2 lr → metric) to the end: every x searched, with f."""
    points = {}
    new = [math.log2(search.start) + search.step * (j - (search.points - 1) / 2) for j in range(search.points)]
    for _ in range(50):
        points.update({x: f(x) for x in new})
        new = next_points(points, search)
        if not new:
            return points
    raise AssertionError("the search did not end")


# ----------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("optimum", [-4.0, -3.3, -0.6, -9.1, 2.7])
def test_bracket_finds_a_parabola_minimum_to_the_precision(optimum):
    search = search_of(tolerance=0)
    points = searched_x(lambda x: 1 + (x - optimum) ** 2, search)
    best = min(points, key=points.get)
    assert abs(best - optimum) <= search.precision / 2 + 1e-12
    xs = sorted(points)
    i = xs.index(best)
    assert 0 < i < len(xs) - 1  # bracketed
    assert xs[i] - xs[i - 1] <= search.precision and xs[i + 1] - xs[i] <= search.precision
    # 3 first points, one extension per 2 octaves of distance, at most 2 per halving 2 → 0.25
    assert len(points) <= 3 + math.ceil(max(0, abs(optimum + 4) - 2) / 2) + 1 + 6


def test_everything_diverging_moves_the_search_down():
    search = search_of()
    assert next_points({-6.0: math.inf, -4.0: math.inf, -2.0: math.inf}, search) == [-8.0]
    points = searched_x(lambda x: math.inf if x > -9 else 1 + (x + 10) ** 2, search)
    assert min(points, key=points.get) == pytest.approx(-10.0)


def test_a_diverged_neighbour_brackets_the_best():
    search = search_of(tolerance=0)
    # the best at the largest finite lr, a diverged point above it: bracketed, refined towards the better side
    assert next_points({-6.0: 2.0, -4.0: 1.0, -2.0: math.inf}, search) == [-5.0]


def test_a_dip_below_the_stability_edge_is_found_within_the_tolerance():
    """The quickstart's shape: a broad basin at −4 and a narrow, deeper dip 1.25 octaves above it
    next to a cliff. A search around the first minimum alone misses it; tolerance 0.2 does not."""
    def curve(x: float) -> float:
        if x >= -2.25:
            return math.inf
        dip = 0.1 if abs(x + 2.75) < 0.1 else math.inf
        return min(0.11 + 0.005 * (x + 4) ** 2 + (0.01 if x > -3.5 else 0), dip)

    around = searched_x(curve, search_of(tolerance=0))
    assert min(around, key=around.get) == pytest.approx(-4.0)
    edge = searched_x(curve, search_of())
    assert min(edge, key=edge.get) == pytest.approx(-2.75)


def test_every_searched_lr_is_a_lattice_lr_of_the_matching_grid():
    search = search_of()
    points = searched_x(lambda x: 1 + (x + 3.3) ** 2, search)
    lattice = set(lr_grid(LrLog2Range(log2_range=(-20, 10), step=0.25)))
    assert {log2_lr(x) for x in points} <= lattice


def test_limits_stop_a_slice_with_a_reason():
    config = config_from_dict({**SEARCHED, "sweep": {**SEARCHED["sweep"], "lr": {**BRACKET, "max_rounds": 2}}})
    first = slices(config)[0]
    results: dict[str, float] = {}
    for _ in range(3):  # every trial diverges: the search walks down until the limit
        path = bracket_path(first, config.lr_search, config.seeds, results)
        results.update({t.trial_id: math.inf for t in path.pending})
    assert not path.pending and path.rounds == 2
    assert "max_rounds = 2" in path.stopped and "diverged" in path.stopped


def test_round_k_depends_only_on_rounds_before_it():
    """A result recorded for a trial of a later round (a partial round) changes nothing earlier."""
    config = config_from_dict(SEARCHED)
    first = slices(config)[0]
    x0 = {t.trial_id: 1.0 + abs(math.log2(t.lr) + 4) for t in planned_trials(config, {}).trials}
    round1 = bracket_path(first, config.lr_search, config.seeds, x0)
    partial = {**x0, round1.pending[0].trial_id: 0.5}
    again = bracket_path(first, config.lr_search, config.seeds, partial)
    assert [t.trial_id for t in again.trials] == [t.trial_id for t in round1.trials]
    assert [t.trial_id for t in again.pending] == [t.trial_id for t in round1.pending[1:]]


# ----------------------------------------------------------------------------- random search
def test_random_lrs_are_log_uniform_shared_by_seeds_and_extendable():
    config = config_from_dict(merged(SEARCHED, {"sweep": {"lr": {"search": "random", "trials": 200,
                                                                 "log2_range": [-10, 1], "_replace": True}}}))
    first, second = slices(config)
    lrs = random_lrs(first, config.lr_search)
    xs = [math.log2(lr) for lr in lrs]
    assert len(lrs) == 200 and min(xs) >= -10 and max(xs) <= 1
    assert abs(sum(xs) / len(xs) - (-4.5)) < 0.6  # the mean of U(−10, 1) is −4.5 (sd of the mean ≈ 0.22)
    assert random_lrs(first, config.lr_search) == lrs  # deterministic
    assert random_lrs(second, config.lr_search) != lrs  # a draw per slice
    assert random_lrs(first, LrRandom(search="random", trials=20, log2_range=(-10, 1))) == lrs[:20]
    by_slice = {}
    for trial in planned_trials(config, {}).trials:
        by_slice.setdefault((trial.parameterization, trial.seed), []).append(trial.lr)
    assert by_slice[("standard", 0)] == by_slice[("standard", 1)]  # common random numbers


# ----------------------------------------------------------------------------- real sweeps
def sweep(config_path: Path, out: Path, *args: str) -> None:
    done = run_cli("sweep", str(config_path), "--out", str(out), "--workers", "1", "--quiet", *args)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One bracket search of the tiny config, run in one go."""
    folder = tmp_path_factory.mktemp("search")
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(SEARCHED, sort_keys=False))
    sweep(path, folder / "once")
    return path, folder / "once"


def test_a_searched_sweep_brackets_every_optimum_and_passes_check(searched):
    path, out = searched
    trials = read_trials(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["trials"]["planned"] == len(trials)
    for _, group in trials.groupby("parameterization"):
        per_seed = group.groupby("seed")["lr"].apply(lambda s: tuple(sorted(s)))
        assert per_seed.nunique() == 1  # seeds share lrs
        assert 5 <= len(per_seed.iloc[0]) <= 24
    from hpconj.analysis import optima

    found = optima(trials)
    assert not found["at_edge"].any()
    done = run_cli("check", str(out), "--trials", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trials re-run" in done.stdout and "bit-equal" in done.stdout


def test_an_interrupted_search_resumes_to_the_same_trials(searched, tmp_path):
    path, once = searched
    out = tmp_path / "resumed"
    sweep(path, out, "--max-trials", "7")  # stops inside the second round
    assert len(read_trials(out)) == 7
    sweep(path, out, "--max-trials", "5")
    sweep(path, out)
    a = read_trials(once).set_index("trial_id").sort_index()
    b = read_trials(out).set_index("trial_id").sort_index()
    assert list(a.index) == list(b.index)
    pd.testing.assert_series_equal(a["metric"], b["metric"])
    again = run_cli("sweep", str(path), "--out", str(out), "--workers", "1")
    assert again.returncode == 0 and "0 trials run" in again.stdout


def test_check_flags_a_trial_the_search_path_does_not_explain(searched, tmp_path):
    path, once = searched
    out = tmp_path / "forged"
    sweep(path, out)
    trials = pd.read_csv(out / "trials.csv", dtype=str, keep_default_na=False)
    extra = trials.iloc[[0]].copy()
    config = config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    row = extra.iloc[0]
    forged = next(s for s in slices(config) if s.parameterization == row["parameterization"]).trial(
        2.0 ** -7.5, int(row["seed"]))  # a trial of the experiment, but off the search path
    extra["trial_id"], extra["lr"] = forged.trial_id, repr(forged.lr)
    pd.concat([trials, extra]).to_csv(out / "trials.csv", index=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["trials"]["ok"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    record_hashes(out, [name for name in INPUT_FILES if (out / name).is_file()])
    done = run_cli("check", str(out), "--trials", "2")
    assert done.returncode == 1
    assert "not on the path of the bracket search" in done.stdout
    done = run_cli("plot", str(out))
    assert done.returncode == 2 and "1 trials not on the path of the bracket search" in done.stderr


def test_a_finer_precision_extends_a_folder_and_more_seeds_are_refused(searched, tmp_path, write_config):
    path, once = searched
    out = tmp_path / "extended"
    sweep(path, out)
    before = set(read_trials(out)["trial_id"])
    finer = write_config("finer.yaml", base=SEARCHED, sweep={"lr": {**BRACKET, "precision": 0.125, "_replace": True}})
    sweep(finer, out)
    after = set(read_trials(out)["trial_id"])
    assert before < after
    seeds = write_config("seeds.yaml", base=SEARCHED, seeds=3)
    done = run_cli("sweep", str(seeds), "--out", str(out), "--workers", "1", "--quiet")
    assert done.returncode == 2 and "seeds: [0, 1] → [0, 1, 2]" in done.stderr
    assert set(read_trials(out)["trial_id"]) == after  # nothing lost


def test_random_search_sweeps_and_plots(tmp_path, write_config):
    path = write_config("random.yaml", base=SEARCHED,
                        sweep={"lr": {"search": "random", "trials": 8, "log2_range": [-8, 2], "_replace": True}})
    out = tmp_path / "random"
    sweep(path, out)
    trials = read_trials(out)
    assert len(trials) == 2 * 2 * 8
    done = run_cli("plot", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "optima.csv").is_file() and any((out / "plots").glob("loss_vs_lr*.png"))
    done = run_cli("check", str(out), "--integrity")
    assert done.returncode == 0, done.stdout + done.stderr
