"""The reference engine: one trial at a time with torch.optim. Readable; the oracle.

For step t = 1..T: loss_t = task.batch_loss(model, batch_t) (mean over the batch), backward,
then one step of the trial's optimizer (`hpconj.optim.reference_optimizer`: torch.optim's
SGD, Adam, RMSprop, Adagrad with `trial.native.torch_kwargs()`, or hpconj's per-example rules) —
the parameterization has already turned (η, B, β) into native settings, so this loop is the same
for every parameterization. Rules that read per-example second moments get them from a plain
loop over the batch's examples (`example_second_moments`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import torch

from hpconj.engine.base import checkpoint, checkpoint_steps, curve_steps, failed_result, is_diverged, params_digest
from hpconj.optim import lr_scales, reference_optimizer
from hpconj.records import DIVERGED, OK, Checkpoint, CurvePoint, TrialResult
from hpconj.tasks import Task
from hpconj.tasks.base import example_gradients
from hpconj.trials import Trial


class ReferenceEngine:
    name = "reference"

    def run(self, task: Task, trials: Sequence[Trial], device: torch.device) -> Iterator[TrialResult]:
        for trial in trials:
            yield train_trial(task, trial, device)


def train_trial(task: Task, trial: Trial, device: torch.device) -> TrialResult:
    """Train one trial; never raises: a user error becomes status `failed`."""
    start = time.perf_counter()
    steps = task.steps(trial.budget, trial.batch_size)
    try:
        return _train(task, trial, device, steps, start)
    except Exception as exc:  # a user model or data function that raises must not stop the sweep
        return failed_result(trial.trial_id, exc, time.perf_counter() - start)


def trained_model(task: Task, trial: Trial, device: torch.device) -> tuple[torch.nn.Module, TrialResult]:
    """The trial trained again by the reference engine, and its final model (for measurements on
    it, such as the noise scale at the end of training); raises what a user model raises."""
    holder: list[torch.nn.Module] = []
    result = _train(task, trial, device, task.steps(trial.budget, trial.batch_size), time.perf_counter(), holder)
    return holder[0], result


def _train(task: Task, trial: Trial, device: torch.device, steps: int, start: float,
           keep: list[torch.nn.Module] | None = None) -> TrialResult:
    model = task.init_model(trial.seed).to(device)
    if keep is not None:
        keep.append(model)
    model.train()
    native = trial.native
    named = list(model.named_parameters())
    scales = lr_scales(native, named)
    optimizer = reference_optimizer(native, [p for _, p in named],
                                    None if scales is None else [scales[n] for n, _ in named])
    initial = task.reference_loss(model)
    record_at = curve_steps(steps)
    marks = checkpoint_steps(trial.budget, steps)
    checkpoints: list[Checkpoint] = []
    curve = [CurvePoint(0, 0, initial)]
    recent_sum, last_record = 0.0, 0  # float64 running sum: the cohort engine sums the same way
    status, done = OK, 0
    for batch in task.batch_stream(trial.seed, trial.batch_size, steps, device):
        model.zero_grad(set_to_none=True)
        loss = task.batch_loss(model, batch)
        loss.backward()
        optimizer.step(example_second_moments(task, model, batch) if native.per_example else None)
        done += 1
        value = loss.item()
        recent_sum += value
        if not math.isfinite(value):
            status = DIVERGED
            break
        if done in record_at:
            point = task.curve_loss(model, recent_sum / (done - last_record))
            curve.append(CurvePoint(done, done * trial.batch_size, point))
            recent_sum, last_record = 0.0, done
            if is_diverged(point, initial):
                status = DIVERGED
                break
        if done in marks and done < steps:
            checkpoints.append(checkpoint(marks[done], done, trial.batch_size, task.evaluate(model)))
    if status == OK:
        metrics = task.evaluate(model)
        if is_diverged(metrics.train_loss, initial) or not math.isfinite(metrics.val_loss):
            status = DIVERGED
    if status == DIVERGED:
        inf = math.inf
        return TrialResult(trial.trial_id, DIVERGED, inf, inf, math.nan, done, done * trial.batch_size,
                           time.perf_counter() - start, tuple(curve), checkpoints=tuple(checkpoints))
    if steps in marks:
        checkpoints.append(checkpoint(marks[steps], steps, trial.batch_size, metrics))
    return TrialResult(
        trial.trial_id, OK, metrics.train_loss, metrics.val_loss, metrics.val_error, done,
        done * trial.batch_size, time.perf_counter() - start, tuple(curve), None, params_digest(model),
        tuple(checkpoints),
    )


def example_second_moments(task: Task, model: torch.nn.Module, batch: object) -> list[torch.Tensor]:
    """q = (1/B)·Σᵢ gᵢ², gᵢ the gradient of example i's loss (a batch of one), one example at a
    time with autograd: slow, and independent of the engines' batched formulas it checks."""
    params = list(model.parameters())
    sums = [torch.zeros_like(p) for p in params]
    size = 0
    for grads in example_gradients(task, model, batch, params):
        size += 1
        for total, g in zip(sums, grads):
            if g is not None:
                total.addcmul_(g, g)
    return [total.div_(size) for total in sums]
