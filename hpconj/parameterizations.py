"""Parameterizations: pure maps from the user's hyperparameters to the optimizer's native settings.

No torch here. A parameterization takes the user's coordinates (η, B, β), the reference batch
size B_ref and the optimizer's fixed settings, and returns the native settings that realise
them: a `NativeSGD`, `NativeAdam`, `NativeRMSprop`, `NativeAdagrad` or `NativeMcAllester`.
Both engines read the same record, so the maths lives in exactly one place.

Notation: g is the batch-*mean* gradient (the loss is the mean over the batch), q[c] = (1/B)·Σᵢ
gᵢ[c]² the mean of the squared *per-example* gradients, θ the parameters, κ = B / B_ref.

SGD family (optimizer sgd | momentum | nesterov)
  standard (PyTorch semantics)
    sgd:       θ ← θ − η·g
    momentum:  v ← β·v + g   (v₁ = g₁);            θ ← θ − η·v
    nesterov:  v ← β·v + g;  d = g + β·v;         θ ← θ − η·d
  conjugate (McAllester, TTIC 31230, 2018): η is a learning rate *per B_ref examples*; the step
  uses the sum of per-example gradients scaled to B_ref, κ·g; momentum is a running average
    ĝ ← β·ĝ + (1 − β)·κ·g   (ĝ₀ = 0);            θ ← θ − η·ĝ
  which is exactly torch.optim.SGD(lr = η·κ·(1 − β), momentum = β, dampening = 0), first step
  included: with v = ĝ / ((1 − β)·κ) the recursions coincide and ĝ₀ = 0 ⇔ v₁ = g₁. Nesterov
  uses the same lr map with nesterov=True. At B = B_ref and β = 0 conjugate equals standard.

Adaptive optimizers (β is Adam's β1 and RMSprop's momentum; β2 / α and eps from the config)
  standard: torch.optim.Adam(lr=η, betas=(β, β2), eps), RMSprop(lr=η, alpha=α, eps, momentum=β),
    Adagrad(lr=η, eps).
  sqrt (Malladi et al. 2022, the square-root scaling rule of the SDE approximation):
    η' = η·√κ,  1 − β' = κ·(1 − β) for β1, β2 and α,  eps' = eps/√κ.   Needs κ·(1 − β) < 1.
  conjugate (McAllester's per-example-variance patch): the second-moment estimate averages q,
    the per-example squared gradient, instead of g², and η is per B_ref examples:
      adam:     m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·q;  θ ← θ − η·κ·m̂ / (√v̂ + eps)
                (m̂, v̂ with Adam's bias corrections 1 − β1ᵗ, 1 − β2ᵗ)
      rmsprop:  v ← α·v + (1 − α)·q;  u ← β·u + g/(√v + eps);  θ ← θ − η·κ·(1 − β)·u
      adagrad:  G ← G + κ·q;  θ ← θ − η·κ·g / (√G + eps)
    Per unit of data this is batch-size free where gradient noise dominates: v ≈ E[gᵢ²] does
    not depend on B (E[g²] does: it falls like σ²/B), and N examples take N/B steps of size ∝ κ.
    With B_ref = B = 1, q = g² and every conjugate rule is its standard rule.

McAllester's noise-adaptive SGD (optimizer mcallester; the rule is in hpconj.optimizers): the
swept lr is its scale λ_η; standard uses it as is, conjugate as the per-B_ref-examples scale
λ_η·κ (his η_b = b·η₁), so that in the noise-dominated regime the optimum of λ_η should not move.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class NativeSGD:
    """Settings of torch.optim.SGD (dampening is always 0 here)."""

    lr: float
    momentum: float
    nesterov: bool
    family = "sgd"
    per_example = False

    def torch_kwargs(self) -> dict[str, float | bool]:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": 0.0, "nesterov": self.nesterov}

    @property
    def group(self) -> str:
        return "sgd"


@dataclass(frozen=True)
class NativeAdam:
    """torch.optim.Adam settings; with per_example the second moment averages q instead of g²."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    per_example: bool = False
    family = "adam"

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": (self.beta1, self.beta2), "eps": self.eps, "foreach": False}

    @property
    def group(self) -> str:
        return f"adam{'-per-example' if self.per_example else ''}"


@dataclass(frozen=True)
class NativeRMSprop:
    """torch.optim.RMSprop settings (not centered); with per_example v averages q instead of g²."""

    lr: float
    alpha: float
    eps: float
    momentum: float
    per_example: bool = False
    family = "rmsprop"

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum, "foreach": False}

    @property
    def group(self) -> str:
        # torch's update differs with and without momentum, so they train as separate stacks
        return f"rmsprop{'-momentum' if self.momentum > 0 else ''}{'-per-example' if self.per_example else ''}"


@dataclass(frozen=True)
class NativeAdagrad:
    """torch.optim.Adagrad settings; with per_example G accumulates accumulate·q instead of g²."""

    lr: float
    eps: float
    per_example: bool = False
    accumulate: float = 1.0
    family = "adagrad"

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.lr, "eps": self.eps, "foreach": False}

    @property
    def group(self) -> str:
        return f"adagrad{'-per-example' if self.per_example else ''}"


@dataclass(frozen=True)
class NativeMcAllester:
    """McAllester's noise-adaptive SGD: lr is λ_η (already ×κ under conjugate), b the batch size."""

    lr: float
    lambda_b: float
    eps: float
    warmup: int
    batch_size: int
    per_example = True
    family = "mcallester"

    @property
    def group(self) -> str:
        return "mcallester"


Native = Union[NativeSGD, NativeAdam, NativeRMSprop, NativeAdagrad, NativeMcAllester]


@dataclass(frozen=True)
class Hyperparameters:
    """The user's coordinates of one trial, and the optimizer's fixed settings."""

    lr: float
    batch_size: int
    momentum: float
    optimizer: str  # sgd | momentum | nesterov | adam | rmsprop | adagrad | mcallester
    reference_batch_size: int = 1
    settings: Any = None  # the config's settings block of the optimizer (AdamSettings, ...) or None

    @property
    def kappa(self) -> float:
        return self.batch_size / self.reference_batch_size


Parameterization = Callable[[Hyperparameters], Native]


def _uses_nesterov(hp: Hyperparameters) -> bool:
    # torch refuses nesterov with momentum 0; with β = 0 Nesterov *is* plain SGD.
    return hp.optimizer == "nesterov" and hp.momentum > 0


def _native(hp: Hyperparameters, lr: float, *, beta: float, beta2: float | None = None, eps: float | None = None,
            per_example: bool = False, accumulate: float = 1.0) -> Native:
    """The native record of hp's optimizer with the given (already parameterized) values."""
    s = hp.settings
    if hp.optimizer in ("sgd", "momentum", "nesterov"):
        return NativeSGD(lr=lr, momentum=beta, nesterov=_uses_nesterov(hp))
    if hp.optimizer == "adam":
        return NativeAdam(lr, beta, s.beta2 if beta2 is None else beta2, s.eps if eps is None else eps, per_example)
    if hp.optimizer == "rmsprop":
        return NativeRMSprop(lr, s.alpha if beta2 is None else beta2, s.eps if eps is None else eps, beta, per_example)
    if hp.optimizer == "adagrad":
        return NativeAdagrad(lr, s.eps if eps is None else eps, per_example, accumulate)
    if hp.optimizer == "mcallester":
        return NativeMcAllester(lr, s.lambda_b, s.eps, s.warmup, hp.batch_size)
    raise ValueError(f"unknown optimizer {hp.optimizer!r}")


def standard(hp: Hyperparameters) -> Native:
    """Identity: native lr = η, momentum (or β1) = β: PyTorch's own semantics."""
    return _native(hp, hp.lr, beta=hp.momentum)


def sqrt(hp: Hyperparameters) -> Native:
    """Malladi et al.'s square-root rule: η·√κ, 1 − β' = κ·(1 − β) (β1, β2, α), eps/√κ."""
    if hp.optimizer not in ("adam", "rmsprop", "adagrad"):
        raise ValueError(f"the sqrt rule is defined for adam, rmsprop and adagrad, not {hp.optimizer}")
    kappa = hp.kappa
    root = math.sqrt(kappa)

    def scaled(beta: float) -> float:
        if kappa == 1:
            return beta  # exactly standard at B = B_ref (1 − (1 − β) need not round back to β)
        if kappa * (1 - beta) >= 1:
            raise ValueError(f"the sqrt rule needs κ·(1 − β) < 1, got κ = {kappa:g}, β = {beta:g}")
        return 1 - kappa * (1 - beta)

    s = hp.settings
    if hp.optimizer == "adam":
        return _native(hp, hp.lr * root, beta=scaled(hp.momentum), beta2=scaled(s.beta2), eps=s.eps / root)
    if hp.optimizer == "rmsprop":
        if hp.momentum > 0:
            raise ValueError("the sqrt rule is defined for rmsprop without momentum")
        return _native(hp, hp.lr * root, beta=0.0, beta2=scaled(s.alpha), eps=s.eps / root)
    return _native(hp, hp.lr * root, beta=0.0, eps=s.eps / root)


def conjugate(hp: Hyperparameters) -> Native:
    """Per-example lr (×κ), momentum as a running average, per-example second moments (adaptive).

    See the module docstring for each optimizer's update."""
    kappa = hp.kappa
    if hp.optimizer in ("sgd", "momentum", "nesterov", "rmsprop"):
        lr = hp.lr * kappa * (1.0 - hp.momentum)
    else:
        lr = hp.lr * kappa
    return _native(hp, lr, beta=hp.momentum, per_example=True, accumulate=kappa)


PARAMETERIZATIONS: dict[str, Parameterization] = {"standard": standard, "sqrt": sqrt, "conjugate": conjugate}

# Which of the config's settings each parameterization reads, besides (η, B, β): the trial id
# includes exactly these, so changing B_ref does not invalidate standard trials.
USES_REFERENCE_BATCH_SIZE: dict[str, bool] = {"standard": False, "sqrt": True, "conjugate": True}


def native_settings(name: str, hp: Hyperparameters) -> Native:
    """The native optimizer settings of `hp` under the parameterization called `name`."""
    try:
        rule = PARAMETERIZATIONS[name]
    except KeyError:
        raise ValueError(f"unknown parameterization {name!r}; known: {', '.join(PARAMETERIZATIONS)}") from None
    return rule(hp)
