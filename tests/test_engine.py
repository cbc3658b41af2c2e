"""The reference engine: common random numbers, divergence, user-code failure, curves."""
from __future__ import annotations

import math

import torch

from conftest import FRAGILE_MODEL
from hpconj.config import load_config
from hpconj.engine.base import CURVE_POINTS
from hpconj.engine.reference import train_trial
from hpconj.tasks import build_task
from hpconj.trials import Trial, expand_trials, group_cohorts

CPU = torch.device("cpu")


def _trial(config, parameterization="standard", lr=0.05, batch_size=8, momentum=0.0, seed=0):
    return Trial(config.task, config.optimizer, parameterization, lr, batch_size, momentum, seed, config.budget, 8)


def test_same_seed_same_initial_weights_and_example_order(write_config):
    config = load_config(write_config())
    task = build_task(config.task)
    a, b, c = task.init_model(0), task.init_model(0), task.init_model(1)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    order0 = torch.cat(list(task.batch_indices(0, 8, 100)))
    assert torch.equal(order0, torch.cat(list(task.batch_indices(0, 8, 100))))
    assert not torch.equal(order0, torch.cat(list(task.batch_indices(1, 8, 100))))
    # batches are consecutive chunks of one permutation per epoch: no example twice in an epoch
    per_epoch = task.data.n_train // 8
    assert len(set(order0[: per_epoch * 8].tolist())) == per_epoch * 8


def test_crn_across_lr_momentum_and_parameterization(write_config):
    """With lr = 0 nothing moves, so equal curves prove equal initial weights *and* equal batches."""
    config = load_config(write_config())
    task = build_task(config.task)
    curves = []
    for param, beta in [("standard", 0.0), ("conjugate", 0.9), ("standard", 0.9)]:
        result = train_trial(task, _trial(config, param, lr=0.0, momentum=beta), CPU)
        curves.append([p.train_loss for p in result.curve])
    assert curves[0] == curves[1] == curves[2]
    other_seed = train_trial(task, _trial(config, lr=0.0, seed=1), CPU)
    assert [p.train_loss for p in other_seed.curve] != curves[0]


def test_a_trial_is_a_pure_function_of_its_fields(write_config):
    config = load_config(write_config())
    task = build_task(config.task)
    first = train_trial(task, _trial(config, "conjugate", 0.02, 32, 0.9, 1), CPU)
    train_trial(task, _trial(config, "standard", 0.5, 8, 0.0, 0), CPU)  # something else in between
    again = train_trial(task, _trial(config, "conjugate", 0.02, 32, 0.9, 1), CPU)
    assert first.params_sha256 == again.params_sha256
    assert (first.train_loss, first.val_loss, first.val_error) == (again.train_loss, again.val_loss, again.val_error)


def test_divergence_is_recorded_not_raised(write_config):
    config = load_config(write_config())
    task = build_task(config.task)
    result = train_trial(task, _trial(config, lr=1e4, momentum=0.9), CPU)
    assert result.status == "diverged"
    assert result.metric("val_loss") == math.inf
    assert result.steps < task.steps(config.budget, 8)  # stopped early
    fine = train_trial(task, _trial(config, lr=0.05), CPU)
    assert fine.status == "ok" and math.isfinite(fine.metric("val_loss"))


def test_curve_has_about_fifty_points_and_starts_at_initial_loss(write_config):
    config = load_config(write_config(budget={"_replace": True, "steps": 400}))
    task = build_task(config.task)
    result = train_trial(task, _trial(config), CPU)
    steps = [p.step for p in result.curve]
    assert steps[0] == 0 and steps[-1] == 400
    assert CURVE_POINTS <= len(steps) <= CURVE_POINTS + 2
    assert result.curve[0].train_loss == task.reference_loss(task.init_model(0))
    assert all(p.examples == 8 * p.step for p in result.curve)


def test_user_model_that_raises_is_a_failed_trial(write_config, tmp_path, monkeypatch):
    (tmp_path / "fragile.py").write_text(FRAGILE_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_config(write_config(task={"model": "fragile:build", "_replace": True,
                                            "data": {"name": "teacher", "examples": 256}}))
    task = build_task(config.task)
    failed = train_trial(task, _trial(config, batch_size=32), CPU)
    assert failed.status == "failed"
    assert "RuntimeError: cannot take 32 examples" in failed.error
    assert math.isnan(failed.metric("val_loss"))
    assert train_trial(task, _trial(config, batch_size=8), CPU).status == "ok"


def test_trials_and_cohorts(write_config):
    config = load_config(write_config())
    trials = expand_trials(config)
    assert len(trials) == 3 * 2 * 2 * 2 * 2  # lr × B × β × parameterization × seed
    assert len({t.trial_id for t in trials}) == len(trials)
    cohorts = group_cohorts(trials)
    assert [c.batch_size for c in cohorts] == [8, 32]
    assert all(t.batch_size == c.batch_size for c in cohorts for t in c.trials)
    # standard trials do not depend on B_ref; conjugate trials do
    other = load_config(write_config("other.yaml", reference_batch_size=4))
    ids, other_ids = {t.trial_id: t for t in trials}, {t.trial_id: t for t in expand_trials(other)}
    shared = set(ids) & set(other_ids)
    assert {ids[i].parameterization for i in shared} == {"standard"}
    assert len(shared) == len(trials) // 2
