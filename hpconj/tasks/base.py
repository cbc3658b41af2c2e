"""What an engine needs from a task: initial weights, batches, a loss, and final metrics.

Common random numbers (docs/design.md, promise 2) live here: `init_model(seed)` and
`batch_stream(seed, ...)` depend on the seed alone, never on lr, momentum or parameterization.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


class TaskError(ValueError):
    """A task cannot be built from its spec (bad data file, a user function that raises...)."""


@dataclass(frozen=True)
class Metrics:
    """Final metrics of a trial, evaluated on whole data sets (deterministic)."""

    train_loss: float
    val_loss: float
    val_error: float  # NaN where the task has no classes


class Task(Protocol):
    """A runtime task: built once per sweep (and device) from a validated TaskSpec."""

    description: str

    def steps(self, budget: Any, batch_size: int) -> int:
        """Number of optimizer steps a trial of this batch size takes under `budget`."""

    def init_model(self, seed: int) -> nn.Module:
        """The initial model of `seed` (on the CPU; built identically for every trial of the seed)."""

    def batch_stream(self, seed: int, batch_size: int, steps: int, device: torch.device) -> Iterator[Any]:
        """The `steps` batches of `seed`, in order; identical for every trial of the seed."""

    def batch_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Mean loss over the batch (the standard convention; parameterizations rescale lr)."""

    def reference_loss(self, model: nn.Module) -> float:
        """The loss that divergence is measured against (at initialisation) and curves record."""

    curve_needs_model: bool
    """Whether `curve_loss` reads the model (else it returns the mean batch loss it is given)."""

    def curve_loss(self, model: nn.Module, mean_batch_loss: float) -> float:
        """The train-loss value of a curve point, given the mean batch loss since the last one."""

    def evaluate(self, model: nn.Module) -> Metrics:
        """Final metrics: full train and validation sets, eval mode, no grad."""

    def to(self, device: torch.device) -> Task:
        """This task with its tensors on `device`."""


def seeded_init(builder: Any, seed: int) -> nn.Module:
    """Build a module with the global RNG seeded to `seed`, leaving the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder()


def order_generator(seed: int) -> torch.Generator:
    """The RNG of example order (and of streamed examples): independent of the init RNG."""
    return torch.Generator().manual_seed(1_000_003 * seed + 7919)


class LossOf(nn.Module):
    """`task.batch_loss(model, batch)` as a module, so that torch.func's functional_call can swap
    the model's parameters wherever the loss reads them (the quadratic's loss reads model.theta,
    not forward). Its parameters are named "model.<name>"."""

    def __init__(self, task: Task, model: nn.Module):
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.task.batch_loss(self.model, batch)


def example_gradients(task: Task, model: nn.Module, batch: Any,
                      params: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor | None, ...]]:
    """Per example i of `batch` (every leaf sliced to [i:i+1]): the gradient of its own loss, a
    batch of one, with respect to `params` (None where a parameter is unused), one at a time with
    autograd — slow, and independent of any batched formula it is used to check."""
    from torch.utils._pytree import tree_leaves, tree_map

    for i in range(len(tree_leaves(batch)[0])):
        example = tree_map(lambda t: t[i : i + 1], batch)
        yield torch.autograd.grad(task.batch_loss(model, example), params, allow_unused=True)
