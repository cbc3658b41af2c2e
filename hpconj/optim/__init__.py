"""The optimizers: one entry per update rule, and the registry every other module asks.

An entry (`Optimizer`, in base.py) holds everything about one optimizer: its config block's
schema, its native record, the maths of each parameterization, the reference engine's step, the
cohort engine's stacked update, and its line in `hpconj tasks`. Adding an optimizer is one new
module here, one line in `OPTIMIZERS`, and its tests (docs/design.md, "Optimizers").

Importing the registry does not import torch (see base.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpconj.optim.adagrad import ADAGRAD, AdagradSettings, NativeAdagrad
from hpconj.optim.adam import ADAM, AdamSettings, NativeAdam
from hpconj.optim.base import Hyperparameters, Native, Optimizer, SettingError, Settings, StackedUpdate, Stepper
from hpconj.optim.mcallester import MCALLESTER, McAllesterSettings, NativeMcAllester
from hpconj.optim.rmsprop import RMSPROP, NativeRMSprop, RMSpropSettings
from hpconj.optim.sgd import MOMENTUM, NESTEROV, SGD, NativeSGD

OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in (SGD, MOMENTUM, NESTEROV, ADAM, RMSPROP, ADAGRAD, MCALLESTER)}


def optimizer(name: str) -> Optimizer:
    """The entry called `name`."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}") from None


def rule_of(native: Native) -> Optimizer:
    """The entry whose rules train `native` (the three SGD entries share theirs, and so their rules)."""
    for entry in OPTIMIZERS.values():
        if type(native) is entry.native:
            return entry
    raise ValueError(f"no optimizer in the registry has the native record {type(native).__name__}")


def reference_optimizer(native: Native, params: Sequence[Any], scales: Sequence[float] | None = None) -> Stepper:
    """The reference engine's optimizer for one trial's native settings; `scales`, one per parameter,
    multiply its lr (μP, `lr_scales`)."""
    if scales is None:
        return rule_of(native).reference(native, list(params))
    return rule_of(native).reference(native, list(params), list(scales))


def lr_scales(native: Native, named_parameters: Any) -> dict[str, float] | None:
    """Each parameter's lr multiplier under μP, by name: the μP model marks its parameters with
    `mup = (kind, width multiplier)` (hpconj.tasks.supervised.mark_mup) and the rule's entry says
    what each kind's lr becomes. None for a model without μP marks."""
    marked = {name: getattr(p, "mup", None) for name, p in named_parameters}
    if not any(marked.values()):
        return None
    entry = rule_of(native)
    if entry.mup_scale is None:
        raise ValueError(f"μP is not defined for optimizer {entry.name}")
    return {name: entry.mup_scale(*mark) if mark else 1.0 for name, mark in marked.items()}


def stack_order(natives: Sequence[Native]) -> list[int]:
    """The order in which a stack of one rule holds its trials."""
    return rule_of(natives[0]).stacked.order(natives)


def stacked_update(natives: Sequence[Native], params: Any, scales: dict[str, float] | None = None) -> StackedUpdate:
    """The update of a stack whose trials all follow one rule (one `Native.group`); `scales` by
    parameter name as `lr_scales` gives them."""
    groups = {n.group for n in natives}
    if len(groups) != 1:
        raise ValueError(f"one stack trains one update rule, got {sorted(groups)}")
    if scales is None:
        return rule_of(natives[0]).stacked(natives, params)
    return rule_of(natives[0]).stacked(natives, params, scales)


__all__ = [
    "OPTIMIZERS", "AdagradSettings", "AdamSettings", "Hyperparameters", "McAllesterSettings", "Native",
    "NativeAdagrad", "NativeAdam", "NativeMcAllester", "NativeRMSprop", "NativeSGD", "Optimizer", "RMSpropSettings",
    "SettingError", "Settings", "StackedUpdate", "Stepper", "lr_scales", "optimizer", "reference_optimizer", "rule_of",
    "stack_order", "stacked_update",
]
