"""The metric over training time (budget.checkpoints): checkpoints in both engines, the optimum at
every checkpoint, time to target and the critical batch size, checked against the noisy
quadratic's exact expected loss (hpconj.tasks.quadratic.expected_excess_loss)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hpconj.config import load_config
from hpconj.engine.base import checkpoint_steps
from hpconj.engine.cohort import train_cohort
from hpconj.engine.reference import train_trial
from hpconj.folder import read_trials
from hpconj.optim import NativeSGD
from hpconj.tasks import build_task
from hpconj.tasks.quadratic import expected_excess_loss
from hpconj.training_time import (_crossing, checkpoint_trials, critical_batch, fit_critical, fit_noise_batch,
                                  optima_over_time, time_to_target)
from hpconj.trials import expand_trials
from conftest import run_cli, run_here

CPU = torch.device("cpu")


def test_checkpoint_steps_are_octave_spaced_shares_of_the_budget(write_config):
    config = load_config(write_config(budget={"_replace": True, "steps": 100, "checkpoints": 4}))
    assert config.budget.checkpoint_fractions() == [0.125, 0.25, 0.5, 1.0]
    assert checkpoint_steps(config.budget, 100) == {12: 0.125, 25: 0.25, 50: 0.5, 100: 1.0}
    # a share whose step cannot stand within a quarter octave of it is left out; the whole budget never is
    assert checkpoint_steps(config.budget, 3) == {3: 1.0}
    assert checkpoint_steps(config.budget, 22) == {3: 0.125, 6: 0.25, 11: 0.5, 22: 1.0}
    explicit = load_config(write_config(budget={"_replace": True, "steps": 10, "checkpoints": [0.5, 0.1]}))
    assert explicit.budget.checkpoint_fractions() == [0.1, 0.5]
    plain = load_config(write_config())
    assert "checkpoints" not in plain.canonical()["budget"]  # older results keep their ids


@pytest.mark.parametrize("task", [
    {"model": "mlp", "width": 16, "depth": 1, "data": {"name": "teacher", "examples": 200, "input_dim": 8,
                                                       "outputs": 4}},
    {"model": "quadratic", "dim": 20},
])
def test_both_engines_record_the_same_checkpoints(write_config, task):
    quadratic = task["model"] == "quadratic"
    config = load_config(write_config(
        task={**task, "_replace": True}, metric={"name": "train_loss" if quadratic else "val_loss"},
        budget={"_replace": True, "steps": 40, "checkpoints": 4},
        sweep={"lr": {"values": [0.01, 0.3, 1000.0]}, "batch_size": [8]}))
    built = build_task(config.task)
    trials = expand_trials(config)
    cohort = {r.trial_id: r for r in train_cohort(built, trials, CPU)}
    statuses = set()
    for trial in trials:
        ref, got = train_trial(built, trial, CPU), cohort[trial.trial_id]
        assert got.checkpoints == ref.checkpoints and got.params_sha256 == ref.params_sha256
        statuses.add(ref.status)
        if ref.status == "ok":
            assert [c.fraction for c in ref.checkpoints] == [0.125, 0.25, 0.5, 1.0]
            last = ref.checkpoints[-1]
            assert (last.step, last.val_loss, last.train_loss) == (40, ref.val_loss, ref.train_loss)
        else:
            assert all(c.step < ref.steps for c in ref.checkpoints)  # only those passed before diverging
    assert statuses == {"ok", "diverged"}


def test_checkpoints_change_no_training(write_config):
    """Evaluating on the way reads the model and leaves it as it was: the final weights are the same."""
    base = {"sweep": {"lr": {"values": [0.05]}, "batch_size": [8], "momentum": [0.9]}, "seeds": [0]}
    plain = load_config(write_config("plain.yaml", budget={"_replace": True, "steps": 30}, **base))
    marked = load_config(write_config("marked.yaml", budget={"_replace": True, "steps": 30, "checkpoints": 5}, **base))
    built = build_task(plain.task)
    for a, b in zip(expand_trials(plain), expand_trials(marked)):
        assert a.trial_id != b.trial_id
        assert train_trial(built, a, CPU).params_sha256 == train_trial(built, b, CPU).params_sha256


def test_the_crossing_interpolates_in_log_examples_and_log_metric():
    examples, mean = np.array([100.0, 200.0, 400.0]), np.array([4.0, 2.0, 1.0])
    assert _crossing(examples, mean, 2.0)[0] == pytest.approx(200.0)
    e, bound = _crossing(examples, mean, math.sqrt(2.0))  # halfway in log m: halfway in log T
    assert e == pytest.approx(math.sqrt(200 * 400)) and not bound
    assert _crossing(examples, mean, 5.0) == (100.0, True)
    assert _crossing(examples, mean, 0.5)[0] == math.inf


def test_the_critical_fit_recovers_s_min_and_e_min():
    b = np.array([2.0, 4, 8, 16, 32, 64, 128])
    steps = 50.0 + 6400.0 / b  # S_min 50, E_min 6400, B_crit 128
    s_min, e_min = fit_critical(b, steps)
    assert (s_min, e_min) == (pytest.approx(50.0), pytest.approx(6400.0))
    lr = -np.log2(1 + 32.0 / b) + 3.0  # lr* = 8 / (1 + 32/B): B_noise 32
    assert fit_noise_batch(b, lr) == pytest.approx(32.0, rel=0.05)


# ----------------------------------------------------------------------------- the quadratic's exact oracle
QUADRATIC = {"task": {"_replace": True, "model": "quadratic", "dim": 30, "h_min": 0.01, "h_max": 1.0, "sigma": 0.3},
             "optimizer": "sgd", "parameterizations": ["standard"], "metric": {"name": "train_loss"},
             "budget": {"_replace": True, "examples": 2048, "checkpoints": 6},
             "sweep": {"lr": {"_replace": True, "log2_range": [-6, 0.5], "step": 0.5}, "batch_size": [2, 8, 32, 128],
                       "momentum": [0.0]},
             "seeds": 6, "noise_scale": {"enabled": False}}


def _exact(config, spec, target: float) -> tuple[dict[int, float], dict[tuple[int, float], float]]:
    """Exact examples to target per batch size (the same grid, checkpoints and interpolation as the
    analysis, on the expected loss), and the exact grid optimum (log2 lr) per batch size and share."""
    examples_to, best = {}, {}
    for b in config.sweep.batch_size:
        steps = config.budget.examples // b
        marks = checkpoint_steps(config.budget, steps)
        grid = sorted(marks)
        times = np.array([s * b for s in grid], dtype=float)
        curves = {lr: np.array([expected_excess_loss(spec, NativeSGD(lr, 0.0, False), b, s) for s in grid])
                  for lr in config.lrs}
        examples_to[b] = min(_crossing(times, c, target)[0] for c in curves.values())
        for j, s in enumerate(grid):
            values = np.array([curves[lr][j] for lr in config.lrs])
            best[(b, marks[s])] = math.log2(config.lrs[int(np.nanargmin(np.where(np.isfinite(values), values, np.inf)))])
    return examples_to, best


def test_time_to_target_and_critical_batch_follow_the_exact_expected_loss(write_config, tmp_path):
    out = tmp_path / "nqm"
    path = write_config(**QUADRATIC)
    assert run_here("sweep", str(path), "--out", str(out), "--quiet").returncode == 0
    config = load_config(path)
    trials, checkpoints = read_trials(out), pd.read_csv(out / "checkpoints.csv")
    frame = checkpoint_trials(trials, checkpoints, "train_loss")
    target = 0.05
    table, samples = time_to_target(frame, target)
    exact, best = _exact(config, config.task, target)
    for _, row in table.iterrows():
        want = exact[int(row["batch_size"])]
        assert math.isfinite(want) and row["reached"]
        # the seed mean of 6 seeds against the expectation: inside the bootstrap interval, or within 10%
        inside = row["examples_lo"] <= want <= row["examples_hi"]
        assert inside or row["examples_to_target"] == pytest.approx(want, rel=0.10), (row.to_dict(), want)
    b = np.array(sorted(exact), dtype=float)
    s_exact = np.array([exact[int(x)] / x for x in b])
    s_min, e_min = fit_critical(b, s_exact)
    crit = critical_batch(table, samples, pd.DataFrame(columns=["batch_size", "log2_lr_opt", "at_edge"]))
    (row,) = crit.itertuples(index=False)
    assert row.b_crit_lo <= e_min / s_min <= row.b_crit_hi  # the exact B_crit inside the measured interval
    assert row.b_crit_lo <= row.b_crit <= row.b_crit_hi
    assert row.e_min_lo <= e_min <= row.e_min_hi
    # S_min (exact 12.98) sits 2% above its measured interval [11.15, 12.76]: a percentile bootstrap
    # over 6 seeds is narrow; within the interval widened by 5% of its upper edge
    assert row.s_min_lo * 0.95 <= s_min <= row.s_min_hi * 1.05
    # lr*(T): the measured optimum at each checkpoint sits on the exact grid optimum, within half an octave
    optimum, _ = optima_over_time(frame)
    for _, r in optimum.iterrows():
        exact_best = best[(int(r["batch_size"]), float(r["checkpoint"]))]
        if not r["at_edge"]:
            assert abs(r["log2_lr_opt"] - exact_best) <= 0.5 + 1e-9, (r.to_dict(), exact_best)


def test_plot_writes_the_tables_and_figures_over_time(write_config, tmp_path):
    out = tmp_path / "small"
    small = {**QUADRATIC, "seeds": 2, "sweep": {**QUADRATIC["sweep"], "batch_size": [4, 32]}}
    assert run_here("sweep", str(write_config(**small)), "--out", str(out), "--quiet").returncode == 0
    assert run_here("plot", str(out)).returncode == 0
    for name in ("optima_over_time.csv", "shifts_over_time.csv", "time_to_target.csv", "critical_batch.csv",
                 "plots/optimum_over_time.svg", "plots/steps_to_target.png"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "## Over training time" in summary and "B_crit" in summary and "Time to target" in summary
    assert run_here("check", str(out), "--integrity").returncode == 0
    assert run_here("check", str(out), "--trials", "20%").returncode == 0


def test_the_noise_scale_is_measured_again_at_the_end_of_training(write_config, tmp_path):
    """On the best trial of each seed at the smallest B and β, retrained to the recorded weights; on
    the quadratic B_simple = σ²·Σh / Σh²θ² grows as θ shrinks."""
    out = tmp_path / "end"
    small = {**QUADRATIC, "seeds": 2, "noise_scale": {"enabled": True, "examples": 512},
             "sweep": {**QUADRATIC["sweep"], "batch_size": [4, 32]}}
    assert run_here("sweep", str(write_config(**small)), "--out", str(out), "--quiet").returncode == 0
    start, end = pd.read_csv(out / "noise_scale.csv"), pd.read_csv(out / "noise_scale_end.csv")
    trials = read_trials(out)
    for seed in (0, 1):
        mine = trials[(trials["seed"] == seed) & (trials["batch_size"] == 4) & (trials["status"] == "ok")]
        best = mine.loc[mine["metric"].idxmin(), "trial_id"]
        row = end[end["seed"] == seed].iloc[0]
        assert row["trial_id"] == best
        assert row["b_simple"] > 4 * start[start["seed"] == seed]["b_simple"].iloc[0]
    assert run_here("plot", str(out)).returncode == 0
    assert "At the end of training" in (out / "summary.md").read_text()
    assert run_here("check", str(out), "--integrity").returncode == 0


def test_check_rederives_the_tables_over_time(write_config, tmp_path):
    """A forged time-to-target table, its hash recomputed in manifest.json, still fails the check."""
    from hpconj.folder import record_hashes

    out = tmp_path / "forged"
    small = {**QUADRATIC, "seeds": 2, "sweep": {**QUADRATIC["sweep"], "batch_size": [4, 32]}}
    assert run_here("sweep", str(write_config(**small)), "--out", str(out), "--quiet").returncode == 0
    assert run_here("plot", str(out)).returncode == 0
    honest = run_here("check", str(out), "--trials", "1")
    assert honest.returncode == 0, honest.stdout
    table = pd.read_csv(out / "time_to_target.csv")
    table.loc[0, "examples_to_target"] *= 0.5  # "reaches the target twice as fast"
    table.to_csv(out / "time_to_target.csv", index=False)
    record_hashes(out, ["time_to_target.csv"])
    assert run_here("check", str(out), "--integrity").returncode == 0  # the hashes agree...
    forged = run_here("check", str(out), "--trials", "1")
    assert forged.returncode == 1 and "time_to_target.csv" in forged.stdout  # ...the numbers do not


def test_check_catches_forged_shifts_over_time_and_checkpoint_shares(write_config, tmp_path):
    from hpconj.folder import record_hashes

    out = tmp_path / "forged2"
    small = {**QUADRATIC, "seeds": 2, "sweep": {**QUADRATIC["sweep"], "batch_size": [4, 32]}}
    assert run_here("sweep", str(write_config(**small)), "--out", str(out), "--quiet").returncode == 0
    assert run_here("plot", str(out)).returncode == 0
    shifts = pd.read_csv(out / "shifts_over_time.csv")
    shifts.loc[shifts["axis"] == "checkpoint", "slope"] += 5.0
    shifts.to_csv(out / "shifts_over_time.csv", index=False)
    record_hashes(out, ["shifts_over_time.csv"])
    forged = run_here("check", str(out), "--trials", "1")
    assert forged.returncode == 1 and "shifts_over_time.csv" in forged.stdout
    assert run_here("plot", str(out)).returncode == 0  # the analysis written again from the records
    marks = pd.read_csv(out / "checkpoints.csv")
    first = marks["trial_id"].iloc[0]
    marks.loc[marks["trial_id"] == first, "fraction"] = marks.loc[marks["trial_id"] == first, "fraction"][::-1].to_numpy()
    marks.to_csv(out / "checkpoints.csv", index=False)
    record_hashes(out, ["checkpoints.csv"])
    swapped = run_here("check", str(out), "--trials", "all")
    assert swapped.returncode == 1 and "checkpoints.csv" in swapped.stdout
    doubled = pd.concat([marks, marks.iloc[:1]])
    doubled.to_csv(out / "checkpoints.csv", index=False)
    record_hashes(out, ["checkpoints.csv"])
    twice = run_here("check", str(out), "--trials", "all")
    assert twice.returncode == 2 and "appears more than once" in twice.stderr and "Traceback" not in twice.stderr


@pytest.mark.parametrize("changes, words", [
    ({"optimizer": ["momentum"]}, "optimizer"),
    ({"task": {"mup_base_width": 16}}, "task.mup_base_width"),
    ({"budget": {"_replace": True, "steps": 10, "checkpoints": []}}, "budget.checkpoints"),
])
def test_new_keys_are_refused_in_one_line(write_config, changes, words):
    from hpconj.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(write_config(**changes))
    assert len(str(info.value).splitlines()) == 1 and words in str(info.value)


def test_the_end_retrain_uses_the_workers_thread_count(write_config, tmp_path):
    """The main process may run with more torch threads than the workers did; the retrain of the
    digits MLP must still reach the recorded weights (it did not, before it set the workers' count)."""
    digits = {"task": {"model": "mlp", "width": 64, "depth": 2, "data": "digits", "_replace": True},
              "parameterizations": ["standard"], "budget": {"epochs": 1},
              "sweep": {"lr": {"values": [2 ** -3.5, 2 ** -2.5], "_replace": True}, "batch_size": [8],
                        "momentum": [0.0]}, "seeds": 1}
    out = tmp_path / "threads"
    done = run_cli("sweep", str(write_config(**digits)), "--out", str(out), "--workers", "1", "--threads", "1",
                   "--quiet", env={"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0 and "re-trained to other weights" not in done.stderr, done.stderr
    assert len(pd.read_csv(out / "noise_scale_end.csv")) == 1
