"""The cohort engine: K trials of one cohort trained as one stacked computation.

Parameters are stacked along a leading trial dimension [K, ...] (torch.func.stack_module_state)
and every step computes all K losses and gradients at once with
`vmap(grad_and_value(loss))` over `functional_call` — so built-in and user models alike work.
Each trial reads its own batch (trials of one seed share batches: common random numbers).

The update is torch.optim.SGD's, written per trial with tensors of shape [K] broadcast over
each parameter (η, β as in `trial.native`, dampening 0):
    v ← β·v + g            (v₀ = 0, so v₁ = g₁ exactly as torch's first step)
    d = g + β·v  (Nesterov)  or  d = v
    θ ← θ + (−η)·d
with the same elementwise kernels (`mul_`, `add_`, `addcmul_`, whose CPU kernels fuse the
multiply-add exactly like `add_(alpha=−η)` in torch.optim.SGD), so on the CPU each trial's
weights equal the reference engine's bit for bit (tested). A β = 0 trial runs the same
recursion: v = 0·v + g = g.

A trial that diverges is removed from the stack at the next check; the others go on
unchanged. Cohorts larger than `chunk_size` trials are trained in chunks: memory is bounded
by `chunk_size` × (3 parameter copies + one batch of activations and gradients).
"""
from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.utils._pytree import tree_map

from hpconj.engine.base import CurvePoint, TrialResult, curve_steps, is_diverged, params_digest
from hpconj.engine.reference import train_trial
from hpconj.tasks import Task
from hpconj.trials import Trial

DEFAULT_CHUNK = 256


class _LossOf(nn.Module):
    """Wraps a model so that functional_call can swap its parameters inside `task.batch_loss`."""

    def __init__(self, task: Task, model: nn.Module):
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: object) -> torch.Tensor:
        return self.task.batch_loss(self.model, batch)


@dataclass(frozen=True)
class _Clock:
    """A trial's wall time in a cohort: its equal share of the chunk's time so far."""

    start: float
    trials: int

    def share(self) -> float:
        return (time.perf_counter() - self.start) / self.trials


@dataclass
class _Live:
    """The trials still training: stacked state plus per-trial bookkeeping."""

    trials: list[Trial]
    params: dict[str, torch.Tensor]  # name → [K, ...]
    buffers: dict[str, torch.Tensor]
    momentum_buf: dict[str, torch.Tensor]
    neg_lr: torch.Tensor  # [K]
    beta: torch.Tensor  # [K]
    initial: list[float]
    curves: list[list[CurvePoint]]
    recent: torch.Tensor  # [K] float64: sum of batch losses since the last curve point
    first_bad: torch.Tensor  # [K] int64: first step with a non-finite loss, or -1

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, device=self.neg_lr.device)

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, index)

        self.trials = [self.trials[i] for i in rows]
        self.params = {k: pick(v) for k, v in self.params.items()}
        self.buffers = {k: pick(v) for k, v in self.buffers.items()}
        self.momentum_buf = {k: pick(v) for k, v in self.momentum_buf.items()}
        self.neg_lr, self.beta, self.recent, self.first_bad = map(pick, (self.neg_lr, self.beta, self.recent, self.first_bad))
        self.initial = [self.initial[i] for i in rows]
        self.curves = [self.curves[i] for i in rows]


class CohortEngine:
    name = "cohort"

    def __init__(self, chunk_size: int = DEFAULT_CHUNK):
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size

    def run(self, task: Task, trials: Sequence[Trial], device: torch.device) -> Iterator[TrialResult]:
        for start in range(0, len(trials), self.chunk_size):
            chunk = list(trials[start : start + self.chunk_size])
            done: set[str] = set()
            try:
                for result in train_cohort(task, chunk, device):
                    done.add(result.trial_id)
                    yield result
            except Exception:
                # A user model that fails in stacked form (it raises, or cannot be vmapped):
                # run the rest one trial at a time, so that a failure is recorded against
                # the trials that really fail, with their own error.
                for trial in chunk:
                    if trial.trial_id not in done:
                        yield train_trial(task, trial, device)


def _stack_batches(per_seed: dict[int, object], rows: torch.Tensor) -> object:
    """Batches of the live trials, [K, ...]: stack the distinct seeds' batches once, then index."""
    seeds = list(per_seed)
    stacked = tree_map(lambda *xs: torch.stack(xs), *[per_seed[s] for s in seeds])
    return tree_map(lambda x: x.index_select(0, rows), stacked)


def _seed_rows(trials: list[Trial], seeds: list[int], device: torch.device) -> torch.Tensor:
    position = {s: i for i, s in enumerate(seeds)}
    return torch.tensor([position[t.seed] for t in trials], dtype=torch.int64, device=device)


def train_cohort(task: Task, trials: list[Trial], device: torch.device) -> Iterator[TrialResult]:
    """Train trials that share task, batch size and budget; yield each result when it ends."""
    clock = _Clock(time.perf_counter(), len(trials))
    batch_size = trials[0].batch_size
    steps = task.steps(trials[0].budget, batch_size)
    assert all(t.batch_size == batch_size and t.budget == trials[0].budget for t in trials)
    seeds = sorted({t.seed for t in trials})
    init = {s: task.init_model(s).to(device) for s in seeds}
    for model in init.values():
        model.train()
    initial_loss = {s: task.reference_loss(init[s]) for s in seeds}
    base = _LossOf(task, init[seeds[0]])
    params, buffers = stack_module_state([_LossOf(task, init[t.seed]) for t in trials])
    params = {k: v.detach() for k, v in params.items()}
    native = [t.native for t in trials]
    nesterov = any(n.nesterov for n in native)
    live = _Live(
        trials=list(trials),
        params=params,
        buffers=buffers,
        momentum_buf={k: torch.zeros_like(v) for k, v in params.items()},
        neg_lr=torch.tensor([-n.lr for n in native], dtype=torch.float32, device=device),
        beta=torch.tensor([n.momentum for n in native], dtype=torch.float32, device=device),
        initial=[initial_loss[t.seed] for t in trials],
        curves=[[CurvePoint(0, 0, initial_loss[t.seed])] for t in trials],
        recent=torch.zeros(len(trials), dtype=torch.float64, device=device),
        first_bad=torch.full((len(trials),), -1, dtype=torch.int64, device=device),
    )

    def loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], batch: object) -> torch.Tensor:
        return functional_call(base, (p, b), (batch,))

    step_fn = vmap(grad_and_value(loss), in_dims=(0, 0, 0), randomness="different")
    streams = {s: task.batch_stream(s, batch_size, steps, device) for s in seeds}
    record_at = curve_steps(steps)
    last_record = 0
    rows = _seed_rows(live.trials, seeds, device)
    for step in range(1, steps + 1):
        batch = _stack_batches({s: next(streams[s]) for s in seeds}, rows)
        grads, losses = step_fn(live.params, live.buffers, batch)
        _sgd_update(live, grads, nesterov)
        losses = losses.detach()
        bad = ~torch.isfinite(losses)
        live.first_bad = torch.where(bad & (live.first_bad < 0), step, live.first_bad)
        live.recent += losses.double()
        if step in record_at:
            before = len(live.trials)
            yield from _record(task, live, base, step, step - last_record, batch_size, clock)
            last_record = step
            if not live.trials:
                return
            if len(live.trials) < before:
                rows = _seed_rows(live.trials, seeds, device)
    yield from _finish(task, live, base, steps, batch_size, clock)


def _sgd_update(live: _Live, grads: dict[str, torch.Tensor], nesterov: bool) -> None:
    """torch.optim.SGD per trial (see the module docstring), in place on the stacked state."""
    for name, param in live.params.items():
        g = grads[name]
        shape = (-1,) + (1,) * (g.dim() - 1)
        beta, neg_lr = live.beta.view(shape), live.neg_lr.view(shape)
        buf = live.momentum_buf[name]
        buf.mul_(beta).add_(g)
        direction = g.addcmul(buf, beta) if nesterov else buf
        param.addcmul_(direction, neg_lr)


def _record(task: Task, live: _Live, base: nn.Module, step: int, window: int, batch_size: int,
            clock: _Clock) -> Iterator[TrialResult]:
    """Add a curve point to every live trial; finish the ones that diverged."""
    means = (live.recent / window).tolist()
    first_bad = live.first_bad.tolist()
    live.recent.zero_()
    keep: list[int] = []
    for i, trial in enumerate(live.trials):
        if first_bad[i] >= 0:
            yield _diverged(trial, live.curves[i], first_bad[i], batch_size, clock)
            continue
        value = _curve_value(task, live, base, i, means[i])
        live.curves[i].append(CurvePoint(step, step * batch_size, value))
        if is_diverged(value, live.initial[i]):
            yield _diverged(trial, live.curves[i], step, batch_size, clock)
            continue
        keep.append(i)
    if len(keep) < len(live.trials):
        live.keep(keep)


def _curve_value(task: Task, live: _Live, base: nn.Module, i: int, mean: float) -> float:
    model = _trial_model(live, base, i) if task.curve_needs_model else None
    return task.curve_loss(model, mean)


def _trial_model(live: _Live, base: nn.Module, i: int) -> nn.Module:
    """Trial i's weights loaded into the base model (a fresh copy each time)."""
    import copy

    model = copy.deepcopy(base.model)
    state = {k.removeprefix("model."): v[i] for k, v in {**live.params, **live.buffers}.items()}
    model.load_state_dict(state)
    return model


def _diverged(trial: Trial, curve: list[CurvePoint], step: int, batch_size: int, clock: _Clock) -> TrialResult:
    inf = math.inf
    return TrialResult(trial.trial_id, "diverged", inf, inf, math.nan, step, step * batch_size, clock.share(),
                       tuple(curve))


def _finish(task: Task, live: _Live, base: nn.Module, steps: int, batch_size: int, clock: _Clock) -> Iterator[TrialResult]:
    for i, trial in enumerate(live.trials):
        model = _trial_model(live, base, i)
        try:
            metrics = task.evaluate(model)
        except Exception as exc:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            nan = math.nan
            yield TrialResult(trial.trial_id, "failed", nan, nan, nan, steps, steps * batch_size,
                              clock.share(), tuple(live.curves[i]), tb)
            continue
        if is_diverged(metrics.train_loss, live.initial[i]) or not math.isfinite(metrics.val_loss):
            yield _diverged(trial, live.curves[i], steps, batch_size, clock)
            continue
        yield TrialResult(trial.trial_id, "ok", metrics.train_loss, metrics.val_loss, metrics.val_error, steps,
                          steps * batch_size, clock.share(), tuple(live.curves[i]), None,
                          params_digest(model))
