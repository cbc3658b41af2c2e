"""What every optimizer entry is made of: the user's coordinates, the entry record, the stacked
update's base class (docs/design.md, "Optimizers").

Importing this module does not import torch: the registry serves the torch-free side too
(config validation, `hpconj tasks`, the trial ids), and only the rules that train need torch,
which they reach through `torch` below, imported on first use.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch
else:
    class _Deferred:
        """A module imported at its first attribute access, so that importing an entry stays cheap."""

        def __init__(self, name: str):
            self._name = name

        def __getattr__(self, attribute: str) -> Any:
            return getattr(importlib.import_module(self._name), attribute)

    torch = _Deferred("torch")

Tensors = dict[str, "torch.Tensor"]


class Settings(BaseModel):
    """An optimizer's settings block in the config (adam: {beta2, eps}, ...): frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingError(ValueError):
    """A problem with one config key (a dotted path such as 'adam.betas'), stated for the user."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


@dataclass(frozen=True)
class Hyperparameters:
    """The user's coordinates of one trial, and the optimizer's fixed settings."""

    lr: float
    batch_size: int
    momentum: float
    optimizer: str  # a name in hpconj.optim.OPTIMIZERS
    reference_batch_size: int = 1
    settings: Any = None  # the optimizer's Settings block (AdamSettings, ...) or None

    @property
    def kappa(self) -> float:
        """κ = B / B_ref."""
        return self.batch_size / self.reference_batch_size


class Native(Protocol):
    """The settings an update rule reads, after the parameterization (NativeSGD, NativeAdam, ...).

    `group` names the rule: trials of one group train as one stack. `per_example` says whether
    the rule reads q = (1/B)·Σᵢ gᵢ², the mean squared per-example gradient."""

    lr: float

    @property
    def group(self) -> str: ...

    @property
    def per_example(self) -> bool: ...


class Stepper(Protocol):
    """One step of the reference engine from the gradients in `.grad` (and q where the rule reads it)."""

    def step(self, second_moments: list[torch.Tensor] | None) -> None: ...


class TorchStepper:
    """A torch.optim optimizer: the oracle for the rules it has."""

    def __init__(self, optimizer: Any):
        self.optimizer = optimizer

    def step(self, second_moments: list[torch.Tensor] | None) -> None:
        self.optimizer.step()


def torch_or_own(native: Any, params: list[Any], torch_name: str, own: Callable[[list[Any], Any], Stepper],
                 scales: list[float] | None = None) -> Stepper:
    """The reference step: torch.optim.<torch_name> where torch has the rule (one param group per
    parameter when `scales` gives each its lr multiplier), hpconj's own single-tensor code (`own`)
    where the native settings read per-example second moments."""
    if native.per_example:
        if scales is not None:
            raise ValueError("per-parameter lr multipliers (μP) are defined for torch.optim's rules only")
        return own(params, native)
    kwargs = native.torch_kwargs()
    groups: Any = params if scales is None else [{"params": [p], "lr": kwargs["lr"] * s} for p, s in zip(params, scales)]
    return TorchStepper(getattr(torch.optim, torch_name)(groups, **kwargs))


def column(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-trial values as a float32 [K, 1, ...] column to broadcast over `like` [K, ...]."""
    if not isinstance(values, torch.Tensor):
        values = torch.tensor(values, dtype=torch.float32, device=like.device)
    return values.view((-1,) + (1,) * (like.dim() - 1))


class StackedUpdate:
    """The cohort engine's form of a rule: every trial of a stack at once.

    `scales` maps a parameter's name to its lr multiplier (μP, hpconj.optim.lr_scales); the
    settings named in `lr_tags` are multiplied by it per parameter, as torch multiplies a param
    group's lr.

    Parameters are stacked [K, ...]; each trial's settings become a [K, 1, ...] column broadcast
    over its elements. Scalar arguments of torch's kernels become tensor operands chosen so that
    each trial's arithmetic is the reference's, bit for bit on the CPU (tested against torch.optim):
        p.add_(d, alpha=a)               ≡ p.addcmul_(d, a_col)
        p.addcdiv_(t1, t2, value=a)      ≡ p.addcdiv_(t1 · a_col, t2)   (torch computes (a·t1)/t2)
        v.addcmul_(g, g, value=a)        ≡ v.addcmul_(g · a_col, g)
        m.lerp_(g, w), v.mul_(β), x / c  ≡ the same with w, β, c as columns
    Bias corrections (1 − βᵗ) are computed per trial in Python float64, as torch does.

    Holds the per-trial settings (`natives`), per-parameter state [K, ...] and the step count."""

    state_names: tuple[str, ...] = ()
    lr_tags: tuple[str, ...] = ()

    def __init__(self, natives: Sequence[Native], params: Tensors, scales: dict[str, float] | None = None):
        self.natives = list(natives)
        self.scales = dict(scales or {})
        self.per_example = self.natives[0].per_example
        self.t = 0
        self.state = {s: {n: torch.zeros_like(p) for n, p in params.items()} for s in self.state_names}
        self._values = self.settings()
        self._columns: dict[tuple[str, str], torch.Tensor] = {}

    @classmethod
    def order(cls, natives: Sequence[Native]) -> list[int]:
        """The order in which a stack holds its trials (as given, unless a rule needs another)."""
        return list(range(len(natives)))

    def settings(self) -> dict[str, list[float]]:
        """Named per-trial values that the step reads as columns."""
        return {}

    def column(self, tag: str, name: str, like: torch.Tensor) -> torch.Tensor:
        """Setting `tag` as a column shaped for parameter `name` (built once)."""
        key = (tag, name)
        if key not in self._columns:
            scale = self.scales.get(name, 1.0) if tag in self.lr_tags else 1.0
            values = self._values[tag] if scale == 1.0 else [v * scale for v in self._values[tag]]
            self._columns[key] = column(values, like)
        return self._columns[key]

    def step(self, params: Tensors, grads: Tensors, second: Tensors | None) -> None:
        raise NotImplementedError

    def keep(self, rows: torch.Tensor) -> StackedUpdate:
        """The same rule restricted to the trials `rows` (state included)."""
        kept = object.__new__(type(self))
        kept.natives = [self.natives[i] for i in rows.tolist()]
        kept.per_example, kept.t, kept.scales = self.per_example, self.t, self.scales
        kept.state = {s: {n: v.index_select(0, rows) for n, v in per.items()} for s, per in self.state.items()}
        kept._values, kept._columns = kept.settings(), {}
        return kept


Problems = list[tuple[str, str]]  # (config key, reason)


@dataclass(frozen=True)
class Optimizer:
    """One optimizer: everything hpconj knows about it, in one record (docs/design.md).

    name            the config's `optimizer:` value
    description     one line for `hpconj tasks`
    native          the record of its native settings (what both engines read)
    parameterize    (hp, parameterization) → native settings: the maths of each parameterization
    parameterizations  the parameterizations it defines (standard and conjugate at least)
    reference       (native, params) → the reference engine's stepper (torch.optim where it has the rule)
    stacked         the cohort engine's update class
    settings        its config block's schema (None: it has no block)
    no_momentum     None if `sweep.momentum` is its β; else how to fix a config that sweeps β
    default_momentum  the momentum axis when the config gives none (Adam's β1 = 0.9)
    read_block      turns a settings block as users write it into the schema's form (Adam's `betas`);
                    returns (default momentum or None, block)
    check           the config's coherence for this optimizer: [(key, reason)] of each problem
    check_steps     (settings, steps per batch size) → a problem with the budget, or None
    mup_scale       (kind, m) → μP's lr multiplier of a parameter of kind vector | matrix | fixed at
                    width multiplier m (Yang et al. 2022; the mup package's MuSGD, MuAdam); None
                    where μP is not defined for the rule
    """

    name: str
    description: str
    native: type
    parameterize: Callable[[Hyperparameters, str], Native]
    parameterizations: tuple[str, ...]
    reference: Callable[..., Stepper]  # (native, params, scales=None)
    stacked: type[StackedUpdate]
    settings: type[Settings] | None = None
    no_momentum: str | None = None
    default_momentum: float | None = None
    read_block: Callable[[dict[str, Any], Any], tuple[float | None, dict[str, Any]]] | None = None
    check: Callable[[Any], Problems] | None = None
    check_steps: Callable[[Any, dict[int, int]], str | None] | None = None
    mup_scale: Callable[[str, float], float] | None = None


def sqrt_beta(kappa: float, beta: float) -> float:
    """The square-root rule's 1 − β' = κ·(1 − β) (Malladi et al. 2022); needs κ·(1 − β) < 1."""
    if kappa == 1:
        return beta  # exactly standard at B = B_ref (1 − (1 − β) need not round back to β)
    if kappa * (1 - beta) >= 1:
        raise ValueError(f"the sqrt rule needs κ·(1 − β) < 1, got κ = {kappa:g}, β = {beta:g}")
    return 1 - kappa * (1 - beta)


def sqrt_problems(config: Any, betas: list[tuple[str, float]]) -> Problems:
    """Every (key, β) of the sqrt rule must keep κ·(1 − β) < 1 at every batch size of the sweep."""
    if "sqrt" not in config.parameterizations:
        return []
    problems: Problems = []
    for batch in config.sweep.batch_size:
        kappa = batch / config.reference_batch_size
        if kappa == 1:
            continue  # sqrt is standard there (sqrt_beta keeps β as it is)
        for key, beta in betas:
            if kappa * (1 - beta) >= 1:
                problems.append((key, f"the sqrt rule needs κ·(1 − β) < 1 for every batch size, but at batch "
                                      f"size {batch} κ = B/B_ref = {kappa:g} and κ·(1 − {beta:g}) = "
                                      f"{kappa * (1 - beta):g}; raise reference_batch_size or β"))
    return problems

