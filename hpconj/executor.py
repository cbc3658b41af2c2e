"""Where work units run: in this process, or in N worker processes on this machine.

A work unit is one chunk of a cohort (trials of one batch size). Workers only compute; the
main process alone writes the store, one transaction per trial, so resume and integrity do not
depend on how the work was spread. Torch threads are set so that workers × threads ≤ cores:
oversubscribed threads collapse the throughput of small models.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

from hpconj.config import TaskSpec
from hpconj.engine import TrialResult, get_engine
from hpconj.repro import apply_determinism
from hpconj.tasks import Task, build_task
from hpconj.trials import Cohort, Trial


# Below this many optimizer steps summed over trials (~ten seconds of one core for a small
# model), starting worker processes costs more than it saves.
SMALL_SWEEP_STEPS = 50_000
# Trials a worker trains before reporting back: stacking gains little beyond ~64 (measured).
UNIT_TRIALS = 64


@dataclass(frozen=True)
class WorkUnit:
    batch_size: int
    trials: tuple[Trial, ...]


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def split_units(cohorts: Sequence[Cohort], todo: set[str], chunk_size: int, workers: int) -> list[WorkUnit]:
    """Chunks of at most `chunk_size` unfinished trials; with several workers, each cohort is cut
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


class LocalExecutor:
    """Runs work units in this process (1 worker) or in a pool of spawned worker processes.

    Use it as a context manager: the pool starts once (each worker imports torch and builds
    the task once, a few seconds) and serves every `run` until the block ends.
    """

    def __init__(self, engine: str, resources: Resources, chunk_size: int):
        self.engine_name = engine
        self.resources = resources
        self.chunk_size = chunk_size
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, terminate: bool = False) -> None:
        """Stop the workers; `terminate` kills them mid-unit (after an interrupt)."""
        if self._pool is None:
            return
        if terminate:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        self._pool.shutdown(wait=not terminate, cancel_futures=True)
        self._pool = None

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
            self._pool = ProcessPoolExecutor(
                max_workers=self.resources.workers, mp_context=context, initializer=_init_worker,
                initargs=(self.resources.threads, os.getpid()),
            )
        return self._pool

    def run(self, task: Task, spec: TaskSpec, units: list[WorkUnit], device: torch.device) -> Iterator[TrialResult]:
        if self.resources.workers == 1:
            torch.set_num_threads(self.resources.threads)
            apply_determinism()
            engine = get_engine(self.engine_name, chunk_size=self.chunk_size)
            for unit in units:
                yield from engine.run(task, unit.trials, device)
            return
        pool = self._workers()
        pending: set[Future] = {
            pool.submit(_run_unit, self.engine_name, self.chunk_size, spec, unit, str(device)) for unit in units
        }
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
        except BaseException:
            self.close(terminate=True)
            raise

    def warm_up(self, spec: TaskSpec, device: torch.device) -> None:
        """Start the workers and build the task in each (for benchmarks that time the work alone)."""
        if self.resources.workers > 1:
            pool = self._workers()
            list(pool.map(_build_task, [spec] * self.resources.workers, [str(device)] * self.resources.workers))


_TASKS: dict[str, Task] = {}


def _init_worker(threads: int, parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C is the main process's to handle: it records what came back and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    apply_determinism()


def _die_with_parent(parent: int) -> None:
    """A worker whose sweep was killed (even with SIGKILL) stops instead of computing on:
    the kernel's parent-death signal where there is one (Linux), and a watchdog thread."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the sweep died while this worker was starting
        os._exit(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _build_task(spec: TaskSpec, device: str) -> Task:
    key = f"{spec.model_dump_json()}@{device}"
    if key not in _TASKS:
        _TASKS[key] = build_task(spec).to(torch.device(device))
        time.sleep(0.2)  # so that warm_up's calls spread over all workers
    return _TASKS[key]


def _run_unit(engine_name: str, chunk_size: int, spec: TaskSpec, unit: WorkUnit, device: str) -> list[TrialResult]:
    """In a worker: build the task (once) and train one unit; results go back to the main process."""
    engine = get_engine(engine_name, chunk_size=chunk_size)
    return list(engine.run(_build_task(spec, device), unit.trials, torch.device(device)))
