"""The worker runtime: what every executor shares, wherever its workers run.

Work units (chunks of a cohort) and how many workers and threads train them; the bootstrap of a
worker process (torch threads, determinism, memory kept by glibc), the task built once per
worker, and the training of one unit. hpconj.executor runs units in this process or in local
worker processes, hpconj.ray_executor as Ray tasks; both import this module, never each other.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from hpconj.config import TaskSpec
from hpconj.engine import TrialResult, get_engine
from hpconj.engine.base import retain_freed_memory
from hpconj.tasks import Task, build_task
from hpconj.trials import Cohort, Trial

# Below this many optimizer steps summed over trials (~ten seconds of one core for a small
# model), starting worker processes costs more than it saves.
SMALL_SWEEP_STEPS = 50_000
# Trials a worker trains before reporting back: stacking gains little beyond ~64 (measured).
UNIT_TRIALS = 64

def apply_determinism(device: torch.device | None = None) -> dict[str, Any]:
    """Deterministic kernels everywhere (and the cuBLAS workspace CUDA needs for them)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # what torch.use_deterministic_algorithms(True) does for eager kernels; that function also
    # imports torch._inductor to set its flag (1.3 s in every process) for compiled code, which
    # hpconj never runs — set that flag too when something else has imported inductor
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {
        "use_deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "CUBLAS_WORKSPACE_CONFIG": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }


class ExecutorError(RuntimeError):
    """The executor cannot run the sweep: Ray missing or unreachable, a task that raised or was
    lost (the CLI reports it as one line, exit status 2)."""


@dataclass(frozen=True)
class WorkUnit:
    """A piece of a cohort: trials of one task (architecture) and batch size."""

    batch_size: int
    trials: tuple[Trial, ...]

    @property
    def task(self) -> TaskSpec:
        return self.trials[0].task


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def split_units(cohorts: Sequence[Cohort], todo: set[str], chunk_size: int, workers: int) -> list[WorkUnit]:
    """Work units of at most `chunk_size` unfinished trials; with several workers, each cohort is cut
    into at least `workers` pieces so that no worker waits while another has a whole cohort, and
    into pieces of at most UNIT_TRIALS, since a worker returns a piece only when all of it is done
    (a killed sweep loses the pieces in flight, never a recorded trial)."""
    units = []
    for cohort in cohorts:
        trials = [t for t in cohort.trials if t.trial_id in todo]
        if not trials:
            continue
        size = min(chunk_size, UNIT_TRIALS, max(1, math.ceil(len(trials) / workers)))
        for start in range(0, len(trials), size):
            units.append(WorkUnit(cohort.batch_size, tuple(trials[start : start + size])))
    # Largest cost first (small batches take the most steps), so the tail of the run is short.
    return sorted(units, key=lambda u: -len(u.trials) / u.batch_size)


@dataclass(frozen=True)
class Resources:
    workers: int
    threads: int

    @classmethod
    def choose(cls, workers: int | None, threads: int | None, device: torch.device, units: int,
               trial_steps: int | None = None) -> Resources:
        """Defaults: one worker per core (one on a GPU, or for a sweep too small to repay the few
        seconds each worker takes to start); one torch thread per worker on the CPU.

        One thread, because with several MKL may split a matrix product differently depending
        on its shape — and so on how many trials are stacked — which would make a trial's bits
        depend on its cohort. Parallelism comes from the workers instead.
        """
        cores = usable_cores()
        if workers is None:
            small = trial_steps is not None and trial_steps < SMALL_SWEEP_STEPS
            workers = 1 if device.type == "cuda" or small else cores
        workers = max(1, min(workers, max(units, 1)))
        if threads is None or threads <= 0:
            threads = max(1, cores // workers) if device.type == "cuda" else 1
        return cls(workers, threads)


# ----------------------------------------------------------------------------- in a worker
_TASKS: dict[str, Task] = {}
_PREPARED: dict[str, object] = {}


def prepare_worker(threads: int) -> None:
    """Once per worker process (and again only if the thread count changes): torch threads,
    deterministic kernels, and glibc keeping freed memory (a worker's heap is hpconj's alone)."""
    if _PREPARED.get("threads") != threads:
        torch.set_num_threads(threads)
        _PREPARED["threads"] = threads
    if "determinism" not in _PREPARED:
        _PREPARED["determinism"] = apply_determinism()
        retain_freed_memory()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch threads set to `threads` while inside, restored after: a trial trained again outside
    the workers (hpconj.sweep.measure_final_noise) must use their thread count, since a matrix
    product may round differently when split over another number of threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def task_on_worker(spec: TaskSpec, device: str) -> tuple[Task, bool]:
    """The task of `spec` on `device`, built once per worker process; (task, built just now)."""
    key = f"{spec.model_dump_json()}@{device}"
    built = key not in _TASKS
    if built:
        _TASKS[key] = build_task(spec).to(torch.device(device))
    return _TASKS[key], built


def run_unit(engine_name: str, chunk_size: int, unit: WorkUnit, device: str) -> list[TrialResult]:
    """Train one unit in a prepared worker; the results go back to the main process."""
    engine = get_engine(engine_name, chunk_size=chunk_size)
    task, _ = task_on_worker(unit.task, device)
    return list(engine.run(task, unit.trials, torch.device(device)))


class Executor(Protocol):
    """Where work units run, as run_sweep sees it: executor.LocalExecutor and ray_executor.RayExecutor
    provide it, executor.make_executor chooses one. Leaving it as a context manager stops its workers."""

    kind: str
    engine_name: str
    resources: Resources
    chunk_size: int

    def run(self, task: Task, spec: TaskSpec, units: list[WorkUnit], device: torch.device) -> Iterator[TrialResult]: ...

    def run_batches(self, task: Task, spec: TaskSpec, units: list[WorkUnit],
                    device: torch.device) -> Iterator[list[TrialResult]]: ...

    def start(self, spec: TaskSpec, device: torch.device) -> None: ...

    def close(self, terminate: bool = False) -> None: ...

    def manifest_info(self) -> dict[str, Any]: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

