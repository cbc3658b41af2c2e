"""Adam: torch.optim.Adam; β1 is the sweep's momentum axis (default 0.9), `adam: {beta2, eps}`.

g is the batch-mean gradient, q[c] = (1/B)·Σᵢ gᵢ[c]² the mean squared per-example gradient,
κ = B / B_ref, step t = 1, 2, …

standard   torch.optim.Adam(lr = η, betas = (β, β2), eps)
sqrt       (Malladi et al. 2022) η' = η·√κ, 1 − β' = κ·(1 − β) for β1 and β2, eps' = eps/√κ
conjugate  (McAllester's per-example-variance patch) the second moment averages q, not g², and
           η is per B_ref examples:
    m ← β1·m + (1 − β1)·g          (torch: m.lerp_(g, 1 − β1))
    v ← β2·v + (1 − β2)·q
    θ ← θ − η·κ/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
Per unit of data this is batch-size free where gradient noise dominates: v ≈ E[gᵢ²] does not
depend on B (E[g²] does: it falls like σ²/B). With B_ref = B = 1, q = g² and conjugate is standard.
mup        (Yang et al. 2022, the mup package's MuAdam) standard's settings, with the lr of every
           matrix-like parameter (both dimensions grow with width: the hidden weights) divided by
           the width multiplier m = width / base_width; the μP model is the task's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from hpconj.optim.base import (Hyperparameters, Native, Optimizer, Problems, SettingError, Settings, StackedUpdate,
                               Stepper, Tensors, column, sqrt_beta, sqrt_problems, torch, torch_or_own)


class AdamSettings(Settings):
    """torch.optim.Adam's β2 and eps; β1 is the sweep's momentum axis (default [0.9])."""

    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


@dataclass(frozen=True)
class NativeAdam:
    """torch.optim.Adam settings; with per_example the second moment averages q instead of g²."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    per_example: bool = False

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": (self.beta1, self.beta2), "eps": self.eps, "foreach": False}

    @property
    def group(self) -> str:
        return f"adam{'-per-example' if self.per_example else ''}"


def parameterize(hp: Hyperparameters, parameterization: str) -> NativeAdam:
    s, kappa = hp.settings, hp.kappa
    if parameterization in ("standard", "mup"):
        return NativeAdam(hp.lr, hp.momentum, s.beta2, s.eps)
    if parameterization == "sqrt":
        root = math.sqrt(kappa)
        return NativeAdam(hp.lr * root, sqrt_beta(kappa, hp.momentum), sqrt_beta(kappa, s.beta2), s.eps / root)
    return NativeAdam(hp.lr * kappa, hp.momentum, s.beta2, s.eps, per_example=True)


class PerExampleAdam:
    """The conjugate rule, one trial, in torch's single-tensor style (η already ×κ in `native.lr`)."""

    def __init__(self, params: Sequence[torch.Tensor], native: NativeAdam):
        self.params, self.native, self.t = list(params), native, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        self.t += 1
        step_size = n.lr / (1 - n.beta1**self.t)
        bias_correction2_sqrt = (1 - n.beta2**self.t) ** 0.5
        with torch.no_grad():
            for p, q, m, v in zip(self.params, second_moments, self.m, self.v):
                m.lerp_(p.grad, 1 - n.beta1)
                v.mul_(n.beta2).add_(q, alpha=1 - n.beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(n.eps)
                p.addcdiv_(m, denom, value=-step_size)


def reference(native: Native, params: list[Any], scales: list[float] | None = None) -> Stepper:
    return torch_or_own(native, params, "Adam", PerExampleAdam, scales)


def mup_scale(kind: str, width_mult: float) -> float:
    """MuAdam: matrix-like parameters ×1/m, the others ×1."""
    return 1.0 / width_mult if kind == "matrix" else 1.0


class AdamUpdate(StackedUpdate):
    """torch.optim.Adam (no weight decay, no amsgrad); per-example: v reads q instead of g²:
        m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·(g² or q)
        θ ← θ − η/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)"""

    state_names = ("exp_avg", "exp_avg_sq")

    def settings(self) -> dict[str, list[float]]:
        return {"1-beta1": [1 - n.beta1 for n in self.natives], "beta2": [n.beta2 for n in self.natives],
                "1-beta2": [1 - n.beta2 for n in self.natives], "eps": [n.eps for n in self.natives]}

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        self.t += 1
        t = self.t
        device = next(iter(params.values())).device
        # float64 in Python as torch computes them, then float32 as torch's kernels read them
        bias2_sqrt = torch.tensor([(1 - n.beta2**t) ** 0.5 for n in self.natives], dtype=torch.float32, device=device)
        neg_steps: dict[float, torch.Tensor] = {}
        for name, param in params.items():
            scale = self.scales.get(name, 1.0)
            if scale not in neg_steps:  # torch: step_size = group lr / (1 − β1ᵗ), the group lr = lr·scale
                neg_steps[scale] = torch.tensor([-(n.lr * scale if scale != 1.0 else n.lr) / (1 - n.beta1**t)
                                                 for n in self.natives], dtype=torch.float32, device=device)
            neg_step = neg_steps[scale]
            grad, m, v = grads[name], self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
            m.lerp_(grad, self.column("1-beta1", name, param))
            v.mul_(self.column("beta2", name, param))
            if self.per_example:
                v.addcmul_(second[name], self.column("1-beta2", name, param))
            else:
                v.addcmul_(grad * self.column("1-beta2", name, param), grad)
            denom = v.sqrt().div_(column(bias2_sqrt, param)).add_(self.column("eps", name, param))
            param.addcdiv_(m * column(neg_step, param), denom)


def read_block(block: dict[str, Any], sweep: Any) -> tuple[float | None, dict[str, Any]]:
    """torch's `betas: [β1, β2]`: β1 becomes the momentum axis' default, β2 the block's beta2."""
    if "betas" not in block:
        return None, block
    betas = block["betas"]
    if (not isinstance(betas, list) or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)):
        raise SettingError("adam.betas", f"must be a list of two numbers [β1, β2], got {betas!r}")
    if "beta2" in block:
        raise SettingError("adam.betas", "give β2 once: either adam.betas or adam.beta2")
    if isinstance(sweep, dict) and "momentum" in sweep:
        raise SettingError("adam.betas", "β1 is the sweep's momentum axis and sweep.momentum is given: "
                           "write adam: {beta2: ...} and keep β1 in sweep.momentum")
    rest = {k: v for k, v in block.items() if k != "betas"}
    return float(betas[0]), {**rest, "beta2": betas[1]}


def check(config: Any) -> Problems:
    """The sqrt rule scales both β1 (every momentum of the sweep) and β2."""
    betas = [("sweep.momentum", b) for b in config.sweep.momentum] + [("adam.beta2", config.adam.beta2)]
    return sqrt_problems(config, betas)


ADAM = Optimizer(
    name="adam", description="torch.optim.Adam; β1 is the momentum axis (default 0.9), adam: {beta2, eps}",
    native=NativeAdam, parameterize=parameterize, parameterizations=("standard", "sqrt", "conjugate", "mup"),
    reference=reference, stacked=AdamUpdate, settings=AdamSettings, default_momentum=0.9, read_block=read_block,
    check=check, mup_scale=mup_scale,
)
