"""The cohort engine: K trials of one cohort trained as one stacked computation.

Parameters are stacked along a leading trial dimension [K, ...] and every step computes all K
losses and gradients at once: with hand-written batched kernels for the built-in networks
(engine/stacked.py), and with `vmap(grad_and_value(loss))` over `functional_call` for any
other model (user models, the quadratic). Each trial reads its own batch; trials of one seed
share batches (common random numbers).

The update is the reference engine's optimizer, per trial, applied to the whole stack with each
trial's settings as [K] columns (hpconj.optim): torch.optim.SGD, Adam, RMSprop, Adagrad with
the same elementwise kernels, so on the CPU each trial's weights equal the reference engine's bit
for bit (tested), and hpconj's per-example rules and McAllester's SGD. Those read q, the mean of
the squared per-example gradients: for the built-in networks from one extra batched product per
layer (q_W = B·(G∘G)ᵀ·(h∘h), engine/stacked.py), for any other model from torch.func per-example
gradients, vmap over examples inside vmap over trials, in chunks of examples that bound memory.
Their q is the reference's up to rounding (the reference sums the examples one by one), so those
trials agree with it to a stated tolerance, not bit for bit. A chunk whose trials follow several
rules (`Native.group`) trains as one stack per rule.

Batch losses are kept per curve window and summed in float64 in step order when a curve point
is recorded, exactly as the reference engine sums them; the first non-finite loss of a trial
marks it diverged at that step. A trial that diverges is dropped from the stack at that point;
the others go on unchanged. Cohorts larger than `chunk_size` trials are trained in chunks, so
memory is bounded by chunk_size × (3 copies of the parameters + one batch of inputs) plus the
activations of one sub-stack of the chunk: on the CPU the built-in networks' steps run a few
trials at a time, about 4 MiB of activations a layer (`stacked.sub_stacks`); on a GPU, and for
other models, the whole chunk's.
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
from torch.func import functional_call, grad, grad_and_value, stack_module_state, vmap
from torch.utils._pytree import tree_flatten, tree_map

from hpconj.engine import base as engine_base
from hpconj.engine.base import (checkpoint, checkpoint_steps, curve_steps, failed_result, is_diverged,
                                tensors_digest)
from hpconj.optim import StackedUpdate, lr_scales, stack_order, stacked_update
from hpconj.records import DIVERGED, OK, Checkpoint, CurvePoint, TrialResult
from hpconj.engine.reference import train_trial
from hpconj.engine.stacked import Layer, layer_plan, stacked_logits, stacked_loss_and_grads
from hpconj.tasks import Metrics, Task
from hpconj.tasks.base import LossOf
from hpconj.tasks.supervised import SupervisedTask
from hpconj.trials import Trial
from hpconj.engine.names import DEFAULT_CHUNK

log = logging.getLogger("hpconj")  # shown with --debug


class CohortEngine:
    name = "cohort"

    def __init__(self, chunk_size: int = DEFAULT_CHUNK):
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size

    def run(self, task: Task, trials: Sequence[Trial], device: torch.device) -> Iterator[TrialResult]:
        for start in range(0, len(trials), self.chunk_size):
            yield from self._run_chunk(task, list(trials[start : start + self.chunk_size]), device)

    def _run_chunk(self, task: Task, chunk: list[Trial], device: torch.device) -> Iterator[TrialResult]:
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


def _by_rule(trials: Sequence[Trial]) -> list[list[Trial]]:
    """The trials grouped by update rule, each group in the given order."""
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(trial.native.group, []).append(trial)
    return list(groups.values())


@dataclass(frozen=True)
class _Clock:
    """A trial's wall time in a cohort: its equal share of the chunk's time so far."""

    start: float
    trials: int

    def share(self) -> float:
        return (time.perf_counter() - self.start) / self.trials


class _Stack:
    """Parameters and gradients of K trials, each [K, ...] per parameter, their optimizer's
    stacked state, and (for per-example rules) q, the per-example second moments."""

    def __init__(self, params: dict[str, torch.Tensor], update: StackedUpdate):
        self.params = {n: p.contiguous() for n, p in params.items()}
        self.update = update
        self.grads = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.second = {n: torch.zeros_like(p) for n, p in self.params.items()} if update.per_example else None

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def step(self) -> None:
        self.update.step(self.params, self.grads, self.second)

    def keep(self, rows: torch.Tensor) -> _Stack:
        pick = {n: v.index_select(0, rows) for n, v in self.params.items()}
        return _Stack(pick, self.update.keep(rows))


@dataclass
class _Live:
    """The trials still training, with their per-trial bookkeeping."""

    trials: list[Trial]
    state: _Stack
    buffers: dict[str, torch.Tensor]
    initial: list[float]
    curves: list[list[CurvePoint]]
    checkpoints: list[list[Checkpoint]]

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.int64, device=self.state.device)
        self.trials = [self.trials[i] for i in rows]
        self.state = self.state.keep(index)
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        self.initial = [self.initial[i] for i in rows]
        self.curves = [self.curves[i] for i in rows]
        self.checkpoints = [self.checkpoints[i] for i in rows]


def train_cohort(task: Task, trials: list[Trial], device: torch.device,
                 models: dict[str, nn.Module] | None = None) -> Iterator[TrialResult]:
    """Train trials that share task, batch size and budget; yield each result when it ends; with
    `models`, put the final model of each trial that trained to the end there (by trial id).

    Trials of different update rules (`Native.group`) train as separate stacks, one after the other."""
    for group in _by_rule(trials):
        yield from _train_stack(task, group, device, models)


def trained_models(task: Task, trials: list[Trial], device: torch.device
                   ) -> dict[str, tuple[nn.Module, TrialResult]]:
    """Trials trained again as one stack, with their final models (for measurements on them, such
    as the noise scale at the end of training): the reference engine's `trained_model` for many
    trials at once, without torch.optim (whose first use imports torch._dynamo, over a second)."""
    models: dict[str, nn.Module] = {}
    results = list(train_cohort(task, trials, device, models))
    return {r.trial_id: (models[r.trial_id], r) for r in results if r.trial_id in models}


def _train_stack(task: Task, trials: list[Trial], device: torch.device,
                 models: dict[str, nn.Module] | None = None) -> Iterator[TrialResult]:
    """Train trials that share task, batch size, budget and update rule as one stack."""
    trials = [trials[i] for i in stack_order([t.native for t in trials])]
    clock = _Clock(time.perf_counter(), len(trials))
    batch_size = trials[0].batch_size
    steps = task.steps(trials[0].budget, batch_size)
    assert all(t.batch_size == batch_size and t.budget == trials[0].budget for t in trials)
    seeds = sorted({t.seed for t in trials})
    init = {s: task.init_model(s).to(device) for s in seeds}
    for model in init.values():
        model.train()
    initial_loss = {s: task.reference_loss(init[s]) for s in seeds}
    base = LossOf(task, init[seeds[0]])
    params, buffers = stack_module_state([LossOf(task, init[t.seed]) for t in trials])
    params = {k: v.detach() for k, v in params.items()}
    live = _Live(
        trials=list(trials),
        state=_Stack(params, stacked_update([t.native for t in trials], params,
                                            lr_scales(trials[0].native, base.named_parameters()))),
        buffers=buffers,
        initial=[initial_loss[t.seed] for t in trials],
        curves=[[CurvePoint(0, 0, initial_loss[t.seed])] for t in trials],
        checkpoints=[[] for _ in trials],
    )
    layers = layer_plan(base.model) if isinstance(task, SupervisedTask) and not buffers else None
    step_fn = _step_function(task, base, layers)
    batches = _BatchStacker(task, seeds, batch_size, steps, device)
    batches.select(live.trials)
    record_at = curve_steps(steps)
    marks = checkpoint_steps(trials[0].budget, steps)
    history: list[torch.Tensor] = []  # batch losses [K] of each step since the last curve point
    for step in range(1, steps + 1):
        losses = step_fn(live.state, live.buffers, batches.next())
        live.state.step()
        history.append(losses)
        if step in record_at:
            before = len(live.trials)
            yield from _record(task, live, base, step, history, batch_size, clock)
            history = []
            if not live.trials:
                return
            if len(live.trials) < before:
                batches.select(live.trials)
        if step in marks and step < steps and live.trials:
            before = [t.trial_id for t in live.trials]
            yield from _checkpoint(task, live, base, layers, marks[step], step, batch_size, clock)
            if not live.trials:
                return
            if len(live.trials) < len(before):  # a user model that raised: its rows leave the pending losses too
                index = {trial_id: i for i, trial_id in enumerate(before)}
                rows = torch.tensor([index[t.trial_id] for t in live.trials], dtype=torch.int64,
                                    device=history[0].device if history else None)
                history = [losses.index_select(0, rows) for losses in history]
                batches.select(live.trials)
    if models is not None:
        models.update({t.trial_id: _trial_model(live, base, i) for i, t in enumerate(live.trials)})
    yield from _finish(task, live, base, layers, steps, batch_size, clock, marks)


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
        rows = self.stacker.rows
        first = self.per_seed[0]
        if type(first) is tuple and all(isinstance(leaf, torch.Tensor) for leaf in first):
            # (x, y), the supervised batch: without pytree's per-step flattening, which costs
            # as much as a whole step's GEMMs at small batch sizes
            return tuple(torch.stack(parts).index_select(0, rows) for parts in zip(*self.per_seed))
        stacked = tree_map(lambda *xs: torch.stack(xs), *self.per_seed)
        return tree_map(lambda x: x.index_select(0, rows), stacked)


StepFunction = Callable[[_Stack, dict[str, torch.Tensor], _StepBatch], torch.Tensor]


def _step_function(task: Task, base: LossOf, layers: list[Layer] | None) -> StepFunction:
    """(state, buffers, batch) → per-trial batch losses [K], with the gradients in state.grad.

    Built-in networks (`layers` given) get the hand-written stacked kernels (engine/stacked.py);
    any other model gets torch.func's vmap(grad_and_value) over functional_call.
    """
    if layers is not None:
        classes = task.data.classes

        def stacked(state: _Stack, buffers: dict[str, torch.Tensor], batch: _StepBatch) -> torch.Tensor:
            x, y = batch.stacked()
            return stacked_loss_and_grads(layers, state.params, x, y, classes, out=state.grads, second=state.second)

        return stacked

    def loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], batch: object) -> torch.Tensor:
        return functional_call(base, (p, b), (batch,))

    grad_fn = vmap(grad_and_value(loss), in_dims=(0, 0, 0), randomness="different")

    def example_loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], example: object) -> torch.Tensor:
        return loss(p, b, tree_map(lambda t: t.unsqueeze(0), example))

    # per trial (outer vmap), per example of its batch (inner vmap): [K, n, ...] gradients
    example_grads_fn = vmap(vmap(grad(example_loss), in_dims=(None, None, 0), randomness="different"),
                            in_dims=(0, 0, 0), randomness="different")

    def generic(state: _Stack, buffers: dict[str, torch.Tensor], batch: _StepBatch) -> torch.Tensor:
        stacked = batch.stacked()
        params = state.params
        single = next(iter(params.values())).shape[0] == 1
        if single:  # a stack of one, computed as a stack of two (see _doubled)
            params, buffers, stacked = _doubled(params), _doubled(buffers), tree_map(_doubled_tensor, stacked)
        grads, losses = grad_fn(params, buffers, stacked)
        for name, view in state.grads.items():
            view.copy_(grads[name][:1] if single else grads[name])
        if state.second is not None:
            _example_second_moments(example_grads_fn, state, params, buffers, stacked)
        return losses[:1].detach() if single else losses.detach()

    return generic




def _doubled(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every stacked tensor [1, ...] as [2, ...], its row twice. vmap computes some operations with
    one weight per trial as a different kernel for one trial than for several (a convolution is a
    grouped one only for two or more), so a trial's bits would depend on how many trials share its
    stack, which shrinks as trials diverge; a stack of one computed as two keeps them the same."""
    return {name: _doubled_tensor(t) for name, t in tensors.items()}


def _doubled_tensor(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.expand(2, *tensor.shape[1:]) if tensor.shape[0] == 1 else tensor


def _example_second_moments(example_grads_fn: Callable, state: _Stack, params: dict[str, torch.Tensor],
                            buffers: dict[str, torch.Tensor], stacked: object) -> None:
    """state.second ← q = (1/B)·Σᵢ gᵢ² per trial, from per-example gradients taken a chunk of
    examples at a time so that at most EXAMPLE_GRADIENT_FLOATS of them exist at once (or one
    example's, for every trial, if that is more). `params` are the state's, or a stack of one
    doubled (_doubled): only the state's own rows are kept."""
    leaves = tree_flatten(stacked)[0]
    trials, size = leaves[0].shape[0], leaves[0].shape[1]
    floats = sum(p[0].numel() for p in params.values())
    chunk = max(1, engine_base.EXAMPLE_GRADIENT_FLOATS // max(1, trials * floats))
    for total in state.second.values():
        total.zero_()
    for start in range(0, size, chunk):
        part = tree_map(lambda t: t[:, start : start + chunk], stacked)
        grads = example_grads_fn(params, buffers, part)
        for name, total in state.second.items():
            g = grads[name][: total.shape[0]]
            total.add_((g * g).sum(1))
    for total in state.second.values():
        total.div_(size)


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


def _record(task: Task, live: _Live, base: LossOf, step: int, history: list[torch.Tensor], batch_size: int,
            clock: _Clock) -> Iterator[TrialResult]:
    """Add a curve point to every live trial; finish the ones that diverged."""
    window = len(history)
    sums, first_bad = _window_sums(history)
    keep: list[int] = []
    for i, trial in enumerate(live.trials):
        if first_bad[i] >= 0:
            yield _diverged(trial, live.curves[i], step - window + first_bad[i] + 1, batch_size, clock,
                           live.checkpoints[i])
            continue
        model = _trial_model(live, base, i) if task.curve_needs_model else None
        value = task.curve_loss(model, sums[i] / window)
        live.curves[i].append(CurvePoint(step, step * batch_size, value))
        if is_diverged(value, live.initial[i]):
            yield _diverged(trial, live.curves[i], step, batch_size, clock, live.checkpoints[i])
            continue
        keep.append(i)
    if len(keep) < len(live.trials):
        live.keep(keep)


def _trial_state(live: _Live, i: int) -> dict[str, torch.Tensor]:
    """Trial i's parameters and buffers, named as in its own model's state_dict."""
    merged = {**live.state.params, **live.buffers}
    return {k.removeprefix("model."): v[i] for k, v in merged.items()}


def _trial_model(live: _Live, base: LossOf, i: int) -> nn.Module:
    """Trial i's weights loaded into a copy of the base model."""
    model = copy.deepcopy(base.model)
    model.load_state_dict(_trial_state(live, i))
    return model


def _diverged(trial: Trial, curve: list[CurvePoint], step: int, batch_size: int, clock: _Clock,
              checkpoints: list[Checkpoint] = ()) -> TrialResult:
    """A trial that diverged at `step`; the checkpoints it passed before (the reference stops at
    the step it diverges, so one taken at or after it is not kept)."""
    inf = math.inf
    kept = tuple(c for c in checkpoints if c.step < step)
    return TrialResult(trial.trial_id, DIVERGED, inf, inf, math.nan, step, step * batch_size, clock.share(),
                       tuple(curve), checkpoints=kept)


def _evaluate_live(task: Task, live: _Live, base: LossOf, layers: list[Layer] | None) -> list[Metrics | Exception]:
    """Every live trial's metrics on the full train and validation sets (stacked for the built-in
    networks), as the reference engine computes them one model at a time."""
    if layers is not None:
        params = live.state.params
        return list(task.evaluate_outputs(lambda x: stacked_logits(layers, params, x), len(live.trials)))
    return [_evaluate_one(task, _trial_model(live, base, i)) for i in range(len(live.trials))]


def _checkpoint(task: Task, live: _Live, base: LossOf, layers: list[Layer] | None, fraction: float, step: int,
                batch_size: int, clock: _Clock) -> Iterator[TrialResult]:
    """Record a checkpoint of every live trial; a user model that raises fails its trial there."""
    keep: list[int] = []
    for i, (trial, metrics) in enumerate(zip(live.trials, _evaluate_live(task, live, base, layers))):
        if isinstance(metrics, BaseException):
            yield failed_result(trial.trial_id, metrics, clock.share())
            continue
        live.checkpoints[i].append(checkpoint(fraction, step, batch_size, metrics))
        keep.append(i)
    if len(keep) < len(live.trials):
        live.keep(keep)


def _finish(task: Task, live: _Live, base: LossOf, layers: list[Layer] | None, steps: int, batch_size: int,
            clock: _Clock, marks: dict[int, float]) -> Iterator[TrialResult]:
    """Evaluate the trials that trained to the end (stacked when the network is built-in)."""
    if not live.trials:
        return
    all_metrics = _evaluate_live(task, live, base, layers)
    for i, (trial, metrics) in enumerate(zip(live.trials, all_metrics)):
        if isinstance(metrics, BaseException):
            yield failed_result(trial.trial_id, metrics, clock.share())  # exactly as the reference records it
        elif is_diverged(metrics.train_loss, live.initial[i]) or not math.isfinite(metrics.val_loss):
            yield _diverged(trial, live.curves[i], steps, batch_size, clock, live.checkpoints[i])
        else:
            final = [checkpoint(marks[steps], steps, batch_size, metrics)] if steps in marks else []
            yield TrialResult(trial.trial_id, OK, metrics.train_loss, metrics.val_loss, metrics.val_error, steps,
                              steps * batch_size, clock.share(), tuple(live.curves[i]), None,
                              tensors_digest(_trial_state(live, i)), tuple(live.checkpoints[i] + final))


def _evaluate_one(task: Task, model: nn.Module) -> Metrics | Exception:
    """A user model may raise here too: that trial fails with its error, the others do not."""
    try:
        return task.evaluate(model)
    except Exception as exc:
        return exc
