"""The parameterizations against their written maths and against torch.optim.SGD."""
from __future__ import annotations

import itertools

import pytest
import torch

from hpconj.config import load_config
from hpconj.engine.reference import train_trial
from hpconj.optim import Hyperparameters
from hpconj.parameterizations import PARAMETERIZATIONS, conjugate, native_settings, standard
from hpconj.tasks import build_task
from hpconj.trials import Trial

OPTIMIZERS = ["sgd", "momentum", "nesterov"]
SGD_PARAMETERIZATIONS = [p for p in PARAMETERIZATIONS if p != "sqrt"]  # sqrt: adaptive only (test_optimizers.py)


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(64, 5, generator=gen), torch.randn(64, generator=gen), torch.randn(5, generator=gen)


def _grad(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batch-mean gradient of ½(x·θ − y)²."""
    return x.T @ (x @ theta - y) / len(y)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, steps: int):
    for t in range(steps):
        start = (t * batch_size) % (len(y) - batch_size + 1)
        yield x[start : start + batch_size], y[start : start + batch_size]


def written_rule(name: str, hp: Hyperparameters, theta0: torch.Tensor, x, y, steps: int) -> torch.Tensor:
    """The update rules exactly as the module docstring writes them (float64, by hand)."""
    theta, buf = theta0.clone(), torch.zeros_like(theta0)
    eta, beta, kappa = hp.lr, hp.momentum, hp.batch_size / hp.reference_batch_size
    for xb, yb in _batches(x, y, hp.batch_size, steps):
        g = _grad(theta, xb, yb)
        if name in ("standard", "mup"):  # μP's multipliers are per layer: a model without layers is standard
            buf = beta * buf + g  # v ← βv + g (v₀ = 0 gives v₁ = g₁)
            step = g + beta * buf if hp.optimizer == "nesterov" else buf
            theta = theta - eta * step
        else:
            buf = beta * buf + (1 - beta) * kappa * g  # ĝ ← βĝ + (1 − β)κg
            step = (1 - beta) * kappa * g + beta * buf if hp.optimizer == "nesterov" else buf
            theta = theta - eta * step
    return theta


def torch_sgd(native, hp: Hyperparameters, theta0: torch.Tensor, x, y, steps: int) -> torch.Tensor:
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], **native.torch_kwargs())
    for xb, yb in _batches(x, y, hp.batch_size, steps):
        opt.zero_grad()
        (0.5 * ((xb @ theta - yb) ** 2).mean()).backward()
        opt.step()
    return theta.detach()


@pytest.mark.parametrize("name, optimizer", list(itertools.product(SGD_PARAMETERIZATIONS, OPTIMIZERS)))
@pytest.mark.parametrize("batch_size, beta", [(1, 0.0), (4, 0.5), (16, 0.9), (32, 0.99)])
def test_every_parameterization_matches_its_written_rule(name, optimizer, batch_size, beta):
    if optimizer == "sgd":
        beta = 0.0
    x, y, theta0 = (t.double() for t in _problem())
    hp = Hyperparameters(lr=0.01, batch_size=batch_size, momentum=beta, optimizer=optimizer, reference_batch_size=2)
    native = native_settings(name, hp)
    ours = torch_sgd(native, hp, theta0, x, y, steps=200)
    expected = written_rule(name, hp, theta0, x, y, steps=200)
    assert torch.allclose(ours, expected, rtol=1e-10, atol=1e-12), (ours - expected).abs().max()
    assert not torch.equal(ours, theta0)


@pytest.mark.parametrize("batch_size, b_ref, beta", [(8, 1, 0.9), (32, 4, 0.5), (3, 3, 0.99), (64, 8, 0.0)])
def test_conjugate_is_torch_sgd_with_scaled_lr(batch_size, b_ref, beta):
    """conjugate ≡ torch.optim.SGD(lr = η·(B/B_ref)·(1 − β), momentum = β), first step included."""
    x, y, theta0 = _problem(1)
    hp = Hyperparameters(lr=0.003, batch_size=batch_size, momentum=beta, optimizer="momentum", reference_batch_size=b_ref)
    native = conjugate(hp)
    assert native.lr == pytest.approx(0.003 * batch_size / b_ref * (1 - beta), rel=1e-15)
    assert native.momentum == beta
    direct = torch.optim.SGD  # the claim, stated with torch's own optimizer
    theta = theta0.clone().requires_grad_(True)
    opt = direct([theta], lr=0.003 * (batch_size / b_ref) * (1 - beta), momentum=beta)
    for xb, yb in _batches(x, y, batch_size, 300):
        opt.zero_grad()
        (0.5 * ((xb @ theta - yb) ** 2).mean()).backward()
        opt.step()
    assert torch.equal(torch_sgd(native, hp, theta0, x, y, 300), theta.detach())


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_conjugate_equals_standard_at_reference_batch_and_zero_momentum(optimizer):
    hp = Hyperparameters(lr=0.05, batch_size=8, momentum=0.0, optimizer=optimizer, reference_batch_size=8)
    assert conjugate(hp) == standard(hp)


def test_identical_trials_at_the_base_point(write_config):
    """Whole trainings: standard and conjugate give bit-identical weights at B = B_ref, β = 0."""
    config = load_config(write_config(sweep={"batch_size": [8], "momentum": [0.0]}))
    task = build_task(config.task)
    runs = {}
    for name in ("standard", "conjugate"):
        trial = Trial(config.task, "momentum", name, 0.05, 8, 0.0, 0, config.budget, 8)
        runs[name] = train_trial(task, trial, torch.device("cpu"))
    assert runs["standard"].params_sha256 == runs["conjugate"].params_sha256
    assert runs["standard"].val_loss == runs["conjugate"].val_loss
    assert [p.train_loss for p in runs["standard"].curve] == [p.train_loss for p in runs["conjugate"].curve]


def test_conjugate_differs_away_from_the_base_point(write_config):
    config = load_config(write_config())
    task = build_task(config.task)
    results = [
        train_trial(task, Trial(config.task, "momentum", name, 0.01, 32, 0.9, 0, config.budget, 8), torch.device("cpu"))
        for name in ("standard", "conjugate")
    ]
    assert results[0].params_sha256 != results[1].params_sha256


def test_nesterov_with_zero_momentum_is_plain_sgd():
    hp = Hyperparameters(lr=0.1, batch_size=4, momentum=0.0, optimizer="nesterov")
    assert standard(hp).nesterov is False and conjugate(hp).nesterov is False
    assert standard(Hyperparameters(0.1, 4, 0.9, "nesterov")).nesterov is True


def test_unknown_parameterization_is_named():
    with pytest.raises(ValueError, match="unknown parameterization 'ntk'"):
        native_settings("ntk", Hyperparameters(0.1, 4, 0.0, "sgd"))
