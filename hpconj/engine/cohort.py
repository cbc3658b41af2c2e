"""The cohort engine: K trials of one cohort trained as one stacked computation.

Parameters are stacked along a leading trial dimension [K, ...] and every step computes all K
losses and gradients at once: with hand-written batched kernels for the built-in networks
(engine/stacked.py), and with `vmap(grad_and_value(loss))` over `functional_call` for any
other model (user models, the quadratic). Each trial reads its own batch; trials of one seed
share batches (common random numbers).

The update is torch.optim.SGD's, per trial, with η and β of shape [K] broadcast over each
stacked parameter (as in `trial.native`, dampening 0):
    v ← β·v + g            (v₀ = 0, so v₁ = g₁ exactly as torch's first step)
    d = g + β·v  (Nesterov)  or  d = v
    θ ← θ + (−η)·d
using the same elementwise kernels as torch.optim.SGD (`mul_`, `add_`, and `addcmul_`, whose CPU
kernel fuses the multiply-add exactly like `add_(d, alpha=−η)`), so on the CPU each trial's
weights equal the reference engine's bit for bit (tested). A β = 0 trial runs the same
recursion: v = 0·v + g = g.

Batch losses are kept per curve window and summed in float64 in step order when a curve point
is recorded, exactly as the reference engine sums them; the first non-finite loss of a trial
marks it diverged at that step. A trial that diverges is dropped from the stack at that point;
the others go on unchanged. Cohorts larger than `chunk_size` trials are trained in chunks, so
memory is bounded by chunk_size × (3 copies of the parameters + one batch of activations).
"""
from __future__ import annotations

import copy
import math
import time
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.utils._pytree import tree_map

from hpconj.engine.base import CurvePoint, TrialResult, curve_steps, failed_result, is_diverged, tensors_digest
from hpconj.engine.reference import train_trial
from hpconj.engine.stacked import Layer, layer_plan, stacked_logits, stacked_loss_and_grads
from hpconj.tasks import Metrics, Task
from hpconj.tasks.supervised import SupervisedTask
from hpconj.trials import Trial

DEFAULT_CHUNK = 256
log = logging.getLogger("hpconj")  # shown with --debug


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
            except Exception as exc:
                # A user model that fails in stacked form (it raises, or cannot be vmapped):
                # run the rest one trial at a time, so that a failure is recorded against
                # the trials that really fail, with their own error.
                log.info("cohort of %d trials (B=%d) runs one trial at a time: %s: %s", len(chunk),
                         chunk[0].batch_size, type(exc).__name__, exc)
                for trial in chunk:
                    if trial.trial_id not in done:
                        yield train_trial(task, trial, device)


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


class _Stack:
    """Parameters, momentum buffers and gradients of K trials, each [K, ...] per parameter.

    η and β are [K, 1, ...] so that each update kernel broadcasts them over a trial's
    elements (measured: 1.5× faster than one flat buffer with per-element η and β, whose extra
    memory traffic outweighed the fewer kernel calls).
    """

    def __init__(self, params: dict[str, torch.Tensor], neg_lr: torch.Tensor, beta: torch.Tensor,
                 momentum: dict[str, torch.Tensor] | None = None):
        self.params = {n: p.contiguous() for n, p in params.items()}
        self.momentum = momentum if momentum is not None else {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.grads = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.neg_lr, self.beta = neg_lr, beta
        # η and β as [K, 1, ...] per parameter: each kernel broadcasts them over a trial's elements
        # (measured: faster than _foreach_ ops on stride-0 expanded views of the same)
        self._shaped = {n: (_column(beta, p), _column(neg_lr, p)) for n, p in self.params.items()}

    def step(self, nesterov: bool) -> None:
        """torch.optim.SGD on every trial at once (see the module docstring)."""
        for name, param in self.params.items():
            beta, neg_lr = self._shaped[name]
            grad, velocity = self.grads[name], self.momentum[name]
            velocity.mul_(beta).add_(grad)
            direction = grad.addcmul(velocity, beta) if nesterov else velocity
            param.addcmul_(direction, neg_lr)

    def keep(self, rows: torch.Tensor) -> _Stack:
        pick = {n: v.index_select(0, rows) for n, v in self.params.items()}
        mom = {n: v.index_select(0, rows) for n, v in self.momentum.items()}
        return _Stack(pick, self.neg_lr.index_select(0, rows), self.beta.index_select(0, rows), mom)


def _column(per_trial: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A [K] tensor shaped [K, 1, ...] to broadcast over `like` [K, ...]."""
    return per_trial.view((-1,) + (1,) * (like.dim() - 1))


@dataclass
class _Live:
    """The trials still training, with their per-trial bookkeeping."""

    trials: list[Trial]
    state: _Stack
    buffers: dict[str, torch.Tensor]
    initial: list[float]
    curves: list[list[CurvePoint]]

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, device=self.state.neg_lr.device)
        self.trials = [self.trials[i] for i in rows]
        self.state = self.state.keep(index)
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        self.initial = [self.initial[i] for i in rows]
        self.curves = [self.curves[i] for i in rows]


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
    native = [t.native for t in trials]
    live = _Live(
        trials=list(trials),
        state=_Stack(
            {k: v.detach() for k, v in params.items()},
            neg_lr=torch.tensor([-n.lr for n in native], dtype=torch.float32, device=device),
            beta=torch.tensor([n.momentum for n in native], dtype=torch.float32, device=device),
        ),
        buffers=buffers,
        initial=[initial_loss[t.seed] for t in trials],
        curves=[[CurvePoint(0, 0, initial_loss[t.seed])] for t in trials],
    )
    nesterov = any(n.nesterov for n in native)
    layers = layer_plan(base.model) if isinstance(task, SupervisedTask) and not buffers else None
    step_fn = _step_function(task, base, layers)
    batches = _BatchStacker(task, seeds, batch_size, steps, device)
    batches.select(live.trials)
    record_at = curve_steps(steps)
    history: list[torch.Tensor] = []  # batch losses [K] of each step since the last curve point
    for step in range(1, steps + 1):
        losses = step_fn(live.state, live.buffers, batches.next())
        live.state.step(nesterov)
        history.append(losses)
        if step in record_at:
            before = len(live.trials)
            yield from _record(task, live, base, step, history, batch_size, clock)
            history = []
            if not live.trials:
                return
            if len(live.trials) < before:
                batches.select(live.trials)
    yield from _finish(task, live, base, layers, steps, batch_size, clock)


class _BatchStacker:
    """Each step's batches: one per seed, shared by that seed's trials (rows[i] = trial i's seed)."""

    def __init__(self, task: Task, seeds: list[int], batch_size: int, steps: int, device: torch.device):
        self.seeds = seeds
        self.streams = [task.batch_stream(s, batch_size, steps, device) for s in seeds]
        self.device = device
        self.rows = torch.zeros(0, dtype=torch.int64)

    def select(self, trials: list[Trial]) -> None:
        """Record which seed each live trial reads."""
        position = {s: i for i, s in enumerate(self.seeds)}
        self.rows = torch.tensor([position[t.seed] for t in trials], dtype=torch.int64, device=self.device)

    def next(self) -> _StepBatch:
        return _StepBatch([next(stream) for stream in self.streams], self)


@dataclass(frozen=True)
class _StepBatch:
    per_seed: list[object]
    stacker: _BatchStacker

    def stacked(self) -> object:
        """[K, ...] for every leaf: the distinct seeds' batches stacked once, then indexed."""
        stacked = tree_map(lambda *xs: torch.stack(xs), *self.per_seed)
        return tree_map(lambda x: x.index_select(0, self.stacker.rows), stacked)


StepFunction = Callable[[_Stack, dict[str, torch.Tensor], _StepBatch], torch.Tensor]


def _step_function(task: Task, base: _LossOf, layers: list[Layer] | None) -> StepFunction:
    """(state, buffers, batch) → per-trial batch losses [K], with the gradients in state.grad.

    Built-in networks (`layers` given) get the hand-written stacked kernels (engine/stacked.py);
    any other model gets torch.func's vmap(grad_and_value) over functional_call.
    """
    if layers is not None:
        classes = task.data.classes

        def stacked(state: _Stack, buffers: dict[str, torch.Tensor], batch: _StepBatch) -> torch.Tensor:
            x, y = batch.stacked()
            return stacked_loss_and_grads(layers, state.params, x, y, classes, out=state.grads)

        return stacked

    def loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], batch: object) -> torch.Tensor:
        return functional_call(base, (p, b), (batch,))

    grad_fn = vmap(grad_and_value(loss), in_dims=(0, 0, 0), randomness="different")

    def generic(state: _Stack, buffers: dict[str, torch.Tensor], batch: _StepBatch) -> torch.Tensor:
        grads, losses = grad_fn(state.params, buffers, batch.stacked())
        for name, view in state.grads.items():
            view.copy_(grads[name])
        return losses.detach()

    return generic


def _window_sums(history: list[torch.Tensor]) -> tuple[list[float], list[int]]:
    """Per trial: the float64 sum of its batch losses in step order, and the window index of its
    first non-finite loss (−1 if none) — the reference engine's own arithmetic."""
    rows = torch.stack(history).double().T.tolist()
    sums, first_bad = [], []
    for row in rows:
        total, bad = 0.0, -1
        for j, value in enumerate(row):
            total += value
            if bad < 0 and not math.isfinite(value):
                bad = j
        sums.append(total)
        first_bad.append(bad)
    return sums, first_bad


def _record(task: Task, live: _Live, base: _LossOf, step: int, history: list[torch.Tensor], batch_size: int,
            clock: _Clock) -> Iterator[TrialResult]:
    """Add a curve point to every live trial; finish the ones that diverged."""
    window = len(history)
    sums, first_bad = _window_sums(history)
    keep: list[int] = []
    for i, trial in enumerate(live.trials):
        if first_bad[i] >= 0:
            yield _diverged(trial, live.curves[i], step - window + first_bad[i] + 1, batch_size, clock)
            continue
        model = _trial_model(live, base, i) if task.curve_needs_model else None
        value = task.curve_loss(model, sums[i] / window)
        live.curves[i].append(CurvePoint(step, step * batch_size, value))
        if is_diverged(value, live.initial[i]):
            yield _diverged(trial, live.curves[i], step, batch_size, clock)
            continue
        keep.append(i)
    if len(keep) < len(live.trials):
        live.keep(keep)


def _trial_state(live: _Live, i: int) -> dict[str, torch.Tensor]:
    """Trial i's parameters and buffers, named as in its own model's state_dict."""
    merged = {**live.state.params, **live.buffers}
    return {k.removeprefix("model."): v[i] for k, v in merged.items()}


def _trial_model(live: _Live, base: _LossOf, i: int) -> nn.Module:
    """Trial i's weights loaded into a copy of the base model."""
    model = copy.deepcopy(base.model)
    model.load_state_dict(_trial_state(live, i))
    return model


def _diverged(trial: Trial, curve: list[CurvePoint], step: int, batch_size: int, clock: _Clock) -> TrialResult:
    inf = math.inf
    return TrialResult(trial.trial_id, "diverged", inf, inf, math.nan, step, step * batch_size, clock.share(),
                       tuple(curve))


def _finish(task: Task, live: _Live, base: _LossOf, layers: list[Layer] | None, steps: int, batch_size: int,
            clock: _Clock) -> Iterator[TrialResult]:
    """Evaluate the trials that trained to the end (stacked when the network is built-in)."""
    if not live.trials:
        return
    if layers is not None:
        params = live.state.params
        all_metrics: list[Metrics | Exception] = list(
            task.evaluate_outputs(lambda x: stacked_logits(layers, params, x), len(live.trials))
        )
    else:
        all_metrics = [_evaluate_one(task, _trial_model(live, base, i)) for i in range(len(live.trials))]
    for i, (trial, metrics) in enumerate(zip(live.trials, all_metrics)):
        if isinstance(metrics, BaseException):
            yield failed_result(trial.trial_id, metrics, clock.share())  # exactly as the reference records it
        elif is_diverged(metrics.train_loss, live.initial[i]) or not math.isfinite(metrics.val_loss):
            yield _diverged(trial, live.curves[i], steps, batch_size, clock)
        else:
            yield TrialResult(trial.trial_id, "ok", metrics.train_loss, metrics.val_loss, metrics.val_error, steps,
                              steps * batch_size, clock.share(), tuple(live.curves[i]), None,
                              tensors_digest(_trial_state(live, i)))


def _evaluate_one(task: Task, model: nn.Module) -> Metrics | Exception:
    """A user model may raise here too: that trial fails with its error, the others do not."""
    try:
        return task.evaluate(model)
    except Exception as exc:
        return exc
