"""The swept axes besides the learning rate: one record each, the only place that names them.

A *slice* (docs/design.md) is the trials that share the value of every axis and differ only in lr
and seed; a *shift* along a numeric axis is the slope of log2 lr* against the axis' abscissa,
with every other axis held at one value. An axis says how its values are placed on that
abscissa, how it is written, where its value lives (in the trial's coordinates or in its task's
architecture) and what may be swept. Code that is the same for every axis iterates `AXES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Axis:
    """One swept quantity.

    name      its column in trials.csv and key in the config
    symbol    how figures write it ("B", "β")
    words     how sentences write it ("batch size")
    abscissa  what a shift's slope is taken against ("log2 B"); "" for a categorical axis
    task      True where the value is a field of the task (architecture), False for the trial's
              own coordinates (batch size, momentum)
    """

    name: str
    symbol: str
    words: str
    abscissa: str
    task: bool
    one_minus: bool = False  # the abscissa is log2(1 − value) (momentum), else log2(value)
    categorical: bool = False
    time: bool = False  # training time: an axis of the analysis over checkpoints, never swept

    def position(self, values: Any) -> np.ndarray:
        """The abscissa of `values`: log2 v, or log2(1 − v); NaN for a categorical axis."""
        if self.categorical:
            return np.full(len(np.atleast_1d(values)), np.nan)
        array = np.asarray(values, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log2(1.0 - array) if self.one_minus else np.log2(array)

    def text(self, value: Any) -> str:
        """A value as the tables write it: 0.9, 64, orthogonal."""
        if self.categorical:
            return str(value)
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:g}"


AXES: dict[str, Axis] = {a.name: a for a in (
    Axis("batch_size", "B", "batch size", "log2 B", task=False),
    Axis("momentum", "β", "momentum", "log2(1 − β)", task=False, one_minus=True),
    Axis("width", "width", "width", "log2 width", task=True),
    Axis("depth", "depth", "depth", "log2 depth", task=True),
    Axis("init_scale", "σ_init", "init scale", "log2 init scale", task=True),
    Axis("init", "init", "initialisation", "", task=True, categorical=True),
    # the share of the budget a checkpoint stands for (budget.checkpoints): log2 T up to a constant
    Axis("checkpoint", "T/T_max", "training time", "log2 T", task=False, time=True),
)}
TRIAL_AXES = tuple(a for a, axis in AXES.items() if not axis.task and not axis.time)  # always columns of trials.csv
TASK_AXES = tuple(a for a, axis in AXES.items() if axis.task)  # columns only when swept


def axes_of(frame: Any) -> list[str]:
    """The axes a table has columns for, in AXES order."""
    return [a for a in AXES if a in frame.columns]


def fixed_text(values: dict[str, Any]) -> str:
    """Where a shift was measured, in words: 'momentum=0.9' or 'momentum=0.9, width=64'."""
    return ", ".join(f"{a}={AXES[a].text(v)}" for a, v in values.items())

