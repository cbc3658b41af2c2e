"""What a trial and a noise measurement leave behind: plain records, no torch.

The engines produce them, the store keeps them, the analysis reads their CSV exports; keeping
them here lets the store and everything downstream of it work without importing the engines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

OK, DIVERGED, FAILED = "ok", "diverged", "failed"
STATUSES = (OK, DIVERGED, FAILED)  # how a trial ended
DONE_STATUSES = (OK, DIVERGED)  # recorded for good; a failed trial runs again on resume


@dataclass(frozen=True)
class CurvePoint:
    step: int
    examples: int
    train_loss: float


@dataclass(frozen=True)
class Checkpoint:
    """The metrics of a trial's model part way through (budget.checkpoints), on the full train and
    validation sets, as the final ones are computed."""

    fraction: float  # the share of the budget it stands for
    step: int
    examples: int
    train_loss: float
    val_loss: float
    val_error: float


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    status: str  # one of STATUSES
    train_loss: float
    val_loss: float
    val_error: float
    steps: int  # steps actually taken
    examples: int
    wall_s: float
    curve: tuple[CurvePoint, ...] = field(repr=False)
    error: str | None = None
    params_sha256: str | None = None
    checkpoints: tuple[Checkpoint, ...] = field(default=(), repr=False)

    def metric(self, name: str) -> float:
        """The configured metric: +inf when diverged, NaN when failed."""
        if self.status == "diverged":
            return math.inf
        if self.status == "failed":
            return math.nan
        return float(getattr(self, name))


@dataclass(frozen=True)
class NoiseEstimate:
    """B_simple of one seed's initial model, from `examples` per-example gradients."""

    seed: int
    examples: int
    trace_sigma: float  # tr Σ̂
    grad_norm_sq: float  # |G|²̂ (unbiased; may be ≤ 0 when the signal is below the noise)
    b_simple: float  # tr Σ̂ / |G|²̂, +inf when |G|²̂ ≤ 0
