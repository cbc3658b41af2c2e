"""Adagrad: torch.optim.Adagrad (no lr decay, initial accumulator 0), `adagrad: {eps}`; no momentum.

g is the batch-mean gradient, q[c] = (1/B)·Σᵢ gᵢ[c]² the mean squared per-example gradient,
κ = B / B_ref.

standard   torch.optim.Adagrad(lr = η, eps):   G ← G + g²;  θ ← θ − η·g / (√G + eps)
sqrt       (Malladi et al. 2022) η' = η·√κ, eps' = eps/√κ
conjugate  (McAllester's per-example-variance patch):   G ← G + κ·q;  θ ← θ − η·κ·g / (√G + eps)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from hpconj.optim.base import (Hyperparameters, Native, Optimizer, Settings, StackedUpdate, Stepper, Tensors, torch,
                               torch_or_own)


class AdagradSettings(Settings):
    """torch.optim.Adagrad's eps (no lr decay, initial accumulator 0)."""

    eps: float = Field(1e-10, gt=0)


@dataclass(frozen=True)
class NativeAdagrad:
    """torch.optim.Adagrad settings; with per_example G accumulates accumulate·q instead of g²."""

    lr: float
    eps: float
    per_example: bool = False
    accumulate: float = 1.0

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr, "eps": self.eps, "foreach": False}

    @property
    def group(self) -> str:
        return f"adagrad{'-per-example' if self.per_example else ''}"


def parameterize(hp: Hyperparameters, parameterization: str) -> NativeAdagrad:
    eps, kappa = hp.settings.eps, hp.kappa
    if parameterization == "standard":
        return NativeAdagrad(hp.lr, eps)
    if parameterization == "sqrt":
        root = math.sqrt(kappa)
        return NativeAdagrad(hp.lr * root, eps / root)
    return NativeAdagrad(hp.lr * kappa, eps, per_example=True, accumulate=kappa)


class PerExampleAdagrad:
    """The conjugate rule, one trial (η already ×κ, accumulate = κ)."""

    def __init__(self, params: Sequence[torch.Tensor], native: NativeAdagrad):
        self.params, self.native = list(params), native
        self.total = [torch.zeros_like(p) for p in self.params]

    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        with torch.no_grad():
            for p, q, total in zip(self.params, second_moments, self.total):
                total.add_(q, alpha=n.accumulate)
                std = total.sqrt().add_(n.eps)
                p.addcdiv_(p.grad, std, value=-n.lr)


def reference(native: Native, params: list[Any]) -> Stepper:
    return torch_or_own(native, params, "Adagrad", PerExampleAdagrad)


class AdagradUpdate(StackedUpdate):
    """torch.optim.Adagrad (no lr decay); per-example: G accumulates a·q instead of g²:
        G ← G + (g² or a·q);  θ ← θ − η·g / (√G + eps)"""

    state_names = ("sum",)

    def settings(self) -> dict[str, list[float]]:
        return {"eps": [n.eps for n in self.natives], "neg_lr": [-n.lr for n in self.natives],
                "accumulate": [n.accumulate for n in self.natives]}

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        self.t += 1
        for name, param in params.items():
            grad, total = grads[name], self.state["sum"][name]
            if self.per_example:
                total.addcmul_(second[name], self.column("accumulate", name, param))
            else:
                total.addcmul_(grad, grad)
            std = total.sqrt().add_(self.column("eps", name, param))
            param.addcdiv_(grad * self.column("neg_lr", name, param), std)


ADAGRAD = Optimizer(
    name="adagrad", description="torch.optim.Adagrad (momentum must be 0), adagrad: {eps}",
    native=NativeAdagrad, parameterize=parameterize, parameterizations=("standard", "sqrt", "conjugate"),
    reference=reference, stacked=AdagradUpdate, settings=AdagradSettings,
    no_momentum="give sweep.momentum: [0.0] or leave it out",
)
