"""Trials and cohorts: the config expanded into the runs it asks for.

A trial's id is a hash of exactly the fields that determine its result, in canonical form:
task, optimizer, parameterization, lr, batch size, momentum, seed, budget, B_ref where the
parameterization reads it, and the optimizer's settings block where it has one (adam, ...). A cohort groups trials that can be trained as one stacked
computation: same task, batch size and budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Any

from hpconj.axes import AXES
from hpconj.config import Budget, Config, Record, TaskSpec, stable_hash
from hpconj.optim import Hyperparameters, Native
from hpconj.parameterizations import USES_REFERENCE_BATCH_SIZE, native_settings


@dataclass(frozen=True)
class Trial:
    task: TaskSpec = field(repr=False, compare=False)
    optimizer: str
    parameterization: str
    lr: float
    batch_size: int
    momentum: float
    seed: int
    budget: Budget = field(repr=False)
    reference_batch_size: int | None
    settings: Record | None = None  # the optimizer's settings block (None for the SGD family)
    trial_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trial_id", stable_hash(self.identity())[:16])

    def identity(self) -> dict[str, Any]:
        """The canonical fields hashed into the trial id."""
        identity = {
            "task": self.task.model_dump(mode="json"),
            "optimizer": self.optimizer,
            "parameterization": self.parameterization,
            "lr": float(self.lr),
            "batch_size": int(self.batch_size),
            "momentum": float(self.momentum),
            "seed": int(self.seed),
            "budget": self.budget.model_dump(mode="json", exclude_none=True),
            "reference_batch_size": self.reference_batch_size,
        }
        if self.settings is not None:  # absent for SGD, so its ids predate the adaptive optimizers
            identity["optimizer_settings"] = self.settings.model_dump(mode="json")
        return identity

    @property
    def hyperparameters(self) -> Hyperparameters:
        return Hyperparameters(self.lr, self.batch_size, self.momentum, self.optimizer, self.reference_batch_size or 1,
                               self.settings)

    @property
    def native(self) -> Native:
        return native_settings(self.parameterization, self.hyperparameters)


@dataclass(frozen=True)
class Cohort:
    """Trials that share task (architecture included), batch size and budget."""

    batch_size: int
    trials: tuple[Trial, ...]

    @property
    def task(self) -> TaskSpec:
        return self.trials[0].task


@dataclass(frozen=True)
class Slice:
    """Trials that differ only in lr and seed (hpconj.analysis): one architecture, parameterization,
    batch size and momentum of a config. `trial(lr, seed)` is its trial at that lr and seed."""

    task: TaskSpec = field(repr=False)
    parameterization: str
    batch_size: int
    momentum: float
    config: Config = field(repr=False, compare=False)

    def trial(self, lr: float, seed: int) -> Trial:
        config = self.config
        b_ref = config.reference_batch_size if USES_REFERENCE_BATCH_SIZE[self.parameterization] else None
        return Trial(self.task, config.optimizer, self.parameterization, lr, self.batch_size, self.momentum, seed,
                     config.budget, b_ref, config.optimizer_settings)

    def identity(self) -> dict[str, Any]:
        """The fields its trials share (a trial's identity without lr and seed)."""
        identity = self.trial(1.0, 0).identity()
        del identity["lr"], identity["seed"]
        return identity

    @property
    def label(self) -> str:
        """'standard, B=32, β=0.9' (and the architecture axes the config sweeps)."""
        swept = {a: getattr(self.task, a) for a in self.config.sweep.task_axes()}
        parts = [f"{a}={v}" for a, v in swept.items()]
        return ", ".join([self.parameterization, *parts, f"B={self.batch_size}", f"β={self.momentum:g}"])


def slices(config: Config) -> list[Slice]:
    """Every slice of the sweep, in a fixed order (architecture, batch size, parameterization, β)."""
    out = []
    for _, task in config.task_variants():
        tasks = {param: task_for(config, task, param) for param in config.parameterizations}
        for batch_size, param, momentum in product(config.sweep.batch_size, config.parameterizations,
                                                   config.sweep.momentum):
            out.append(Slice(tasks[param], param, batch_size, momentum, config))
    return out


def expand_trials(config: Config) -> list[Trial]:
    """Every trial of an lr grid, in a fixed order (architecture, batch size, parameterization, β,
    seed, lr); the architecture loop is absent when no task axis is swept. (A search's trials depend
    on its results: hpconj.search.planned_trials.)"""
    return [s.trial(lr, seed) for s in slices(config) for seed in config.seeds for lr in config.lrs]


def task_for(config: Config, task: TaskSpec, parameterization: str) -> TaskSpec:
    """The task a trial of `parameterization` trains: μP is a model as well as per-layer lrs, so
    its trials train the task's μP form (and form cohorts of their own); the others, `task`."""
    if parameterization == "mup":
        return task.model_copy(update={"mup_base_width": config.mup_base_width})
    return task


def group_cohorts(trials: list[Trial]) -> list[Cohort]:
    """Trials sharing task and batch size (one config has one budget), by batch size, then in the
    order the architectures first appear."""
    groups: dict[tuple[str, int], list[Trial]] = {}
    for trial in trials:
        groups.setdefault((trial.task.model_dump_json(), trial.batch_size), []).append(trial)
    order = {key: i for i, key in enumerate(dict.fromkeys(k for k, _ in groups))}
    ordered = sorted(groups.items(), key=lambda item: (item[0][1], order[item[0][0]]))
    return [Cohort(b, tuple(ts)) for (_, b), ts in ordered]


def axis_values(trial: Trial, axes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The trial's value on each of `axes` (hpconj.axes): its own coordinate or its task's field."""
    return {a: getattr(trial.task, a) if AXES[a].task else getattr(trial, a) for a in axes}
