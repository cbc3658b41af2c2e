"""The cost of a sweep, known before it runs, and the limit on its size; duplicate YAML keys.

Counts are checked against the expansion they replace; the 10^7-trial sweep is checked to be
judged without being expanded (validate succeeds quickly, sweep refuses it with one line).
Nothing here depends on timing except generous upper bounds.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from conftest import FRAGILE_MODEL, TINY, run_cli
from hpconj import cost, sweep
from hpconj.config import ConfigError, load_config
from hpconj.trials import expand_trials

# 1000 lrs × 100 batch sizes × 10 momenta × 10 seeds × 1 parameterization = 10^7 trials.
HUGE = {
    "parameterizations": ["standard"],
    "sweep": {"_replace": True, "lr": {"log2_range": [-12, 0], "num": 1000}, "batch_size": list(range(1, 101)),
              "momentum": [i / 10 for i in range(10)]},
    "seeds": 10,
}


def line_of(text: str, pattern: str, occurrence: int = 0) -> int:
    """1-based line of the `occurrence`-th line matching `pattern`."""
    return [i + 1 for i, line in enumerate(text.splitlines()) if re.match(pattern, line)][occurrence]


# ----------------------------------------------------------------------------- duplicate keys
def test_duplicate_top_level_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    text = yaml.safe_dump(TINY, sort_keys=False) + "seeds: 3\n"
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    first, second = line_of(text, r"^seeds:", 0), line_of(text, r"^seeds:", 1)
    assert line == f"error: tiny.yaml:{second}: duplicate key 'seeds' (first at line {first})"


def test_duplicate_nested_key_names_both_lines(tmp_path: Path) -> None:
    text = yaml.safe_dump(TINY, sort_keys=False).replace(
        "sweep:\n", "sweep:\n  lr:\n    values: [0.5]\n", 1)
    path = tmp_path / "nested.yaml"
    path.write_text(text)
    first, second = line_of(text, r"^  lr:", 0), line_of(text, r"^  lr:", 1)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.lines == [f"nested.yaml:{second}: duplicate key 'lr' (first at line {first})"]
    proc = run_cli("sweep", str(path), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {caught.value.lines[0]}"]
    assert not (tmp_path / "r").exists()


def test_every_duplicate_is_named_in_line_order(tmp_path: Path) -> None:
    text = yaml.safe_dump(TINY, sort_keys=False)
    text = text.replace("  width: 16\n", "  width: 16\n  width: 32\n") + "device: cpu\n"
    path = tmp_path / "two.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [re.sub(r"\d+", "N", line) for line in caught.value.lines] == [
        "two.yaml:N: duplicate key 'width' (first at line N)",
        "two.yaml:N: duplicate key 'device' (first at line N)",
    ]


def test_merge_keys_and_overrides_are_not_duplicates(tmp_path: Path) -> None:
    """`<<: *anchor` then a key of the anchor is YAML's override, not a repeated key."""
    text = yaml.safe_dump({k: v for k, v in TINY.items() if k != "sweep"}, sort_keys=False) + (
        "sweep:\n"
        "  <<: &grid {lr: {values: [0.1]}, batch_size: [8]}\n"
        "  batch_size: [8, 32]\n"
    )
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.sweep.batch_size == [8, 32] and config.lrs == [0.1]


def test_same_key_in_different_mappings_is_fine(write_config) -> None:
    # `name` appears at the top and (as the data set's name) under task.data
    config = load_config(write_config(task={"data": {"name": "teacher", "examples": 64}}))
    assert config.name == "tiny"


# ----------------------------------------------------------------------------- counts
@pytest.mark.parametrize("changes", [
    {},
    {"parameterizations": ["standard"], "seeds": [3, 5, 7], "sweep": {"momentum": [0.0, 0.5, 0.9]}},
    {"optimizer": "adam", "parameterizations": ["standard", "sqrt", "conjugate"],
     "sweep": {"_replace": True, "lr": {"log2_range": [-8, -2], "step": 0.5}, "batch_size": [8, 16]}},
    {"task": {"_replace": True, "model": "quadratic", "dim": 4}, "budget": {"_replace": True, "examples": 512},
     "sweep": {"_replace": True, "lr": {"log_range": [0.001, 1.0], "num": 7}, "batch_size": [1, 4, 64]}},
])
def test_trial_count_and_steps_equal_the_expansion(write_config, changes) -> None:
    config = load_config(write_config(**changes))
    task = sweep.load_task(config)
    plan = sweep.plan_sweep(config, task, yes=True)
    assert cost.trial_count(config) == len(expand_trials(config)) == len(plan.trials)
    assert cost.sweep_steps(config, plan.steps) == plan.total_steps


def test_cost_estimate_is_positive_and_probe_is_short(write_config) -> None:
    config = load_config(write_config())
    task = sweep.load_task(config)
    steps = {b: task.steps(config.budget, b) for b in config.sweep.batch_size}
    start = time.perf_counter()
    estimate = cost.estimate_cost(config, task, steps)
    assert time.perf_counter() - start < 30  # about 0.01 s; generous for a loaded machine
    assert estimate.trials == 48 and estimate.seconds is not None and estimate.seconds > 0
    assert not estimate.exceeds_limit and estimate.problem == ""


def test_a_model_that_raises_makes_the_time_unknown(tmp_path: Path, write_config) -> None:
    (tmp_path / "fragile.py").write_text(FRAGILE_MODEL)
    path = write_config(task={"_replace": True, "model": "fragile:build", "data": "teacher"})
    proc = run_cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "time unknown, the timing probe failed: RuntimeError: cannot take 32 examples" in text


# ----------------------------------------------------------------------------- the limit
def test_validate_prints_the_cost_line(write_config) -> None:
    proc = run_cli("validate", str(write_config()), "--time")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "48 trials in 2 cohorts" in text
    assert re.search(r"cost 48 trials, [\d,]+ optimizer steps, about \d[\d.,]* (s|min|h|days) on this machine "
                     r"\(plain-loop estimate, \d+ workers?\)", text), text
    assert "--yes" not in text


def test_huge_sweep_is_judged_without_expanding(write_config, tmp_path: Path) -> None:
    path = write_config("huge.yaml", **HUGE)
    start = time.perf_counter()
    proc = run_cli("validate", str(path), timeout=120)
    assert time.perf_counter() - start < 30  # expanding would take minutes and gigabytes
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "cost 10,000,000 trials" in text and "10,000,000 trials in 100 cohorts" in text
    assert "above the limit of 1,000,000 trials: hpconj sweep will need --yes" in text

    out = tmp_path / "results"
    start = time.perf_counter()
    proc = run_cli("sweep", str(path), "--out", str(out), timeout=120)
    assert time.perf_counter() - start < 30
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: sweep: 10,000,000 trials (")
    assert line.endswith("exceed the limit of 1,000,000 trials; pass --yes to run it anyway")
    assert not out.exists()


def test_plan_sweep_refuses_before_expanding(write_config, monkeypatch) -> None:
    config = load_config(write_config("huge.yaml", **HUGE))
    task = sweep.load_task(config)

    def no_expansion(*_args):
        raise AssertionError("a sweep above the limit must be refused before it is expanded")

    monkeypatch.setattr(sweep, "planned_trials", no_expansion)
    with pytest.raises(sweep.SweepTooLarge) as caught:
        sweep.plan_sweep(config, task)
    assert isinstance(caught.value, sweep.SweepError)  # so the CLI reports it as bad input, exit 2
    assert caught.value.cost.trials == 10**7 and caught.value.cost.too_many_trials


def test_an_estimate_above_a_week_is_refused_unless_yes(write_config, monkeypatch) -> None:
    config = load_config(write_config())
    task = sweep.load_task(config)
    monkeypatch.setattr(cost, "probe_step_seconds", lambda _task, sizes: {b: 1e4 for b in sizes})
    with pytest.raises(sweep.SweepTooLarge) as caught:
        sweep.plan_sweep(config, task)
    message = str(caught.value)
    assert message.startswith("sweep: 48 trials (") and "days on this machine" in message
    assert message.endswith("exceed the limit of 7 days (plain-loop estimate); pass --yes to run it anyway")

    def no_probe(*_args):
        raise AssertionError("--yes needs no estimate")

    monkeypatch.setattr(cost, "estimate_cost", no_probe)
    assert len(sweep.plan_sweep(config, task, yes=True).trials) == 48


def test_the_time_limit_applies_only_where_the_probe_ran() -> None:
    week = cost.MAX_SECONDS
    on_cpu = cost.SweepCost(10, 100, {8: 10}, 2 * week, 1, on_cpu=True)
    on_cuda = cost.SweepCost(10, 100, {8: 10}, 2 * week, 1, on_cpu=False)
    unknown = cost.SweepCost(cost.MAX_TRIALS, 100, {8: 10}, None, 1, on_cpu=True, problem="ValueError: x")
    assert on_cpu.exceeds_limit and not on_cuda.exceeds_limit and not unknown.exceeds_limit
    assert "the sweep's CUDA device is not timed" in on_cuda.summary()
    assert unknown.summary() == ("1,000,000 trials, 100 optimizer steps, "
                                 "time unknown, the timing probe failed: ValueError: x")


@pytest.mark.parametrize("seconds, text", [
    (0.2, "1 s"), (40, "40 s"), (600, "10 min"), (3.5 * 3600, "3.5 h"), (7 * 86400, "7 days"),
    (1204.5 * 86400, "1,204 days"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert cost.human_duration(seconds) == text
