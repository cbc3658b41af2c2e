"""Parameterizations: pure maps from the user's hyperparameters to the optimizer's native settings.

No torch here. A parameterization takes the user's coordinates (η, B, β) and the reference batch
size B_ref, and returns the settings of `torch.optim.SGD` that realise it. Both engines read the
same `NativeSGD` record, so the maths lives in exactly one place.

Notation: g is the batch-*mean* gradient (the loss is the mean over the batch), θ the
parameters, v / ĝ the momentum buffer, κ = B / B_ref.

standard (PyTorch semantics)
    sgd:       θ ← θ − η·g
    momentum:  v ← β·v + g   (v₁ = g₁);            θ ← θ − η·v
    nesterov:  v ← β·v + g;  d = g + β·v;         θ ← θ − η·d

conjugate (McAllester, TTIC 31230, 2018): η is a learning rate *per B_ref examples*; the step
uses the sum of per-example gradients scaled to B_ref, κ·g; momentum is a running average
    ĝ ← β·ĝ + (1 − β)·κ·g   (ĝ₀ = 0);            θ ← θ − η·ĝ
which is exactly torch.optim.SGD(lr = η·κ·(1 − β), momentum = β, dampening = 0), first step
included: with v = ĝ / ((1 − β)·κ) the recursions coincide and ĝ₀ = 0 ⇔ v₁ = g₁. Nesterov uses
the same lr map with nesterov=True. At B = B_ref and β = 0 conjugate equals standard.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class NativeSGD:
    """Settings of torch.optim.SGD (dampening is always 0 here)."""

    lr: float
    momentum: float
    nesterov: bool

    def torch_kwargs(self) -> dict[str, float | bool]:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": 0.0, "nesterov": self.nesterov}


@dataclass(frozen=True)
class Hyperparameters:
    """The user's coordinates of one trial."""

    lr: float
    batch_size: int
    momentum: float
    optimizer: str  # sgd | momentum | nesterov
    reference_batch_size: int = 1


Parameterization = Callable[[Hyperparameters], NativeSGD]


def _uses_nesterov(hp: Hyperparameters) -> bool:
    # torch refuses nesterov with momentum 0; with β = 0 Nesterov *is* plain SGD.
    return hp.optimizer == "nesterov" and hp.momentum > 0


def standard(hp: Hyperparameters) -> NativeSGD:
    """Identity: native lr = η, momentum = β (torch.optim.SGD semantics)."""
    return NativeSGD(lr=hp.lr, momentum=hp.momentum, nesterov=_uses_nesterov(hp))


def conjugate(hp: Hyperparameters) -> NativeSGD:
    """Per-example lr and running-average momentum: native lr = η·(B/B_ref)·(1 − β)."""
    kappa = hp.batch_size / hp.reference_batch_size
    return NativeSGD(lr=hp.lr * kappa * (1.0 - hp.momentum), momentum=hp.momentum, nesterov=_uses_nesterov(hp))


PARAMETERIZATIONS: dict[str, Parameterization] = {"standard": standard, "conjugate": conjugate}

# Which of the config's settings each parameterization reads, besides (η, B, β): the trial id
# includes exactly these, so changing B_ref does not invalidate standard trials.
USES_REFERENCE_BATCH_SIZE: dict[str, bool] = {"standard": False, "conjugate": True}


def native_settings(name: str, hp: Hyperparameters) -> NativeSGD:
    """The torch.optim.SGD settings of `hp` under the parameterization called `name`."""
    try:
        return PARAMETERIZATIONS[name](hp)
    except KeyError:
        raise ValueError(f"unknown parameterization {name!r}; known: {', '.join(PARAMETERIZATIONS)}") from None
