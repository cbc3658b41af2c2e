"""Optimizer updates of the cohort engine: every trial of a stack at once.

Each rule is the reference engine's (torch.optim's single-tensor code, or hpconj.optimizers for
the per-example rules and McAllester's SGD), applied to parameters stacked [K, ...] with each
trial's settings as a [K, 1, ...] column broadcast over its elements. Scalar arguments of torch's
kernels become tensor operands chosen so that each trial's arithmetic is the same, bit for bit
on the CPU (tested against torch.optim):
    p.add_(d, alpha=a)               ≡ p.addcmul_(d, a_col)
    p.addcdiv_(t1, t2, value=a)      ≡ p.addcdiv_(t1 · a_col, t2)   (torch computes (a·t1)/t2)
    v.addcmul_(g, g, value=a)        ≡ v.addcmul_(g · a_col, g)
    m.lerp_(g, w), v.mul_(β), x / c  ≡ the same with w, β, c as columns
Bias corrections (1 − βᵗ) are computed per trial in Python float64, as torch does.

One stack holds one rule (`Native.group`): a cohort with several rules trains as several stacks.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from hpconj.optimizers import mcallester_estimates, mcallester_rate
from hpconj.parameterizations import Native, NativeAdagrad, NativeAdam, NativeMcAllester, NativeRMSprop, NativeSGD

Tensors = dict[str, torch.Tensor]


def _column(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-trial values as a float32 [K, 1, ...] column to broadcast over `like` [K, ...]."""
    if not isinstance(values, torch.Tensor):
        values = torch.tensor(values, dtype=torch.float32, device=like.device)
    return values.view((-1,) + (1,) * (like.dim() - 1))


class StackedUpdate:
    """Per-trial settings (`natives`), per-parameter state [K, ...], and the step count."""

    state_names: tuple[str, ...] = ()

    def __init__(self, natives: Sequence[Native], params: Tensors):
        self.natives = list(natives)
        self.per_example = self.natives[0].per_example
        self.t = 0
        self.state = {s: {n: torch.zeros_like(p) for n, p in params.items()} for s in self.state_names}
        self._values = self.settings()
        self._columns: dict[tuple[str, str], torch.Tensor] = {}

    def settings(self) -> dict[str, list[float]]:
        """Named per-trial values that the step reads as columns."""
        return {}

    def column(self, tag: str, name: str, like: torch.Tensor) -> torch.Tensor:
        """Setting `tag` as a column shaped for parameter `name` (built once)."""
        key = (tag, name)
        if key not in self._columns:
            self._columns[key] = _column(self._values[tag], like)
        return self._columns[key]

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        raise NotImplementedError

    def keep(self, rows: torch.Tensor) -> StackedUpdate:
        """The same rule restricted to the trials `rows` (state included)."""
        kept = object.__new__(type(self))
        kept.natives = [self.natives[i] for i in rows.tolist()]
        kept.per_example, kept.t = self.per_example, self.t
        kept.state = {s: {n: v.index_select(0, rows) for n, v in per.items()} for s, per in self.state.items()}
        kept._values, kept._columns = kept.settings(), {}
        return kept


class SGDUpdate(StackedUpdate):
    """torch.optim.SGD, dampening 0:  v ← β·v + g;  d = g + β·v (Nesterov) or v;  θ ← θ − η·d.

    Trials with β = 0 take θ ← θ − η·g and keep no velocity: the recursion would give v = 0·v + g
    = g, the same bits, but at twice the memory traffic, and the update is memory-bound (a fifth
    of a unit's time at small batch sizes). They must come first in the stack (`stack_order`):
    rows [0, plain) are plain SGD, rows [plain, K) have momentum."""

    state_names = ()

    def __init__(self, natives: Sequence[Native], params: Tensors):
        super().__init__(natives, params)
        self.state = {"velocity": {n: torch.zeros_like(p[self.plain :]) for n, p in params.items()}}
        self._bound: tuple[Tensors, Tensors] | None = None  # the stack's dicts that _plan views
        self._plan: list[tuple[torch.Tensor | None, ...]] = []

    def settings(self) -> dict[str, list[float]]:
        self.nesterov = any(n.nesterov for n in self.natives)
        self.plain = sum(1 for n in self.natives if n.momentum == 0)
        if any(n.momentum == 0 for n in self.natives[self.plain :]):
            raise ValueError("SGD stacks must order the β = 0 trials first (stack_order)")
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
        kept.per_example, kept.t = self.per_example, self.t
        kept._values, kept._columns = kept.settings(), {}  # rows stay ascending: β = 0 still first
        kept._bound = None
        moving = rows[rows >= self.plain] - self.plain
        kept.state = {"velocity": {n: v.index_select(0, moving) for n, v in self.state["velocity"].items()}}
        return kept


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
        neg_step = torch.tensor([-n.lr / (1 - n.beta1**t) for n in self.natives], dtype=torch.float32, device=device)
        bias2_sqrt = torch.tensor([(1 - n.beta2**t) ** 0.5 for n in self.natives], dtype=torch.float32, device=device)
        for name, param in params.items():
            grad, m, v = grads[name], self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
            m.lerp_(grad, self.column("1-beta1", name, param))
            v.mul_(self.column("beta2", name, param))
            if self.per_example:
                v.addcmul_(second[name], self.column("1-beta2", name, param))
            else:
                v.addcmul_(grad * self.column("1-beta2", name, param), grad)
            denom = v.sqrt().div_(_column(bias2_sqrt, param)).add_(self.column("eps", name, param))
            param.addcdiv_(m * _column(neg_step, param), denom)


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


class McAllesterUpdate(StackedUpdate):
    """McAllester's noise-adaptive SGD (the rule is stated in hpconj.optimizers), per trial and
    coordinate; λ_B, ε, warm-up and b are the config's, so the same for every trial of a stack."""

    state_names = ("mean", "square", "critical")

    def settings(self) -> dict[str, list[float]]:
        return {"lr": [n.lr for n in self.natives]}

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        n: NativeMcAllester = self.natives[0]
        self.t += 1
        warm = self.t <= n.warmup
        for name, param in params.items():
            mean, square = self.state["mean"][name], self.state["square"][name]
            rate = 1.0 / self.t if warm else mcallester_rate(n.batch_size, self.state["critical"][name])
            mean.lerp_(grads[name], rate)
            square.lerp_(second[name], rate)
            self.state["critical"][name], ratio = mcallester_estimates(mean, square, n.lambda_b, n.eps)
            if not warm:
                eta = ratio.clamp_(max=n.lambda_b / n.batch_size).mul_(self.column("lr", name, param))
                param.addcmul_(eta, mean, value=-1)


UPDATES: dict[type, type[StackedUpdate]] = {
    NativeSGD: SGDUpdate, NativeAdam: AdamUpdate, NativeRMSprop: RMSpropUpdate, NativeAdagrad: AdagradUpdate,
    NativeMcAllester: McAllesterUpdate,
}


def stack_order(natives: Sequence[Native]) -> list[int]:
    """The order in which a stack holds its trials: SGD's β = 0 trials first (see SGDUpdate);
    otherwise as given."""
    return sorted(range(len(natives)), key=lambda i: isinstance(natives[i], NativeSGD) and natives[i].momentum != 0)


def stacked_update(natives: Sequence[Native], params: Tensors) -> StackedUpdate:
    """The update of a stack whose trials all follow one rule (one `Native.group`)."""
    groups = {n.group for n in natives}
    if len(groups) != 1:
        raise ValueError(f"one stack trains one update rule, got {sorted(groups)}")
    return UPDATES[type(natives[0])](natives, params)
