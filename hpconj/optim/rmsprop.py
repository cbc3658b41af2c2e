"""RMSprop: torch.optim.RMSprop (not centered); the sweep's momentum axis is its momentum β,
`rmsprop: {alpha, eps}`.

g is the batch-mean gradient, q[c] = (1/B)·Σᵢ gᵢ[c]² the mean squared per-example gradient,
κ = B / B_ref.

standard   torch.optim.RMSprop(lr = η, alpha = α, eps, momentum = β)
sqrt       (Malladi et al. 2022, defined without momentum) η' = η·√κ, 1 − α' = κ·(1 − α), eps/√κ
conjugate  (McAllester's per-example-variance patch, momentum as a running average)
    v ← α·v + (1 − α)·q;  d = g / (√v + eps)
    β > 0: u ← β·u + d,  θ ← θ − η·κ·(1 − β)·u;    β = 0: θ ← θ − η·κ·d
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from hpconj.optim.base import (Hyperparameters, Native, Optimizer, Problems, Settings, StackedUpdate, Stepper,
                               Tensors, sqrt_beta, sqrt_problems, torch, torch_or_own)


class RMSpropSettings(Settings):
    """torch.optim.RMSprop's smoothing constant α and eps; its momentum is the sweep's momentum axis."""

    alpha: float = Field(0.99, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


@dataclass(frozen=True)
class NativeRMSprop:
    """torch.optim.RMSprop settings (not centered); with per_example v averages q instead of g²."""

    lr: float
    alpha: float
    eps: float
    momentum: float
    per_example: bool = False

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum, "foreach": False}

    @property
    def group(self) -> str:
        # torch's update differs with and without momentum, so they train as separate stacks
        return f"rmsprop{'-momentum' if self.momentum > 0 else ''}{'-per-example' if self.per_example else ''}"


def parameterize(hp: Hyperparameters, parameterization: str) -> NativeRMSprop:
    s, kappa = hp.settings, hp.kappa
    if parameterization == "standard":
        return NativeRMSprop(hp.lr, s.alpha, s.eps, hp.momentum)
    if parameterization == "sqrt":
        if hp.momentum > 0:
            raise ValueError("the sqrt rule is defined for rmsprop without momentum")
        root = math.sqrt(kappa)
        return NativeRMSprop(hp.lr * root, sqrt_beta(kappa, s.alpha), s.eps / root, 0.0)
    return NativeRMSprop(hp.lr * kappa * (1.0 - hp.momentum), s.alpha, s.eps, hp.momentum, per_example=True)


class PerExampleRMSprop:
    """The conjugate rule, one trial (η already ×κ·(1 − β) in `native.lr`)."""

    def __init__(self, params: Sequence[torch.Tensor], native: NativeRMSprop):
        self.params, self.native = list(params), native
        self.v = [torch.zeros_like(p) for p in self.params]
        self.u = [torch.zeros_like(p) for p in self.params]

    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        with torch.no_grad():
            for p, q, v, u in zip(self.params, second_moments, self.v, self.u):
                v.mul_(n.alpha).add_(q, alpha=1 - n.alpha)
                avg = v.sqrt().add_(n.eps)
                if n.momentum > 0:
                    u.mul_(n.momentum).addcdiv_(p.grad, avg)
                    p.add_(u, alpha=-n.lr)
                else:
                    p.addcdiv_(p.grad, avg, value=-n.lr)


def reference(native: Native, params: list[Any]) -> Stepper:
    return torch_or_own(native, params, "RMSprop", PerExampleRMSprop)


class RMSpropUpdate(StackedUpdate):
    """torch.optim.RMSprop (not centered); per-example: v reads q instead of g²:
        v ← α·v + (1 − α)·(g² or q);  d = g / (√v + eps)
        β > 0: u ← β·u + d, θ ← θ − η·u;   β = 0: θ ← θ − η·d   (one stack never mixes the two)"""

    state_names = ("square_avg", "momentum_buffer")

    def settings(self) -> dict[str, list[float]]:
        return {"alpha": [n.alpha for n in self.natives], "1-alpha": [1 - n.alpha for n in self.natives],
                "eps": [n.eps for n in self.natives], "beta": [n.momentum for n in self.natives],
                "neg_lr": [-n.lr for n in self.natives]}

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        self.t += 1
        heavy_ball = self.natives[0].momentum > 0
        for name, param in params.items():
            grad, v = grads[name], self.state["square_avg"][name]
            v.mul_(self.column("alpha", name, param))
            if self.per_example:
                v.addcmul_(second[name], self.column("1-alpha", name, param))
            else:
                v.addcmul_(grad * self.column("1-alpha", name, param), grad)
            avg = v.sqrt().add_(self.column("eps", name, param))
            if heavy_ball:
                u = self.state["momentum_buffer"][name]
                u.mul_(self.column("beta", name, param)).addcdiv_(grad, avg)
                param.addcmul_(u, self.column("neg_lr", name, param))
            else:
                param.addcdiv_(grad * self.column("neg_lr", name, param), avg)


def check(config: Any) -> Problems:
    """The sqrt rule is defined without momentum, and scales α."""
    if "sqrt" in config.parameterizations and any(b != 0 for b in config.sweep.momentum):
        return [("sweep.momentum", "the sqrt rule is defined for rmsprop without momentum; "
                 f"use sweep.momentum: [0.0], got {list(config.sweep.momentum)}")]
    return sqrt_problems(config, [("rmsprop.alpha", config.rmsprop.alpha)])


RMSPROP = Optimizer(
    name="rmsprop", description="torch.optim.RMSprop (not centered); momentum axis, rmsprop: {alpha, eps}",
    native=NativeRMSprop, parameterize=parameterize, parameterizations=("standard", "sqrt", "conjugate"),
    reference=reference, stacked=RMSpropUpdate, settings=RMSpropSettings, check=check,
)
