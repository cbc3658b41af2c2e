"""The engine interface: a cohort of trials in, one `TrialResult` per trial out.

Engines differ only in how they compute; the result of a trial is a pure function of its
fields (docs/design.md, promise 1). The sweep runner never looks inside an engine.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import nn

from hpconj.config import Budget
from hpconj.tasks import Metrics, Task
from hpconj.records import FAILED, Checkpoint, TrialResult
from hpconj.trials import Trial

DIVERGENCE_FACTOR = 100.0  # a loss above 100× its initial value counts as diverged
CURVE_POINTS = 50
# Per-example gradients held at once (chunks of examples × parameters), wherever they are taken
# (per-example second moments, the gradient noise scale): 64 MiB of float32.
EXAMPLE_GRADIENT_FLOATS = 1 << 24


class Engine(Protocol):
    name: str

    def run(self, task: Task, trials: Sequence[Trial], device: torch.device) -> Iterator[TrialResult]:
        """Train `trials` (one cohort: same batch size and budget), yielding each result as it ends."""


@functools.cache
def retain_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB in the heap instead of returning them to
    the system. A stacked step allocates and frees the same few activation-sized tensors every
    step; returned to the system, each comes back as fresh pages whose first touch faults
    (measured: ~700 page faults and ~2.5 ms of a 17 ms step for 64 trials at B = 128). The
    arithmetic is untouched. Called in worker processes only (both engines' alike), never in a
    user's own process, whose memory it would keep. Once per process; False where the C library
    is not glibc (musl has no libc.so.6: OSError)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def failed_result(trial_id: str, exc: BaseException, wall_s: float) -> TrialResult:
    """A trial whose user code raised: its error, where it was raised, and no numbers."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    nan = math.nan
    return TrialResult(trial_id, FAILED, nan, nan, nan, 0, 0, wall_s, (), f"{type(exc).__name__}: {exc}{where}")


def curve_steps(steps: int) -> set[int]:
    """About CURVE_POINTS evenly spaced steps to record, always including 0 and the last."""
    every = max(1, steps // CURVE_POINTS)
    return set(range(0, steps + 1, every)) | {steps}


SHARE_TOLERANCE = 2 ** 0.25  # a checkpoint's step may stand for its share within a quarter octave


def checkpoint_steps(budget: Budget, steps: int) -> dict[int, float]:
    """step → the share of the budget it stands for: round(share · steps), kept only where
    step/steps is within a quarter octave of the share (a run too short for it has no such
    checkpoint, so that every batch size's checkpoint of one share stands at the same point of
    training); the whole budget (share 1) is always its last step."""
    out: dict[int, float] = {}
    for fraction in budget.checkpoint_fractions():
        step = round(fraction * steps)
        if fraction == 1.0 or (step >= 1 and 1 / SHARE_TOLERANCE <= step / (fraction * steps) <= SHARE_TOLERANCE):
            out.setdefault(steps if fraction == 1.0 else step, fraction)
    return out


def checkpoint(fraction: float, step: int, batch_size: int, metrics: Metrics) -> Checkpoint:
    return Checkpoint(fraction, step, step * batch_size, metrics.train_loss, metrics.val_loss, metrics.val_error)


def is_diverged(loss: float, initial: float) -> bool:
    """Non-finite, or far above where it started (docs/design.md, promise 4)."""
    return not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * max(initial, 1e-12)


def params_digest(model: nn.Module) -> str:
    """sha256 of the final parameters' bytes: equal digests mean bit-identical trials."""
    return tensors_digest(model.state_dict())


def tensors_digest(named: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(named.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
