"""Adaptive optimizers, the sqrt and conjugate parameterizations, and McAllester's SGD.

Tolerance policy (stated once):
- Rules torch.optim has (Adam, RMSprop, Adagrad under standard and sqrt): the reference engine
  *is* torch.optim, and the cohort engine must match it bit for bit (weights' sha256, metrics,
  statuses, steps), as for SGD in test_cohort.py (same ≥ 400 multiply-adds condition).
- Per-example rules (conjugate adaptive, mcallester): the reference sums squared per-example
  gradients one example at a time; the cohort engine gets q from one batched product per layer
  (built-in networks) or from vmap (other models), which rounds differently (≈ 1e-7 relative
  per step). Final metrics must agree to 1e-5 relative.
- Each per-example rule is also checked against its formula written out per example in float64
  (analytic per-example gradients of the quadratic): 1e-5 relative after several steps.
"""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from hpconj.config import QuadraticTask, load_config
from hpconj.engine.cohort import _example_second_moments, _Stack, train_cohort
from hpconj.engine.reference import example_second_moments, train_trial
from hpconj.engine.stacked import layer_plan, stacked_loss_and_grads
from hpconj.optim import (AdagradSettings, AdamSettings, Hyperparameters, McAllesterSettings, NativeAdam,
                          RMSpropSettings, reference_optimizer, stacked_update)
from hpconj.parameterizations import native_settings
from hpconj.tasks import build_task
from hpconj.tasks.base import LossOf
from hpconj.tasks.quadratic import curvatures
from hpconj.trials import expand_trials
from conftest import run_cli
from test_cohort import _assert_matches_reference

CPU = torch.device("cpu")
METRIC_RTOL = 1e-5
# Wide enough that every per-trial product has ≥ 400 multiply-adds (bit-equality condition).
MLP = {"_replace": True, "model": "mlp", "width": 32, "depth": 2,
       "data": {"name": "teacher", "examples": 512, "input_dim": 20, "outputs": 10}}
QUAD = {"_replace": True, "model": "quadratic", "dim": 12}


def _config(write_config, optimizer, parameterizations, *, task=MLP, momentum=None, batch_sizes=(16, 64), lrs=None,
            extra=None, steps=20):
    sweep = {"lr": {"values": lrs or [1e-3, 3e-2]}, "batch_size": list(batch_sizes)}
    sweep["momentum"] = momentum if momentum is not None else ([0.9] if optimizer == "adam" else [0.0])
    changes = dict(task=task, optimizer=optimizer, parameterizations=parameterizations, reference_batch_size=32,
                   budget={"_replace": True, "steps": steps}, sweep={"_replace": True, **sweep},
                   metric={"name": "train_loss"})
    return load_config(write_config(**changes, **(extra or {})))


def _cohorts(config):
    by_batch = {}
    for trial in expand_trials(config):
        by_batch.setdefault(trial.batch_size, []).append(trial)
    return list(by_batch.values())


# ----------------------------------------------------------------------------- parameterizations
ADAM = AdamSettings(beta2=0.999, eps=1e-8)


def _hp(optimizer="adam", lr=0.01, batch=64, beta=0.9, b_ref=16, settings=ADAM):
    return Hyperparameters(lr, batch, beta, optimizer, b_ref, settings)


def test_sqrt_rule_scales_lr_betas_and_eps():
    native = native_settings("sqrt", _hp())  # κ = 4
    assert native == NativeAdam(0.02, 1 - 4 * (1 - 0.9), 1 - 4 * (1 - 0.999), 1e-8 / 2, False)
    assert native_settings("sqrt", _hp(batch=16)) == native_settings("standard", _hp(batch=16))
    rms = native_settings("sqrt", _hp("rmsprop", beta=0.0, settings=RMSpropSettings(alpha=0.99, eps=1e-8)))
    assert (rms.lr, rms.alpha, rms.eps) == (0.02, 1 - 4 * (1 - 0.99), 1e-8 / 2)
    ada = native_settings("sqrt", _hp("adagrad", beta=0.0, settings=AdagradSettings(eps=1e-10)))
    assert (ada.lr, ada.eps, ada.per_example) == (0.02, 1e-10 / 2, False)


def test_sqrt_rule_refuses_kappa_times_one_minus_beta_at_least_one():
    with pytest.raises(ValueError, match="κ·\\(1 − β\\) < 1"):
        native_settings("sqrt", _hp(batch=256))  # κ = 16, 16·0.1 ≥ 1
    with pytest.raises(ValueError, match="adam, rmsprop and adagrad"):
        native_settings("sqrt", _hp("momentum", settings=None))


def test_conjugate_is_per_example_with_running_average_momentum():
    adam = native_settings("conjugate", _hp())
    assert (adam.lr, adam.beta1, adam.beta2, adam.per_example) == (0.04, 0.9, 0.999, True)
    rms = native_settings("conjugate", _hp("rmsprop", beta=0.5, settings=RMSpropSettings()))
    assert (rms.lr, rms.momentum, rms.per_example) == (0.01 * 4 * 0.5, 0.5, True)
    ada = native_settings("conjugate", _hp("adagrad", beta=0.0, settings=AdagradSettings()))
    assert (ada.lr, ada.accumulate, ada.per_example) == (0.04, 4.0, True)
    mc = McAllesterSettings()
    assert native_settings("standard", _hp("mcallester", beta=0.0, settings=mc)).lr == 0.01
    assert native_settings("conjugate", _hp("mcallester", beta=0.0, settings=mc)).lr == 0.04


# ----------------------------------------------------------------------------- engines
TORCH_RULES = [
    ("adam", ["standard", "sqrt"], [0.6, 0.9]),
    ("rmsprop", ["standard"], [0.0, 0.5]),
    ("rmsprop", ["sqrt"], [0.0]),
    ("adagrad", ["standard", "sqrt"], [0.0]),
]


@pytest.mark.parametrize("optimizer,parameterizations,momentum", TORCH_RULES)
@pytest.mark.parametrize("task", ["mlp", "quadratic"])
def test_torch_rules_match_torch_optim_bit_for_bit(write_config, optimizer, parameterizations, momentum, task):
    config = _config(write_config, optimizer, parameterizations, momentum=momentum, task=MLP if task == "mlp" else QUAD,
                     lrs=[1e-3, 3e-2, 50.0])
    runtime = build_task(config.task)
    statuses = set()
    for trials in _cohorts(config):
        statuses |= {r.status for r in _assert_matches_reference(runtime, trials).values()}
    assert "ok" in statuses


def _assert_close_to_reference(runtime, trials):
    cohort = {r.trial_id: r for r in train_cohort(runtime, trials, CPU)}
    for trial in trials:
        ref, got = train_trial(runtime, trial, CPU), cohort[trial.trial_id]
        assert (got.status, got.steps, got.error) == (ref.status, ref.steps, ref.error), trial
        if ref.status == "ok":
            for field in ("train_loss", "val_loss"):
                assert getattr(got, field) == pytest.approx(getattr(ref, field), rel=METRIC_RTOL), (trial, field)
    return cohort


PER_EXAMPLE_RULES = [
    ("adam", [0.9], None),
    ("rmsprop", [0.0, 0.5], None),
    ("adagrad", [0.0], None),
    ("mcallester", [0.0], {"mcallester": {"warmup": 5}}),
]


@pytest.mark.parametrize("optimizer,momentum,extra", PER_EXAMPLE_RULES)
@pytest.mark.parametrize("task", ["mlp", "quadratic"])
def test_per_example_rules_match_the_reference_within_tolerance(write_config, optimizer, momentum, extra, task):
    params = ["standard", "conjugate"] if optimizer == "mcallester" else ["conjugate"]
    lrs = [0.5, 8.0] if optimizer == "mcallester" else [1e-3, 3e-2]
    config = _config(write_config, optimizer, params, momentum=momentum, task=MLP if task == "mlp" else QUAD,
                     lrs=lrs, extra=extra)
    runtime = build_task(config.task)
    results = {}
    for trials in _cohorts(config):
        results.update(_assert_close_to_reference(runtime, trials))
    assert "ok" in {r.status for r in results.values()}


def test_a_user_model_trains_per_example_rules(write_config, tmp_path, monkeypatch):
    (tmp_path / "usermodels.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Gated(nn.Module):
            def __init__(self, i, o):
                super().__init__()
                self.a = nn.Linear(i, 24)
                self.b = nn.Linear(i, 24)
                self.out = nn.Linear(24, o)

            def forward(self, x):
                return self.out(torch.tanh(self.a(x)) * torch.sigmoid(self.b(x)))

        def build(input_dim, output_dim):
            return Gated(input_dim, output_dim)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    task = {"_replace": True, "model": "usermodels:build", "data": {"name": "teacher", "examples": 256}}
    config = _config(write_config, "adam", ["standard", "conjugate"], task=task, batch_sizes=(16,), steps=12)
    runtime = build_task(config.task)
    (trials,) = _cohorts(config)
    _assert_close_to_reference(runtime, trials)
    standard = [t for t in trials if t.parameterization == "standard"]
    _assert_matches_reference(runtime, standard)  # torch.optim.Adam through vmap: bit for bit


# ----------------------------------------------------------------------------- per-example second moments
@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_second_moments_batched_product_vmap_and_loop_agree(write_config, kind):
    data = {"name": "teacher", "examples": 256, "input_dim": 20, "outputs": 10, "kind": kind}
    config = _config(write_config, "adam", ["conjugate"], task={**MLP, "data": data})
    runtime = build_task(config.task)
    x, y = runtime.data.x_train[:37], runtime.data.y_train[:37]
    models = [runtime.init_model(seed) for seed in (0, 1)]
    loop = [example_second_moments(runtime, m, (x, y)) for m in models]

    params = {f"model.{k}": torch.stack([dict(m.named_parameters())[k].detach() for m in models])
              for k, _ in models[0].named_parameters()}
    update = stacked_update([native_settings("conjugate", _hp(batch=37, b_ref=37))] * 2, params)
    product = _Stack(params, update)
    stacked_loss_and_grads(layer_plan(models[0]), product.params, x.expand(2, *x.shape), y.expand(2, *y.shape),
                           runtime.data.classes, out=product.grads, second=product.second)

    from torch.func import functional_call, grad, vmap
    from torch.utils._pytree import tree_map
    base = LossOf(runtime, models[0])

    def example_loss(p, b, example):
        return functional_call(base, (p, b), (tree_map(lambda t: t.unsqueeze(0), example),))

    fn = vmap(vmap(grad(example_loss), in_dims=(None, None, 0)), in_dims=(0, 0, 0))
    mapped = _Stack(params, update)
    import hpconj.engine.base as engine_base
    old = engine_base.EXAMPLE_GRADIENT_FLOATS
    engine_base.EXAMPLE_GRADIENT_FLOATS = 5 * 2 * sum(p[0].numel() for p in params.values())  # chunks of 5
    try:
        _example_second_moments(fn, mapped, mapped.params, {}, (x.expand(2, *x.shape), y.expand(2, *y.shape)))
    finally:
        engine_base.EXAMPLE_GRADIENT_FLOATS = old
    for i, name in enumerate(params):
        for k in range(2):
            expected = loop[k][i]
            scale = expected.abs().max()
            assert (product.second[name][k] - expected).abs().max() <= 1e-5 * scale, name
            assert (mapped.second[name][k] - expected).abs().max() <= 1e-5 * scale, name


# ----------------------------------------------------------------------------- formulas, per example, float64
def _quadratic_run(optimizer, parameterization, settings, *, lr, batch=6, steps=8, momentum=0.0, b_ref=2):
    """Train the quadratic with the reference optimizer; also return the batches (float64)."""
    spec = QuadraticTask(model="quadratic", dim=5, h_min=0.1, h_max=1.0, sigma=1.0, theta0=1.0)
    runtime = build_task(spec)
    model = runtime.init_model(0)
    native = native_settings(parameterization, Hyperparameters(lr, batch, momentum, optimizer, b_ref, settings))
    stepper = reference_optimizer(native, model.parameters())
    batches = []
    for batch_x in runtime.batch_stream(0, batch, steps, CPU):
        model.zero_grad()
        runtime.batch_loss(model, batch_x).backward()
        stepper.step(example_second_moments(runtime, model, batch_x) if native.per_example else None)
        batches.append(batch_x.double().numpy())
    return model.theta.detach().double().numpy(), batches, curvatures(spec), native


def _per_example(theta, x, h):
    """Per-example gradients hᵢ(θᵢ − xᵢ) of ½Σ h(θ − x)², rows = examples."""
    return h * (theta - x)


def test_conjugate_adam_follows_its_per_example_formula():
    got, batches, h, native = _quadratic_run("adam", "conjugate", ADAM, lr=0.05, momentum=0.9)
    theta, m, v = np.ones(5), np.zeros(5), np.zeros(5)
    for t, x in enumerate(batches, start=1):
        grads = _per_example(theta, x, h)
        g, q = grads.mean(0), (grads**2).mean(0)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * q
        m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        theta = theta - 0.05 * 3 * m_hat / (np.sqrt(v_hat) + 1e-8)  # κ = 6/2
    np.testing.assert_allclose(got, theta, rtol=METRIC_RTOL)


def test_conjugate_rmsprop_and_adagrad_follow_their_per_example_formulas():
    got, batches, h, _ = _quadratic_run("rmsprop", "conjugate", RMSpropSettings(alpha=0.9, eps=1e-8), lr=0.02,
                                        momentum=0.5)
    theta, v, u = np.ones(5), np.zeros(5), np.zeros(5)
    for x in batches:
        grads = _per_example(theta, x, h)
        g, q = grads.mean(0), (grads**2).mean(0)
        v = 0.9 * v + 0.1 * q
        u = 0.5 * u + g / (np.sqrt(v) + 1e-8)
        theta = theta - 0.02 * 3 * 0.5 * u
    np.testing.assert_allclose(got, theta, rtol=METRIC_RTOL)

    got, batches, h, _ = _quadratic_run("adagrad", "conjugate", AdagradSettings(eps=1e-10), lr=0.1)
    theta, total = np.ones(5), np.zeros(5)
    for x in batches:
        grads = _per_example(theta, x, h)
        total = total + 3 * (grads**2).mean(0)
        theta = theta - 0.1 * 3 * grads.mean(0) / (np.sqrt(total) + 1e-10)
    np.testing.assert_allclose(got, theta, rtol=METRIC_RTOL)


@pytest.mark.parametrize("parameterization,scale", [("standard", 1.0), ("conjugate", 3.0)])
def test_mcallester_follows_the_slides_rule(parameterization, scale):
    settings = McAllesterSettings(lambda_b=16.0, eps=1e-12, warmup=3)
    got, batches, h, _ = _quadratic_run("mcallester", parameterization, settings, lr=0.5, steps=12)
    theta, mean, square, critical = np.ones(5), np.zeros(5), np.zeros(5), np.zeros(5)
    for t, x in enumerate(batches, start=1):
        grads = _per_example(theta, x, h)
        rate = 1 / t if t <= 3 else np.minimum(1.0, 6 / critical)
        mean = (1 - rate) * mean + rate * grads.mean(0)
        square = (1 - rate) * square + rate * (grads**2).mean(0)
        noise = np.maximum(square - mean**2, 0)
        critical = 16 * noise / (mean**2 + 1e-12)
        if t > 3:
            eta = 0.5 * scale * np.minimum(mean**2 / (noise + 1e-12), 16 / 6)
            theta = theta - eta * mean
    assert not np.allclose(theta, 1.0)
    np.testing.assert_allclose(got, theta, rtol=1e-4)  # ĝ²/σ̂² amplifies float32 rounding a little


def test_mcallester_takes_no_step_during_warm_up():
    got, *_ = _quadratic_run("mcallester", "standard", McAllesterSettings(warmup=5), lr=1.0, steps=5)
    assert np.array_equal(got, np.ones(5))


@pytest.mark.parametrize("optimizer,settings", [("adam", ADAM), ("rmsprop", RMSpropSettings()),
                                                ("adagrad", AdagradSettings())])
def test_conjugate_equals_standard_at_batch_size_one(optimizer, settings):
    """With B = B_ref = 1 the per-example second moment is g² itself (to rounding)."""
    beta = 0.9 if optimizer == "adam" else 0.0
    conj, *_ = _quadratic_run(optimizer, "conjugate", settings, lr=0.03, batch=1, b_ref=1, momentum=beta)
    std, *_ = _quadratic_run(optimizer, "standard", settings, lr=0.03, batch=1, b_ref=1, momentum=beta)
    np.testing.assert_allclose(conj, std, rtol=1e-6)


@pytest.mark.parametrize("task", ["mlp", "quadratic"])
def test_mcallester_trains_both_tasks(write_config, task):
    digits = {"_replace": True, "model": "mlp", "width": 32, "depth": 1, "data": "digits"}
    config = _config(write_config, "mcallester", ["standard", "conjugate"], task=digits if task == "mlp" else QUAD,
                     lrs=[2.0, 8.0, 32.0], batch_sizes=(32,), steps=100, extra={"mcallester": {"warmup": 5}})
    runtime = build_task(config.task)
    (trials,) = _cohorts(config)
    initial = runtime.reference_loss(runtime.init_model(0))
    results = list(train_cohort(runtime, trials, CPU))
    best = min(r.train_loss for r in results if r.status == "ok")
    assert best < 0.5 * initial
    assert all(math.isfinite(r.train_loss) for r in results if r.status == "ok")


# ----------------------------------------------------------------------------- refused before training
@pytest.mark.parametrize("layer", ["Dropout(0.1)", "BatchNorm1d(24)"])
def test_per_example_rules_refuse_models_that_couple_examples(write_config, tmp_path, layer):
    (tmp_path / "coupled.py").write_text(textwrap.dedent(f"""
        from torch import nn

        def build(input_dim, output_dim):
            return nn.Sequential(nn.Linear(input_dim, 24), nn.{layer}, nn.ReLU(), nn.Linear(24, output_dim))
    """))
    task = {"_replace": True, "model": "coupled:build", "data": {"name": "teacher", "examples": 128}}
    path = write_config(task=task, optimizer="adam", parameterizations=["standard", "conjugate"],
                        sweep={"_replace": True, "lr": {"values": [0.01]}, "batch_size": [8]})
    proc = run_cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "per-example rules" in line and layer.split("(")[0] in line
    standard = write_config("standard.yaml", task=task, optimizer="adam", parameterizations=["standard"],
                            sweep={"_replace": True, "lr": {"values": [0.01]}, "batch_size": [8]})
    assert run_cli("validate", str(standard), cwd=tmp_path).returncode == 0


def test_mcallester_refuses_a_budget_inside_its_warm_up(write_config, tmp_path):
    path = write_config(optimizer="mcallester", mcallester={"warmup": 10}, budget={"_replace": True, "steps": 10},
                        sweep={"_replace": True, "lr": {"values": [1.0]}, "batch_size": [8]})
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: mcallester.warmup: batch size 8 gets 10 steps"), line
