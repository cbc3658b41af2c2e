"""What a sweep will cost, known before it runs: trials, optimizer steps and wall time.

`hpconj validate` prints it; `hpconj sweep` refuses a sweep above the limit — more than
MAX_TRIALS trials, or an estimated MAX_SECONDS — unless `--yes` (hpconj.sweep.plan_sweep). The
counts are arithmetic on the config: nothing here expands the trials, so a sweep of 10^7 trials
is judged in about a second instead of minutes and gigabytes.

The wall time is a **plain-loop estimate**: a short probe times a few plain SGD steps (with
momentum, as torch.optim.SGD takes them) of seed 0's model on one thread at the sweep's batch
sizes; seconds per step × the sweep's optimizer steps, divided by the worker processes a CPU
sweep uses by default. The stacked cohort engine (the default) is usually several times faster,
so this is an upper-ish bound. It leaves out what is not an optimizer step (building models,
evaluating them) and the extra work per step of the per-example rules (adaptive `conjugate`,
`mcallester`). The probe runs on the CPU: for a sweep on CUDA it is stated as a CPU figure and
the time limit does not apply. A model that raises in the probe makes the time unknown, never an
error (the sweep reports the failing trials as it always does).
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING

from hpconj.config import Config

if TYPE_CHECKING:  # torch is imported where the model is timed: the counts and `validate` need none
    import torch
    from torch import nn

    from hpconj.tasks import Task

MAX_TRIALS = 1_000_000
MAX_SECONDS = 7 * 24 * 3600  # a week of plain-loop time on this machine
PROBE_STEPS = 10  # timed steps per probed batch size, after one untimed warm-up step
PROBE_BATCH_SIZES = 6  # batch sizes probed at most; the others are interpolated between them
PROBE_SECONDS = 0.6  # the probe's timed steps stop after about this long (the two end sizes always take one)


@dataclass(frozen=True)
class SweepCost:
    """The size of a sweep and its estimated wall time on this machine."""

    trials: int
    steps: int  # optimizer steps summed over all trials
    batch_steps: Mapping[int, int]  # batch size → optimizer steps per trial
    seconds: float | None  # plain-loop wall time; None when the probe failed
    workers: int  # worker processes the estimate divides by
    on_cpu: bool  # whether the sweep runs where the probe ran (else the time limit does not apply)
    problem: str = ""  # why `seconds` is None
    timed: bool = True  # False: no probe was asked for (`hpconj validate` without --time)

    @property
    def too_many_trials(self) -> bool:
        return self.trials > MAX_TRIALS

    @property
    def too_long(self) -> bool:
        return self.on_cpu and self.seconds is not None and self.seconds > MAX_SECONDS

    @property
    def exceeds_limit(self) -> bool:
        """Whether `hpconj sweep` refuses this sweep without --yes."""
        return self.too_many_trials or self.too_long

    def time_text(self) -> str:
        """'about 2 min on this machine', or why the time is unknown."""
        if not self.timed:
            return "time not estimated (hpconj validate --time times the model)"
        if self.seconds is None:
            return f"time unknown, the timing probe failed: {self.problem}"
        where = "this machine" if self.on_cpu else "this machine's CPU"
        return f"about {human_duration(self.seconds)} on {where}"

    def basis(self) -> str:
        """How the time was estimated: 'plain-loop estimate, 2 workers'."""
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        cuda = "" if self.on_cpu else "; the sweep's CUDA device is not timed"
        return f"plain-loop estimate, {workers}{cuda}"

    def summary(self) -> str:
        """The cost line of `hpconj validate`."""
        basis = f" ({self.basis()})" if self.seconds is not None else ""
        return f"{self.trials:,} trials, {self.steps:,} optimizer steps, {self.time_text()}{basis}"

    def limit_text(self) -> str:
        """The limit this sweep exceeds, in words ('' when it exceeds none)."""
        if self.too_many_trials:
            return f"the limit of {MAX_TRIALS:,} trials"
        if self.too_long:
            return f"the limit of {human_duration(MAX_SECONDS)} (plain-loop estimate)"
        return ""

    def refusal(self) -> str:
        """The one line with which `hpconj sweep` refuses a sweep above the limit."""
        basis = f", {self.basis()}" if self.seconds is not None else ""
        return (f"sweep: {self.trials:,} trials ({self.steps:,} optimizer steps, {self.time_text()}{basis}) exceed "
                f"{self.limit_text()}; pass --yes to run it anyway")


class SweepError(RuntimeError):
    """Bad input discovered while preparing or running a sweep (exit status 2)."""


def batch_steps(config: Config, train_examples: int | None, classes: bool) -> dict[int, int]:
    """Optimizer steps per trial of each batch size, after the checks that need the data's size but
    no training: every batch size fits the training set (`train_examples`; None: a stream), takes at
    least one step, and clears the optimizer's own limits (McAllester's warm-up); val_error needs
    classes. Raises SweepError with one line."""
    from hpconj.optim import OPTIMIZERS

    if config.metric.name == "val_error" and train_examples is not None and not classes:
        raise SweepError("metric.name: val_error needs classes, but task.data is a regression target; "
                         "use val_loss or train_loss")
    entry = OPTIMIZERS[config.optimizer]
    steps = {}
    for b in config.sweep.batch_size:
        if train_examples is not None and b > train_examples:
            raise SweepError(f"sweep.batch_size: batch size {b} exceeds the {train_examples} training examples")
        steps[b] = config.budget.steps_for(b, train_examples)
        if steps[b] < 1:
            raise SweepError(f"budget: batch size {b} gets 0 steps; raise the budget or lower the batch size")
        problem = entry.check_steps(config.optimizer_settings, {b: steps[b]}) if entry.check_steps else None
        if problem is not None:
            raise SweepError(problem)
    return steps


def trials_per_batch_size(config: Config) -> int:
    """Trials sharing one batch size: architectures (the swept task axes' combinations) ×
    parameterizations × momenta × seeds × learning rates (for a bracket search, about how many it
    takes: hpconj.search.expected_lrs)."""
    from hpconj.search import expected_lrs

    architectures = math.prod(len(values) for values in config.sweep.task_axes().values())
    lrs = len(config.lrs) if config.lr_search is None else expected_lrs(config.lr_search)
    return architectures * len(config.parameterizations) * len(config.sweep.momentum) * len(config.seeds) * lrs


def trial_count(config: Config) -> int:
    """len(expand_trials(config)), without expanding: the product of the axes' lengths (about as
    many as a search takes)."""
    return len(config.sweep.batch_size) * trials_per_batch_size(config)


def sweep_steps(config: Config, batch_steps: Mapping[int, int]) -> int:
    """Optimizer steps summed over every trial (SweepPlan.total_steps, without expanding)."""
    return sum(batch_steps[b] for b in config.sweep.batch_size) * trials_per_batch_size(config)


def estimate_cost(config: Config, task: Task | None, batch_steps: Mapping[int, int]) -> SweepCost:
    """The sweep's trials, steps and plain-loop wall time; never raises for a failing model.

    `batch_steps` maps each batch size to its steps per trial, as plan_sweep computed (and checked)
    them: the probe must only see batch sizes the data can serve. Without a task (`hpconj validate`
    without --time) the time is not estimated, and nothing imports torch.
    """
    trials, steps = trial_count(config), sweep_steps(config, batch_steps)
    if task is None:
        return SweepCost(trials, steps, dict(batch_steps), None, 1, config.device == "cpu", timed=False)
    import torch

    from hpconj.workers import Resources

    cpu = torch.device("cpu")
    # Units are unknown before expanding; the trial count bounds them, so this is the default choice.
    workers = Resources.choose(None, None, cpu, units=trials, trial_steps=steps).workers
    on_cpu = runs_on_cpu(config.device)
    try:
        per_step = probe_step_seconds(task, config.sweep.batch_size)
    except Exception as exc:  # a user model may raise anything: the estimate is unknown, never an error
        problem = " ".join(f"{type(exc).__name__}: {exc}".split())
        return SweepCost(trials, steps, dict(batch_steps), None, workers, on_cpu, problem[:200])
    per_batch = trials_per_batch_size(config)
    seconds = sum(per_step[b] * batch_steps[b] * per_batch for b in config.sweep.batch_size) / workers
    return SweepCost(trials, steps, dict(batch_steps), seconds, workers, on_cpu)


def runs_on_cpu(device: str) -> bool:
    """Whether a config's `device` trains on the CPU here (without hpconj.sweep.resolve_device's
    checks: `validate` accepts a CUDA config on a machine without CUDA)."""
    import torch

    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def probe_step_seconds(task: Task, batch_sizes: Sequence[int]) -> dict[int, float]:
    """Seconds per plain SGD step of seed 0's model, on one CPU thread, for each batch size.

    At most PROBE_BATCH_SIZES sizes are timed: the smallest and the largest always, those between
    while the probe is within PROBE_SECONDS (so a model whose steps take long costs a few steps,
    not PROBE_STEPS at every size). The others are interpolated linearly: a step's cost is close
    to affine in the batch size. Raises whatever the model raises.
    """
    import torch

    order = probe_batch_sizes(batch_sizes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a CPU worker of the sweep trains: one thread each
    try:
        with torch.random.fork_rng(devices=[]):  # a user model's dropout must not move the caller's RNG
            model = task.init_model(0)
            model.train()
            measured: dict[int, float] = {}
            start = time.perf_counter()
            for batch_size in order:
                if len(measured) >= 2 and time.perf_counter() - start > PROBE_SECONDS:
                    break
                measured[batch_size] = _time_steps(task, model, batch_size, PROBE_SECONDS / len(order))
    finally:
        torch.set_num_threads(threads)
    return {b: _interpolated(measured, b) for b in batch_sizes}


def probe_batch_sizes(batch_sizes: Sequence[int]) -> list[int]:
    """The batch sizes to time, in order: the smallest, the largest, then up to
    PROBE_BATCH_SIZES − 2 spread evenly between them."""
    ordered = sorted(set(batch_sizes))
    ends = [ordered[0], ordered[-1]] if len(ordered) > 1 else ordered
    inner = ordered[1:-1]
    if len(inner) > PROBE_BATCH_SIZES - 2:
        count = PROBE_BATCH_SIZES - 2
        inner = sorted({inner[round(i * (len(inner) - 1) / max(count - 1, 1))] for i in range(count)})
    return ends + inner


def _time_steps(task: Task, model: nn.Module, batch_size: int, budget: float) -> float:
    """Median seconds of a training step at `batch_size` (next batch, loss, backward, SGD step),
    after one untimed step that pays first-call allocations; stops early once `budget` is spent.
    The median, because on a shared machine a few steps are slowed by the neighbours."""
    import torch

    batches = task.batch_stream(0, batch_size, PROBE_STEPS + 1, torch.device("cpu"))
    velocity: dict[str, torch.Tensor] = {}
    _plain_step(task, model, velocity, next(batches))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < PROBE_STEPS and (not times or time.perf_counter() - start < budget):
        began = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        _plain_step(task, model, velocity, batch)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _plain_step(task: Task, model: nn.Module, velocity: dict[str, torch.Tensor], batch: object) -> None:
    """One step as the reference engine takes it (hpconj.engine.reference) with heavy-ball SGD.

    The update is torch.optim.SGD's own for-loop (v ← β·v + g; θ ← θ − η·v) written out, because
    the first torch.optim optimizer of a process imports torch._dynamo: ~1.5 s, more than the
    whole probe. η = 0 keeps the weights at their initial values, so every step costs the same
    (a diverging model's infs and denormals would not).
    """
    import torch

    model.zero_grad(set_to_none=True)
    loss = task.batch_loss(model, batch)
    loss.backward()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.grad is None:
                continue
            if name in velocity:
                velocity[name].mul_(0.9).add_(param.grad)
            else:
                velocity[name] = param.grad.clone()
            param.add_(velocity[name], alpha=-0.0)
    loss.item()  # the engines read every loss; on a GPU this would also wait for the step


def _interpolated(measured: Mapping[int, float], batch_size: int) -> float:
    """Seconds per step at `batch_size`, linear between the nearest probed sizes around it."""
    if batch_size in measured:
        return measured[batch_size]
    sizes = sorted(measured)
    above = next(b for b in sizes if b > batch_size)
    below = max(b for b in sizes if b < batch_size)
    share = (batch_size - below) / (above - below)
    return measured[below] + share * (measured[above] - measured[below])


def human_duration(seconds: float) -> str:
    """'40 s', '12 min', '3.5 h', '7 days', '1,204 days'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.2g} h"
    days = seconds / 86400
    return f"{days:.2g} days" if days < 10 else f"{math.floor(days):,} days"
