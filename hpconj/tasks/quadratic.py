"""The noisy quadratic model (NQM), defined so that results can be checked against theory.

Parameters θ ∈ R^d, all initialised to θ₀. Curvatures h_i = logspace(log10 h_min, log10 h_max, d).
Each example x has independent coordinates x_i ~ N(0, σ²/h_i); the per-example loss is
    ℓ(θ; x) = ½ Σ_i h_i (θ_i − x_i)²,
so the batch-mean gradient is g_i = h_i (θ_i − x̄_i) with x̄_i ~ N(0, σ²/(h_i B)). The recorded
train (and validation) loss is the exact excess loss L(θ) = ½ Σ_i h_i θ_i² (no sampling): the
expected loss on a fresh example minus its irreducible part ½·d·σ².

`expected_excess_loss` gives E[L(θ_T)] for torch.optim.SGD settings by propagating the exact
second moments of (θ_i, v_i), coordinate by coordinate (they are independent).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hpconj.config import Budget, QuadraticTask
from hpconj.optim.sgd import NativeSGD
from hpconj.tasks.base import Metrics, order_generator, seeded_init


def curvatures(spec: QuadraticTask) -> np.ndarray:
    """h_i = logspace(log10 h_min, log10 h_max, d), float64."""
    return np.logspace(math.log10(spec.h_min), math.log10(spec.h_max), spec.dim)


class QuadraticModel(nn.Module):
    """θ as a module, so both engines and user tooling treat it like any network."""

    def __init__(self, dim: int, theta0: float):
        super().__init__()
        self.theta = nn.Parameter(torch.full((dim,), float(theta0)))


@dataclass(frozen=True)
class NoisyQuadraticTask:
    spec: QuadraticTask
    h: torch.Tensor  # float32 curvatures on the task's device
    noise_std: torch.Tensor  # σ/√h_i, float32, on the CPU (examples are drawn there)
    description: str

    @classmethod
    def build(cls, spec: QuadraticTask) -> NoisyQuadraticTask:
        h = curvatures(spec)
        return cls(
            spec=spec,
            h=torch.as_tensor(h, dtype=torch.float32),
            noise_std=torch.as_tensor(spec.sigma / np.sqrt(h), dtype=torch.float32),
            description=f"quadratic d={spec.dim} h∈[{spec.h_min:g}, {spec.h_max:g}] σ={spec.sigma:g}",
        )

    def steps(self, budget: Budget, batch_size: int) -> int:
        return budget.steps_for(batch_size, None)

    def check_batch_size(self, batch_size: int) -> None:
        return None

    def init_model(self, seed: int) -> nn.Module:
        return seeded_init(lambda: QuadraticModel(self.spec.dim, self.spec.theta0), seed)

    def batch_stream(self, seed: int, batch_size: int, steps: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Fresh examples each step, drawn on the CPU from the seed's RNG (so CPU and GPU agree)."""
        gen = order_generator(seed)
        for _ in range(steps):
            z = torch.randn((batch_size, self.spec.dim), generator=gen)
            yield (z * self.noise_std).to(device)

    def batch_loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        diff = model.theta - batch
        return 0.5 * (self.h * diff * diff).sum(dim=1).mean()

    @torch.no_grad()
    def excess_loss(self, model: nn.Module) -> float:
        theta = model.theta.double()
        return float(0.5 * (self.h.double() * theta * theta).sum())

    def reference_loss(self, model: nn.Module) -> float:
        return self.excess_loss(model)

    curve_needs_model = True

    def curve_loss(self, model: nn.Module, mean_batch_loss: float) -> float:
        return self.excess_loss(model)

    def evaluate(self, model: nn.Module) -> Metrics:
        loss = self.excess_loss(model)
        return Metrics(loss, loss, math.nan)

    def to(self, device: torch.device) -> NoisyQuadraticTask:
        return NoisyQuadraticTask(self.spec, self.h.to(device), self.noise_std, self.description)


def expected_excess_loss(spec: QuadraticTask, native: NativeSGD, batch_size: int, steps: int) -> float:
    """E[½ Σ h_i θ_i²] after `steps` steps of torch.optim.SGD(**native) with batches of B examples.

    Per coordinate (dropping i), with ξ = x̄ ~ N(0, σ²/(hB)) and g = h(θ − ξ), z = (θ, v):
      heavy ball:  v' = βv + g,  θ' = θ − ηv'        ⇒ z' = A z + b ξ,
                   A = [[1 − ηh, −ηβ], [h, β]],              b = (ηh, −h)
      Nesterov:    v' = βv + g,  θ' = θ − η(g + βv') ⇒
                   A = [[1 − ηh(1+β), −ηβ²], [h, β]],        b = (ηh(1+β), −h)
    and the second moment M = E[z zᵀ] evolves exactly as M' = A M Aᵀ + b bᵀ·σ²/(hB), from
    M₀ = [[θ₀², 0], [0, 0]] (v₀ = 0 reproduces torch's first step v₁ = g₁).
    """
    h = curvatures(spec)
    eta, beta = native.lr, native.momentum
    var = spec.sigma**2 / (h * batch_size)
    if native.nesterov:
        a11, a12, b1 = 1 - eta * h * (1 + beta), -eta * beta**2 * np.ones_like(h), eta * h * (1 + beta)
    else:
        a11, a12, b1 = 1 - eta * h, -eta * beta * np.ones_like(h), eta * h
    a21, a22, b2 = h, beta * np.ones_like(h), -h
    m11 = np.full_like(h, spec.theta0**2)
    m12 = np.zeros_like(h)
    m22 = np.zeros_like(h)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            n11 = a11 * a11 * m11 + 2 * a11 * a12 * m12 + a12 * a12 * m22 + b1 * b1 * var
            n12 = a11 * a21 * m11 + (a11 * a22 + a12 * a21) * m12 + a12 * a22 * m22 + b1 * b2 * var
            n22 = a21 * a21 * m11 + 2 * a21 * a22 * m12 + a22 * a22 * m22 + b2 * b2 * var
            m11, m12, m22 = n11, n12, n22
            if not np.isfinite(m11).all():
                return math.inf
    return float(0.5 * np.sum(h * m11))
