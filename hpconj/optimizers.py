"""The optimizers of the reference engine, one trial at a time: readable, the oracle.

`torch.optim` is the oracle wherever it has the rule (SGD, Adam, RMSprop, Adagrad under the
standard and sqrt parameterizations). The rules torch does not have are written here, op for op
in torch's own single-tensor style, reading q[c] = (1/B)·Σᵢ gᵢ[c]², the mean of the squared
per-example gradients of the batch (computed by `example_second_moments`):

PerExampleAdam (conjugate adam; η already ×κ in `NativeAdam.lr`), step t = 1, 2, …
    m ← β1·m + (1 − β1)·g          (torch: m.lerp_(g, 1 − β1))
    v ← β2·v + (1 − β2)·q
    θ ← θ − η/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
PerExampleRMSprop (conjugate rmsprop; η already ×κ·(1 − β))
    v ← α·v + (1 − α)·q;  d = g / (√v + eps)
    β > 0: u ← β·u + d,  θ ← θ − η·u;    β = 0: θ ← θ − η·d
PerExampleAdagrad (conjugate adagrad; η already ×κ, a = κ)
    G ← G + a·q;  θ ← θ − η·g / (√G + eps)

McAllesterSGD, the "original SGD algorithm" of McAllester's TTIC 31230 slides, per coordinate c,
with batch size b, meta-parameters λ_η (the swept lr; ×κ under conjugate), λ_B, ε, warm-up K:
    r_t = 1/t                      for t ≤ K (a plain running mean of the first K batches)
    r_t = min(1, b / B*_{t−1}[c])  for t > K (time constant B*/b steps, at most one step)
    ĝ_t = (1 − r_t)·ĝ_{t−1} + r_t·g_t        ŝ_t = (1 − r_t)·ŝ_{t−1} + r_t·q_t     (ĝ₀ = ŝ₀ = 0)
    σ̂²_t = max(ŝ_t − ĝ_t², 0)                  B*_t = λ_B·σ̂²_t / (ĝ_t² + ε)
    η_t = 0 for t ≤ K,  else  η_t = λ_η · min(ĝ_t² / (σ̂²_t + ε), λ_B / b)
    θ_t = θ_{t−1} − η_t·ĝ_t
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
from typing import Any, Protocol

import torch

from hpconj.parameterizations import (
    Native,
    NativeAdagrad,
    NativeAdam,
    NativeMcAllester,
    NativeRMSprop,
    NativeSGD,
)
from hpconj.tasks.base import example_gradients


class Stepper(Protocol):
    """One optimizer step from the gradients in `.grad` (and q where the rule reads it)."""

    def step(self, second_moments: list[torch.Tensor] | None) -> None: ...


class _TorchStepper:
    """A torch.optim optimizer: the oracle for the rules it has."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        self.optimizer.step()


class PerExampleAdam:
    def __init__(self, params: Sequence[torch.Tensor], native: NativeAdam):
        self.params, self.native, self.t = list(params), native, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        self.t += 1
        step_size = n.lr / (1 - n.beta1**self.t)
        bias_correction2_sqrt = (1 - n.beta2**self.t) ** 0.5
        for p, q, m, v in zip(self.params, second_moments, self.m, self.v):
            m.lerp_(p.grad, 1 - n.beta1)
            v.mul_(n.beta2).add_(q, alpha=1 - n.beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(n.eps)
            p.addcdiv_(m, denom, value=-step_size)


class PerExampleRMSprop:
    def __init__(self, params: Sequence[torch.Tensor], native: NativeRMSprop):
        self.params, self.native = list(params), native
        self.v = [torch.zeros_like(p) for p in self.params]
        self.u = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        for p, q, v, u in zip(self.params, second_moments, self.v, self.u):
            v.mul_(n.alpha).add_(q, alpha=1 - n.alpha)
            avg = v.sqrt().add_(n.eps)
            if n.momentum > 0:
                u.mul_(n.momentum).addcdiv_(p.grad, avg)
                p.add_(u, alpha=-n.lr)
            else:
                p.addcdiv_(p.grad, avg, value=-n.lr)


class PerExampleAdagrad:
    def __init__(self, params: Sequence[torch.Tensor], native: NativeAdagrad):
        self.params, self.native = list(params), native
        self.total = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        for p, q, total in zip(self.params, second_moments, self.total):
            total.add_(q, alpha=n.accumulate)
            std = total.sqrt().add_(n.eps)
            p.addcdiv_(p.grad, std, value=-n.lr)


class McAllesterSGD:
    def __init__(self, params: Sequence[torch.Tensor], native: NativeMcAllester):
        self.params, self.native, self.t = list(params), native, 0
        self.mean = [torch.zeros_like(p) for p in self.params]  # ĝ
        self.square = [torch.zeros_like(p) for p in self.params]  # ŝ
        self.critical = [torch.zeros_like(p) for p in self.params]  # B*

    @torch.no_grad()
    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        n = self.native
        self.t += 1
        warm = self.t <= n.warmup
        for i, (p, q) in enumerate(zip(self.params, second_moments)):
            rate: float | torch.Tensor = 1.0 / self.t if warm else mcallester_rate(n.batch_size, self.critical[i])
            self.mean[i].lerp_(p.grad, rate)
            self.square[i].lerp_(q, rate)
            self.critical[i], ratio = mcallester_estimates(self.mean[i], self.square[i], n.lambda_b, n.eps)
            if not warm:
                eta = ratio.clamp_(max=n.lambda_b / n.batch_size).mul_(n.lr)
                p.addcmul_(eta, self.mean[i], value=-1)


def mcallester_rate(batch_size: int, critical: torch.Tensor) -> torch.Tensor:
    """r = min(1, b / B*): the weight of the new batch in the running estimates."""
    return torch.full_like(critical, float(batch_size)).div_(critical).clamp_(max=1.0)


def mcallester_estimates(mean: torch.Tensor, square: torch.Tensor, lambda_b: float,
                         eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """B* = λ_B·σ̂²/(ĝ² + ε) and the signal-to-noise ratio ĝ²/(σ̂² + ε), with σ̂² = max(ŝ − ĝ², 0)."""
    signal = mean * mean
    noise = (square - signal).clamp_(min=0)
    critical = noise.mul(lambda_b).div_(signal.add(eps))
    ratio = signal.div_(noise.add_(eps))
    return critical, ratio


def reference_optimizer(native: Native, params: Sequence[torch.Tensor]) -> Stepper:
    """The reference engine's optimizer for one trial's native settings."""
    params = list(params)
    if isinstance(native, NativeSGD):
        return _TorchStepper(torch.optim.SGD(params, **native.torch_kwargs()))
    if isinstance(native, NativeMcAllester):
        return McAllesterSGD(params, native)
    if native.per_example:
        rule: Any = {NativeAdam: PerExampleAdam, NativeRMSprop: PerExampleRMSprop, NativeAdagrad: PerExampleAdagrad}
        return rule[type(native)](params, native)
    optimizer = {NativeAdam: torch.optim.Adam, NativeRMSprop: torch.optim.RMSprop, NativeAdagrad: torch.optim.Adagrad}
    return _TorchStepper(optimizer[type(native)](params, **native.torch_kwargs()))


def example_second_moments(task: Any, model: torch.nn.Module, batch: Any) -> list[torch.Tensor]:
    """q = (1/B)·Σᵢ gᵢ², gᵢ the gradient of example i's loss (a batch of one), one example at a
    time with autograd: slow, and independent of the engines' batched formulas it checks."""
    params = list(model.parameters())
    sums = [torch.zeros_like(p) for p in params]
    size = 0
    for grads in example_gradients(task, model, batch, params):
        size += 1
        for total, g in zip(sums, grads):
            if g is not None:
                total.addcmul_(g, g)
    return [total.div_(size) for total in sums]
