"""McAllester's noise-adaptive SGD, the "original SGD algorithm" of McAllester's TTIC 31230
slides; `mcallester: {lambda_b, eps, warmup}`; no momentum.

Per coordinate c, with batch size b, g the batch-mean gradient, q[c] = (1/b)·Σᵢ gᵢ[c]², and
meta-parameters λ_η (the swept lr), λ_B, ε and warm-up K:
    r_t = 1/t                      for t ≤ K (a plain running mean of the first K batches)
    r_t = min(1, b / B*_{t−1}[c])  for t > K (time constant B*/b steps, at most one step)
    ĝ_t = (1 − r_t)·ĝ_{t−1} + r_t·g_t        ŝ_t = (1 − r_t)·ŝ_{t−1} + r_t·q_t     (ĝ₀ = ŝ₀ = 0)
    σ̂²_t = max(ŝ_t − ĝ_t², 0)                  B*_t = λ_B·σ̂²_t / (ĝ_t² + ε)
    η_t = 0 for t ≤ K,  else  η_t = λ_η · min(ĝ_t² / (σ̂²_t + ε), λ_B / b)
    θ_t = θ_{t−1} − η_t·ĝ_t
standard uses λ_η as it is, conjugate as the per-B_ref-examples scale λ_η·κ (his η_b = b·η₁), so
that in the noise-dominated regime the optimum of λ_η should not move.

Choices the slides leave open, stated: (1) the warm-up uses the running mean r = 1/t rather
than a fixed B* = K, so the estimates carry no bias from ĝ₀ = ŝ₀ = 0 when the steps start;
(2) the step moves along the running estimate ĝ (which already includes the current batch, as
torch's momentum buffer does) rather than the raw batch gradient; (3) ε also guards η against a
coordinate without noise (σ̂ = 0); (4) η is capped at λ_η·λ_B/b, its value at b = B*: the
slides' η_b = (b/B*)·η* holds for b ≤ B*, and beyond B* a larger batch does not allow a larger
step (η* = 1/(2L)), so the cap keeps a noise-free coordinate from taking an unbounded step.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from hpconj.optim.base import Hyperparameters, Native, Optimizer, Settings, StackedUpdate, Tensors, torch


class McAllesterSettings(Settings):
    """Meta-parameters of McAllester's noise-adaptive SGD (hpconj.optim.mcallester); lr is λ_η."""

    lambda_b: float = Field(16.0, gt=0)
    eps: float = Field(1e-12, gt=0)
    warmup: int = Field(10, ge=1, strict=True)


@dataclass(frozen=True)
class NativeMcAllester:
    """McAllester's noise-adaptive SGD: lr is λ_η (already ×κ under conjugate), b the batch size."""

    lr: float
    lambda_b: float
    eps: float
    warmup: int
    batch_size: int
    per_example = True
    group = "mcallester"


def parameterize(hp: Hyperparameters, parameterization: str) -> NativeMcAllester:
    s = hp.settings
    lr = hp.lr if parameterization == "standard" else hp.lr * hp.kappa
    return NativeMcAllester(lr, s.lambda_b, s.eps, s.warmup, hp.batch_size)


def rate(batch_size: int, critical: torch.Tensor) -> torch.Tensor:
    """r = min(1, b / B*): the weight of the new batch in the running estimates."""
    return torch.full_like(critical, float(batch_size)).div_(critical).clamp_(max=1.0)


def estimates(mean: torch.Tensor, square: torch.Tensor, lambda_b: float,
              eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """B* = λ_B·σ̂²/(ĝ² + ε) and the signal-to-noise ratio ĝ²/(σ̂² + ε), with σ̂² = max(ŝ − ĝ², 0)."""
    signal = mean * mean
    noise = (square - signal).clamp_(min=0)
    critical = noise.mul(lambda_b).div_(signal.add(eps))
    ratio = signal.div_(noise.add_(eps))
    return critical, ratio


class McAllesterSGD:
    """The rule, one trial."""

    def __init__(self, params: Sequence[torch.Tensor], native: NativeMcAllester):
        self.params, self.native, self.t = list(params), native, 0
        self.mean = [torch.zeros_like(p) for p in self.params]  # ĝ
        self.square = [torch.zeros_like(p) for p in self.params]  # ŝ
        self.critical = [torch.zeros_like(p) for p in self.params]  # B*

    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        self.t += 1
        warm = self.t <= n.warmup
        with torch.no_grad():
            for i, (p, q) in enumerate(zip(self.params, second_moments)):
                weight: float | torch.Tensor = 1.0 / self.t if warm else rate(n.batch_size, self.critical[i])
                self.mean[i].lerp_(p.grad, weight)
                self.square[i].lerp_(q, weight)
                self.critical[i], ratio = estimates(self.mean[i], self.square[i], n.lambda_b, n.eps)
                if not warm:
                    eta = ratio.clamp_(max=n.lambda_b / n.batch_size).mul_(n.lr)
                    p.addcmul_(eta, self.mean[i], value=-1)


def reference(native: Native, params: list[Any]) -> McAllesterSGD:
    return McAllesterSGD(params, native)


class McAllesterUpdate(StackedUpdate):
    """The rule per trial and coordinate; λ_B, ε, warm-up and b are the config's, so the same for
    every trial of a stack."""

    state_names = ("mean", "square", "critical")

    def settings(self) -> dict[str, list[float]]:
        return {"lr": [n.lr for n in self.natives]}

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        n: NativeMcAllester = self.natives[0]
        self.t += 1
        warm = self.t <= n.warmup
        for name, param in params.items():
            mean, square = self.state["mean"][name], self.state["square"][name]
            weight = 1.0 / self.t if warm else rate(n.batch_size, self.state["critical"][name])
            mean.lerp_(grads[name], weight)
            square.lerp_(second[name], weight)
            self.state["critical"][name], ratio = estimates(mean, square, n.lambda_b, n.eps)
            if not warm:
                eta = ratio.clamp_(max=n.lambda_b / n.batch_size).mul_(self.column("lr", name, param))
                param.addcmul_(eta, mean, value=-1)


def check_steps(settings: McAllesterSettings, steps: dict[int, int]) -> str | None:
    """Every batch size needs steps beyond the warm-up, in which the rule does not move."""
    for batch, count in steps.items():
        if count <= settings.warmup:
            return (f"mcallester.warmup: batch size {batch} gets {count} steps, no more than the "
                    f"{settings.warmup} warm-up steps in which McAllester's SGD does not move; "
                    "lower the warm-up or raise the budget")
    return None


MCALLESTER = Optimizer(
    name="mcallester", description="McAllester's noise-adaptive SGD; lr is λ_η, mcallester: {lambda_b, eps, warmup}",
    native=NativeMcAllester, parameterize=parameterize, parameterizations=("standard", "conjugate"),
    reference=reference, stacked=McAllesterUpdate, settings=McAllesterSettings,
    no_momentum="give sweep.momentum: [0.0] or leave it out", check_steps=check_steps,
)
