"""Where work units run: in this process, in N worker processes on this machine, or (with
`--executor ray`, hpconj.ray_executor) as Ray tasks on a local Ray instance or a cluster.

A work unit is one chunk of a cohort (trials of one batch size). Workers only compute; the
main process alone writes the store, one transaction per trial, so resume and integrity do not
depend on how the work was spread. Torch threads are set so that workers × threads ≤ cores:
oversubscribed threads collapse the throughput of small models.

On CUDA the chunk size (trials stacked at once) is sized from the device's free memory
(`fit_chunk_size`), capped by `--chunk-size`. What both executors share (work units, resources,
the bootstrap of a worker) is hpconj.workers; `make_executor` chooses one.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from hpconj.config import TaskSpec
from hpconj.engine import TrialResult, get_engine
from hpconj.engine.base import EXAMPLE_GRADIENT_FLOATS
from hpconj.tasks import Task
from hpconj.workers import (Executor, ExecutorError, Resources, WorkUnit, apply_determinism, prepare_worker,
                            run_unit, task_on_worker)


EXECUTORS = ("local", "ray")
log = logging.getLogger("hpconj")
# The share of a CUDA device's free memory that all the chunks training on it at once may take
# together; the rest is left to the CUDA context, the caching allocator's slack and other processes.
CUDA_MEMORY_FRACTION = 0.5


class LocalExecutor:
    """Runs work units in this process (1 worker) or in a pool of spawned worker processes.

    Use it as a context manager: the pool starts once (each worker imports torch and builds
    the task once, a few seconds) and serves every `run` until the block ends.
    """

    kind = "local"

    def __init__(self, engine: str, resources: Resources, chunk_size: int):
        self.engine_name = engine
        self.resources = resources
        self.chunk_size = chunk_size
        self._pool: ProcessPoolExecutor | None = None

    def manifest_info(self) -> dict[str, Any]:
        """What manifest.json records about where the sweep ran."""
        return {"executor": self.kind}

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
        for results in self.run_batches(task, spec, units, device):
            yield from results

    def run_batches(self, task: Task, spec: TaskSpec, units: list[WorkUnit],
                    device: torch.device) -> Iterator[list[TrialResult]]:
        """The results as they come back: a worker's unit at once, or (in this process) each trial."""
        if self.resources.workers == 1:
            torch.set_num_threads(self.resources.threads)
            apply_determinism()
            engine = get_engine(self.engine_name, chunk_size=self.chunk_size)
            for unit in units:
                # the task passed in is the config's; a unit of another architecture builds its own
                own = task if unit.task == spec else task_on_worker(unit.task, str(device))[0]
                for result in engine.run(own, unit.trials, device):
                    yield [result]
            return
        pool = self._workers()
        pending: set[Future] = {
            pool.submit(run_unit, self.engine_name, self.chunk_size, unit, str(device)) for unit in units
        }
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BaseException:
            self.close(terminate=True)
            raise

    def warm_up(self, spec: TaskSpec, device: torch.device) -> None:
        """Start the workers and build the task in each (for benchmarks that time the work alone)."""
        if self.resources.workers > 1:
            pool = self._workers()
            list(pool.map(_build_task, [spec] * self.resources.workers, [str(device)] * self.resources.workers))

    def start(self, spec: TaskSpec, device: torch.device) -> None:
        """Start the workers now and build the task in each, without waiting: they import torch and
        build their data (a second or two each) while the main process plans the sweep, times the
        model and measures the noise scale."""
        if self.resources.workers > 1:
            pool = self._workers()
            for _ in range(self.resources.workers):
                pool.submit(_build_task, spec, str(device))


def _init_worker(threads: int, parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C is the main process's to handle: it records what came back and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prepare_worker(threads)


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


def _build_task(spec: TaskSpec, device: str) -> None:
    """warm_up's call in each worker: build the task there before any unit is timed."""
    _, built = task_on_worker(spec, device)
    if built:
        time.sleep(0.2)  # so that warm_up's calls spread over all workers


# ----------------------------------------------------------------------------- choosing one
def make_executor(kind: str, engine: str, *, task: Task, device: torch.device, batch_sizes: Sequence[int],
                  chunk_size: int, workers: int | None, threads: int | None, units: int,
                  trial_steps: int | None = None, address: str | None = None) -> Executor:
    """An executor of `kind` (local | ray), its chunk size fitted to the device's memory on CUDA.

    Raises ExecutorError for an unknown kind, `ray` without Ray installed, or a cluster that cannot
    be reached. The result is a context manager; leaving it stops workers (and a local Ray instance).
    """
    if kind not in EXECUTORS:
        raise ExecutorError(f"--executor: must be one of {' | '.join(EXECUTORS)}, got {kind!r}")
    if kind == "local":
        if address is not None:
            raise ExecutorError("--address is the address of a Ray cluster: it needs --executor ray")
        resources = Resources.choose(workers, threads, device, units=units, trial_steps=trial_steps)
        # the local workers all share the one device
        chunk = fit_chunk_size(task, max(batch_sizes), device, chunk_size, share=1 / resources.workers)
        return LocalExecutor(engine, resources, chunk)
    from hpconj.ray_executor import RayExecutor, gpu_share, import_ray

    import_ray()  # before anything else: without Ray this is the only line the user sees
    chunk = fit_chunk_size(task, max(batch_sizes), device, chunk_size, share=gpu_share())
    return RayExecutor(engine, chunk, device=device, workers=workers, threads=threads, units=units,
                       address=address)


# ----------------------------------------------------------------------------- memory per chunk
@dataclass(frozen=True)
class Footprint:
    """What one trial of a task holds on the device, measured on the seed-0 model."""

    params: int  # parameters of one model
    activations: int  # floats of layer outputs one example produces in a forward pass
    widest: int  # the largest layer output of one example
    eval_rows: int  # examples evaluated at once at the end of a trial
    fixed_bytes: int  # held once per process, whatever the chunk: the data on the device, scratch
    float_bytes: int = 4

    def trial_bytes(self, batch_size: int) -> int:
        """Bytes one stacked trial takes: 5 copies of the weights (weights, gradient, momentum or
        optimizer state, a second moment, the update's temporary), 3 tensors the size of every
        layer's output for one batch (output, pre-activation kept for the backward pass, its
        gradient), and two of the widest layer over the evaluation rows."""
        floats = 5 * self.params + 3 * batch_size * self.activations + 2 * self.eval_rows * self.widest
        return floats * self.float_bytes


# Per-example gradients (conjugate adaptive rules, mcallester) are computed in pieces of at most
# 2**24 floats (hpconj.engine.cohort): a fixed allowance per process.
_EXAMPLE_GRADIENT_BYTES = 4 * EXAMPLE_GRADIENT_FLOATS
_EVAL_ROWS = 8192  # hpconj.tasks.supervised evaluates whole data sets in pieces of this many examples


def measure_footprint(task: Task) -> Footprint:
    """Parameters of the task's seed-0 model, and the layer outputs of one example measured with
    forward hooks (on the CPU, eval mode, no gradients); from the parameter shapes where the model
    cannot take that example."""
    model = task.init_model(0)
    params = list(model.parameters())
    count = sum(p.numel() for p in params)
    float_bytes = params[0].element_size() if params else 4
    outputs: list[int] = []

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model.eval()
        with torch.no_grad():
            task.batch_loss(model, next(iter(task.batch_stream(0, 1, 1, torch.device("cpu")))))
    except Exception:  # a model that cannot take one example: estimate from the weights' shapes
        outputs = []
    finally:
        for handle in handles:
            handle.remove()
    if not outputs:
        dims = [int(d) for p in params for d in p.shape] or [1]
        outputs = [max(dims)] * max(1, sum(1 for m in leaves if any(True for _ in m.parameters(recurse=False))))
    data = getattr(task, "data", None)
    fixed = _EXAMPLE_GRADIENT_BYTES
    eval_rows = 0
    if data is not None:
        eval_rows = min(int(data.n_train), _EVAL_ROWS)
        fixed += sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_val, data.y_val))
    return Footprint(count, sum(outputs), max(outputs), eval_rows, fixed, float_bytes)


def chunk_size_for_memory(free_bytes: int, footprint: Footprint, batch_size: int, cap: int,
                          fraction: float = CUDA_MEMORY_FRACTION) -> int:
    """The most trials (at least 1, at most `cap`) whose stack fits in `fraction` of `free_bytes`."""
    budget = free_bytes * fraction - footprint.fixed_bytes
    fits = int(budget // footprint.trial_bytes(batch_size)) if budget > 0 else 0
    return max(1, min(cap, fits))


def fit_chunk_size(task: Task, batch_size: int, device: torch.device, cap: int, share: float = 1.0) -> int:
    """`cap` on the CPU; on CUDA, the chunk size whose stacks, `1 / share` of them at once on the
    device, take at most CUDA_MEMORY_FRACTION of its free memory (torch.cuda.mem_get_info)."""
    if device.type != "cuda":
        return cap
    free, _total = torch.cuda.mem_get_info(device)
    footprint = measure_footprint(task)
    chunk = chunk_size_for_memory(free, footprint, batch_size, cap, CUDA_MEMORY_FRACTION * share)
    if chunk < cap:
        log.info(
            "chunk size %d (of --chunk-size %d): %.0f MiB per trial at B=%d, %.0f MiB free on %s",
            chunk, cap, footprint.trial_bytes(batch_size) / 2**20, batch_size, free / 2**20, device)
    return chunk
