"""The SGD family: `sgd`, `momentum` (heavy ball) and `nesterov`, all torch.optim.SGD.

g is the batch-*mean* gradient, κ = B / B_ref.

standard (PyTorch semantics)
    sgd:       θ ← θ − η·g
    momentum:  v ← β·v + g   (v₁ = g₁);            θ ← θ − η·v
    nesterov:  v ← β·v + g;  d = g + β·v;         θ ← θ − η·d
conjugate (McAllester, TTIC 31230, 2018): η is a learning rate *per B_ref examples*; the step uses
the sum of per-example gradients scaled to B_ref, κ·g; momentum is a running average
    ĝ ← β·ĝ + (1 − β)·κ·g   (ĝ₀ = 0);            θ ← θ − η·ĝ
which is exactly torch.optim.SGD(lr = η·κ·(1 − β), momentum = β, dampening = 0), first step
included: with v = ĝ / ((1 − β)·κ) the recursions coincide and ĝ₀ = 0 ⇔ v₁ = g₁. Nesterov uses
the same lr map with nesterov=True. At B = B_ref and β = 0 conjugate equals standard.
mup (Yang et al. 2022, the mup package's MuSGD): standard's settings, with the lr of every
vector-like parameter (one dimension grows with width: input weights, biases, the readout's
weight) multiplied by the width multiplier m = width / base_width; the μP model is the task's
(hpconj.tasks.supervised.build_mlp).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpconj.optim.base import Hyperparameters, Native, Optimizer, StackedUpdate, Stepper, Tensors, torch, torch_or_own


@dataclass(frozen=True)
class NativeSGD:
    """Settings of torch.optim.SGD (dampening is always 0 here)."""

    lr: float
    momentum: float
    nesterov: bool
    per_example = False
    group = "sgd"

    def torch_kwargs(self) -> dict[str, float | bool]:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": 0.0, "nesterov": self.nesterov}


def parameterize(hp: Hyperparameters, parameterization: str) -> NativeSGD:
    """standard: (η, β) as they are; conjugate: lr = η·κ·(1 − β), momentum β."""
    lr = hp.lr if parameterization in ("standard", "mup") else hp.lr * hp.kappa * (1.0 - hp.momentum)
    # torch refuses nesterov with momentum 0; with β = 0 Nesterov *is* plain SGD.
    return NativeSGD(lr=lr, momentum=hp.momentum, nesterov=hp.optimizer == "nesterov" and hp.momentum > 0)


def reference(native: Native, params: list[Any], scales: list[float] | None = None) -> Stepper:
    return torch_or_own(native, params, "SGD", lambda params, native: None, scales)


def mup_scale(kind: str, width_mult: float) -> float:
    """MuSGD: vector-like parameters ×m; matrix-like ×(fan-out mult / fan-in mult) = 1 for the
    square hidden matrices of an MLP; fixed ones ×1."""
    return width_mult if kind == "vector" else 1.0


class SGDUpdate(StackedUpdate):
    """torch.optim.SGD, dampening 0:  v ← β·v + g;  d = g + β·v (Nesterov) or v;  θ ← θ − η·d.

    Trials with β = 0 take θ ← θ − η·g and keep no velocity: the recursion would give v = 0·v + g
    = g, the same bits, but at twice the memory traffic, and the update is memory-bound (a fifth
    of a unit's time at small batch sizes). They must come first in the stack (`order`):
    rows [0, plain) are plain SGD, rows [plain, K) have momentum."""

    lr_tags = ("neg_lr_plain", "neg_lr")

    def __init__(self, natives: Sequence[Native], params: Tensors, scales: dict[str, float] | None = None):
        super().__init__(natives, params, scales)
        self.state = {"velocity": {n: torch.zeros_like(p[self.plain :]) for n, p in params.items()}}
        self._bound: tuple[Tensors, Tensors] | None = None  # the stack's dicts that _plan views
        self._plan: list[tuple[torch.Tensor | None, ...]] = []

    @classmethod
    def order(cls, natives: Sequence[Native]) -> list[int]:
        """β = 0 trials first, each part in the given order."""
        return sorted(range(len(natives)), key=lambda i: natives[i].momentum != 0)

    def settings(self) -> dict[str, list[float]]:
        self.nesterov = any(n.nesterov for n in self.natives)
        self.plain = sum(1 for n in self.natives if n.momentum == 0)
        if any(n.momentum == 0 for n in self.natives[self.plain :]):
            raise ValueError("SGD stacks must order the β = 0 trials first (SGDUpdate.order)")
        moving = self.natives[self.plain :]
        return {"beta": [n.momentum for n in moving], "neg_lr_plain": [-n.lr for n in self.natives[: self.plain]],
                "neg_lr": [-n.lr for n in moving]}

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        self.t += 1
        if self._bound is None or self._bound[0] is not params or self._bound[1] is not grads:
            self._bind(params, grads)
        for plain_param, plain_grad, neg_lr_plain, param, moving, velocity, beta, neg_lr in self._plan:
            if plain_param is not None:
                plain_param.addcmul_(plain_grad, neg_lr_plain)
            if param is not None:
                velocity.mul_(beta).add_(moving)
                direction = moving.addcmul(velocity, beta) if self.nesterov else velocity
                param.addcmul_(direction, neg_lr)

    def _bind(self, params: Tensors, grads: Tensors) -> None:
        """Build each parameter's row views and columns once per stack: at small batch sizes,
        slicing and looking them up at every step cost a sixth of the update (measured)."""
        plain, moving = self.plain, self.plain < len(self.natives)
        self._plan = [
            (param[:plain] if plain else None, grads[name][:plain] if plain else None,
             self.column("neg_lr_plain", name, param) if plain else None,
             param[plain:] if moving else None, grads[name][plain:] if moving else None,
             self.state["velocity"][name] if moving else None,
             self.column("beta", name, param) if moving else None,
             self.column("neg_lr", name, param) if moving else None)
            for name, param in params.items()
        ]
        self._bound = (params, grads)

    def keep(self, rows: torch.Tensor) -> StackedUpdate:
        kept = object.__new__(SGDUpdate)
        kept.natives = [self.natives[i] for i in rows.tolist()]
        kept.per_example, kept.t, kept.scales = self.per_example, self.t, self.scales
        kept._values, kept._columns = kept.settings(), {}  # rows stay ascending: β = 0 still first
        kept._bound = None
        moving = rows[rows >= self.plain] - self.plain
        kept.state = {"velocity": {n: v.index_select(0, moving) for n, v in self.state["velocity"].items()}}
        return kept


def _entry(name: str, description: str, no_momentum: str | None = None) -> Optimizer:
    return Optimizer(name=name, description=description, native=NativeSGD, parameterize=parameterize,
                     parameterizations=("standard", "conjugate", "mup"), reference=reference, stacked=SGDUpdate,
                     no_momentum=no_momentum, mup_scale=mup_scale)


SGD = _entry("sgd", "θ ← θ − η·g (momentum must be 0)", no_momentum="use optimizer: momentum, or sweep.momentum: [0.0]")
MOMENTUM = _entry("momentum", "heavy ball, torch.optim.SGD: v ← β·v + g; θ ← θ − η·v")
NESTEROV = _entry("nesterov", "torch.optim.SGD(nesterov=True): θ ← θ − η·(g + β·v)")
