"""The noisy quadratic model: its definition, its exact theory, and simulation against theory."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpconj.config import Budget, QuadraticTask
from hpconj.engine.reference import train_trial
from hpconj.optim import Hyperparameters, NativeSGD
from hpconj.parameterizations import conjugate
from hpconj.tasks import build_task
from hpconj.tasks.quadratic import curvatures, expected_excess_loss
from hpconj.trials import Trial

SPEC = QuadraticTask(model="quadratic", dim=20, h_min=0.01, h_max=1.0, sigma=1.0, theta0=1.0)
CPU = torch.device("cpu")


def test_definition():
    task = build_task(SPEC)
    h = curvatures(SPEC)
    assert h[0] == pytest.approx(0.01) and h[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log(h)), np.log(100) / 19)
    model = task.init_model(0)
    assert torch.equal(model.theta, torch.ones(20))
    assert task.evaluate(model).train_loss == pytest.approx(0.5 * h.sum(), rel=1e-6)
    # examples: x_i ~ N(0, σ²/h_i), checked on many draws
    x = torch.cat(list(task.batch_stream(3, 1000, 20, CPU)))
    assert np.allclose(x.var(dim=0).numpy() * h, 1.0, rtol=0.08)
    assert math.isnan(task.evaluate(model).val_error)


def test_theory_matches_closed_form_for_plain_sgd():
    """β = 0: E θ_T² = a^{2T} θ₀² + η²h²·σ²/(hB)·Σ_{k<T} a^{2k}, a = 1 − ηh."""
    eta, batch, steps = 0.3, 4, 37
    h = curvatures(SPEC)
    a = 1 - eta * h
    var = SPEC.sigma**2 / (h * batch)
    second = a ** (2 * steps) * SPEC.theta0**2 + (eta * h) ** 2 * var * (1 - a ** (2 * steps)) / (1 - a**2)
    expected = 0.5 * np.sum(h * second)
    assert expected_excess_loss(SPEC, NativeSGD(eta, 0.0, False), batch, steps) == pytest.approx(expected, rel=1e-12)


def test_theory_reports_divergence_as_inf():
    assert expected_excess_loss(SPEC, NativeSGD(4.0, 0.0, False), 1, 2000) == math.inf


@pytest.mark.parametrize(
    "parameterization, optimizer, lr, beta",
    [
        ("standard", "sgd", 0.25, 0.0),
        ("standard", "sgd", 1.0, 0.0),
        ("standard", "momentum", 0.05, 0.9),
        ("standard", "nesterov", 0.05, 0.9),
        ("conjugate", "momentum", 0.02, 0.9),
        ("conjugate", "sgd", 0.1, 0.0),
    ],
)
def test_simulated_sweep_agrees_with_exact_theory(parameterization, optimizer, lr, beta):
    """Seed-mean of simulated trials vs the exact expectation, within 4 standard errors (64 seeds)."""
    task = build_task(SPEC)
    budget = Budget(examples=512)
    batch = 8
    finals = []
    for seed in range(64):
        trial = Trial(SPEC, optimizer, parameterization, lr, batch, beta, seed, budget, 1)
        result = train_trial(task, trial, CPU)
        assert result.status == "ok"
        finals.append(result.train_loss)
    native = conjugate(Hyperparameters(lr, batch, beta, optimizer, 1)) if parameterization == "conjugate" else trial.native
    theory = expected_excess_loss(SPEC, native, batch, task.steps(budget, batch))
    mean, se = float(np.mean(finals)), float(np.std(finals, ddof=1) / math.sqrt(len(finals)))
    assert abs(mean - theory) < 4 * se, (mean, theory, se)
    assert se / theory < 0.1  # the check has power: a 40% error in the theory would fail it


def test_theory_optimum_moves_linearly_with_batch_size_in_the_noise_regime():
    """The shipped nqm_batch setting: standard lr* doubles with B; per-example lr* stays put."""
    spec = QuadraticTask(model="quadratic")
    lrs = 2.0 ** np.arange(-10, 2.01, 0.25)
    best = {}
    for batch in (2, 4, 8, 16):
        losses = [expected_excess_loss(spec, NativeSGD(lr, 0.0, False), batch, 4096 // batch) for lr in lrs]
        best[batch] = math.log2(lrs[int(np.argmin(losses))])
    slope = np.polyfit(np.log2(list(best)), list(best.values()), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.1)
    per_example = [best[b] - math.log2(b) for b in best]
    assert max(per_example) - min(per_example) <= 0.25
