"""Users' own models that are not an MLP: a convolutional net and a small transformer
(hpconj.examples) train in both engines. Convolutions and LayerNorm's parameter gradients are not
bit-equal under the cohort engine's vmap (README, "Engines and their guarantees"), so the two
engines must agree as statistics: the same optima within their intervals, the same slopes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch.func import grad, vmap

from conftest import run_cli
from hpconj.analysis import optima, shifts
from hpconj.folder import read_trials

F = torch.nn.functional


def config(model: str, kwargs: dict) -> dict:
    return {"name": "user", "task": {"model": f"hpconj.examples:{model}", "kwargs": kwargs, "data": "digits"},
            "optimizer": "momentum", "parameterizations": ["standard"], "budget": {"steps": 120},
            "sweep": {"lr": {"log2_range": [-6, 0], "step": 1}, "batch_size": [8, 32], "momentum": [0.0]},
            "seeds": 3, "noise_scale": {"enabled": False}, "device": "cpu"}


@pytest.fixture(scope="module", params=[("conv_net", {"channels": 8}), ("attention_net", {"dim": 8, "layers": 1})],
                ids=["conv", "attention"])
def both_engines(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param[0])
    path = folder / "user.yaml"
    path.write_text(yaml.safe_dump(config(*request.param)))
    out = {}
    for engine in ("reference", "cohort"):
        done = run_cli("sweep", str(path), "--out", str(folder / engine), "--engine", engine, "--workers", "1",
                       "--quiet", timeout=600)
        assert done.returncode == 0, done.stderr
        out[engine] = read_trials(folder / engine)
    out["folder"] = folder / "cohort"
    return out


def test_both_engines_find_the_same_optima(both_engines):
    ref, coh = (optima(both_engines[e]).set_index("batch_size") for e in ("reference", "cohort"))
    for b in ref.index:
        r, c = ref.loc[b], coh.loc[b]
        lo, hi = np.log2(r["lr_lo"]), np.log2(r["lr_hi"])
        assert lo - 0.25 <= c["log2_lr_opt"] <= hi + 0.25, (b, r.to_dict(), c.to_dict())
        assert abs(c["metric_opt"] / r["metric_opt"] - 1) < 0.05


def test_both_engines_find_the_same_slope(both_engines):
    ref, coh = (shifts(both_engines[e]) for e in ("reference", "cohort"))
    r, c = ref.iloc[0], coh.iloc[0]
    assert max(r["slope_lo"], c["slope_lo"]) <= min(r["slope_hi"], c["slope_hi"]) + 0.1  # the intervals overlap


def test_every_final_metric_agrees_to_a_few_percent_where_training_is_stable(both_engines):
    """Away from the stability edge a last-bit difference stays small: below each slice's optimum."""
    ref = both_engines["reference"].set_index("trial_id")
    coh = both_engines["cohort"].set_index("trial_id").loc[ref.index]
    best = optima(both_engines["reference"]).set_index("batch_size")["lr_opt"]
    below = (ref["lr"] < ref["batch_size"].map(best) / 2).to_numpy() & (ref["status"] == "ok").to_numpy()
    assert below.sum() >= 6
    assert np.allclose(coh["metric"][below], ref["metric"][below], rtol=0.03)


def _same_under_vmap(f, params, x) -> tuple[bool, bool]:
    """Whether f(params, x) and its gradient are bit-equal computed for one trial's params, and for
    a stack of them under vmap (the cohort engine's way)."""
    stacked = vmap(lambda *p: f(*p, x))(*params)
    grads = vmap(grad(lambda *p: f(*p, x), argnums=tuple(range(len(params)))))(*params)
    forward = backward = True
    for k in range(params[0].shape[0]):
        own = [p[k].clone().requires_grad_(True) for p in params]
        out = f(*own, x)
        forward &= bool(torch.equal(out, stacked[k]))
        backward &= all(torch.equal(a, b[k]) for a, b in zip(torch.autograd.grad(out, own), grads))
    return forward, backward


def test_the_operations_the_readme_names_are_the_ones_that_differ():
    torch.manual_seed(0)
    k, tokens = 4, torch.randn(16, 16, 16)
    cases = {
        "linear": (lambda w, b, x: F.linear(x, w, b).square().sum(), [torch.randn(k, 32, 16), torch.randn(k, 32)],
                   tokens),
        "attention": (lambda w, x: ((x @ w) @ (x @ w).transpose(-1, -2)).softmax(-1).matmul(x @ w).square().sum(),
                      [torch.randn(k, 16, 16)], tokens),
        "conv2d": (lambda w, b, x: F.conv2d(x, w, b, padding=1).square().sum(),
                   [torch.randn(k, 8, 1, 3, 3), torch.randn(k, 8)], torch.randn(16, 1, 8, 8)),
        "layer_norm": (lambda w, b, x: F.layer_norm(x, (16,), w, b).square().sum(),
                       [torch.randn(k, 16), torch.randn(k, 16)], tokens),
    }
    found = {name: _same_under_vmap(*case) for name, case in cases.items()}
    assert found["linear"] == found["attention"] == (True, True)
    assert found["conv2d"] == (False, False)
    assert found["layer_norm"][1] is False  # its gradient; its forward can round alike or not


def test_check_reproduces_a_user_model_sweep_bit_for_bit(both_engines):
    """Re-run trials land in other stacks (a sample of a slice, one trial alone): their bits must not
    depend on the stack — a convolution under vmap is grouped only for two or more trials, so a
    stack of one is computed as two (hpconj.engine.cohort._doubled)."""
    done = run_cli("check", str(both_engines["folder"]), "--trials", "3", "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bit-equal" in done.stdout


@pytest.mark.parametrize("model", ["conv_net", "attention_net"])
def test_a_trial_has_the_same_bits_in_a_stack_of_any_size(model):
    from hpconj.config import config_from_dict
    from hpconj.engine.cohort import train_cohort
    from hpconj.tasks import build_task
    from hpconj.trials import expand_trials

    data = config(model, {"channels": 4} if model == "conv_net" else {"dim": 8, "layers": 1})
    data["budget"], data["sweep"]["batch_size"] = {"steps": 8}, [8]
    cfg = config_from_dict(data)
    trials, task = expand_trials(cfg), build_task(cfg.first_task)
    cpu = torch.device("cpu")
    whole = {r.trial_id: r.params_sha256 for r in train_cohort(task, trials, cpu)}
    for part in (trials[:1], trials[3:5], trials[-1:]):
        assert all(whole[r.trial_id] == r.params_sha256 for r in train_cohort(task, part, cpu))
