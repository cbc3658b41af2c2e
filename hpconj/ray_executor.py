"""Work units as Ray tasks (`--executor ray`): on a local Ray instance, or on a cluster (`--address`).

Each work unit (a chunk of a cohort, hpconj.workers.split_units) is one Ray task declaring its
resources: `threads` CPUs, and 1/GPU_TASKS_PER_DEVICE of a GPU on CUDA. Ray only computes: the
results come back to this process (the driver), which alone writes the store, one transaction
per trial, exactly as with the local executor, so resume and `hpconj check` work the same.

A task whose worker dies (killed, out of memory, node lost) is run again, up to MAX_RETRIES
times (Ray's `max_retries`). A trial that fails in user code is a result with status `failed`,
as locally; any other exception escaping a task (the task cannot be built on the worker, say)
cancels the outstanding tasks and becomes one ExecutorError line.

Every Ray worker sets its torch threads and the determinism settings once, and builds the task
once per process (the same cache key as the local workers), so a trial's bits are the same as
with the local executor on the same hardware type.

Ray is an optional dependency (`pip install 'hpconj[ray]'`): this module imports it lazily.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from typing import Any

import torch

from hpconj.config import TaskSpec
from hpconj.engine import TrialResult
from hpconj.workers import ExecutorError, Resources, WorkUnit, prepare_worker, run_unit, usable_cores
from hpconj.tasks import Task

INSTALL_HINT = "--executor ray needs Ray: pip install 'hpconj[ray]'"
# A unit whose worker process dies is run again this many times before the sweep stops.
MAX_RETRIES = 3
# Tasks sharing one GPU at a time (each declares num_gpus = 1/this): small models leave most of
# a GPU idle, and two processes overlap one's Python overhead with the other's kernels.
GPU_TASKS_PER_DEVICE = 2
# How long to wait for a TCP connection to --address before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0

log = logging.getLogger("hpconj")


def import_ray() -> Any:
    """The ray module, or ExecutorError with the one line that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(INSTALL_HINT) from None
    except Exception as exc:  # a broken installation
        raise ExecutorError(f"--executor ray: Ray cannot be imported ({type(exc).__name__}: {_first_line(exc)})") from None
    return ray


def gpu_share() -> float:
    """The share of one GPU's memory each Ray task may plan for (tasks run that many at a time)."""
    return 1 / GPU_TASKS_PER_DEVICE


class RayExecutor:
    """Runs work units as Ray tasks; the same interface as executor.LocalExecutor.

    Connects at construction: to a Ray connection this process already holds (a notebook's, a
    test's); else to `address`, or else $RAY_ADDRESS: an existing cluster, whose address
    `ray start --head` prints; else it starts a local instance with this machine's cores and no
    dashboard. `close` cancels what is still running and ends the connection it made: a local
    instance started here stops, a cluster keeps running.
    """

    kind = "ray"

    def __init__(self, engine: str, chunk_size: int, *, device: torch.device, workers: int | None = None,
                 threads: int | None = None, units: int = 1, address: str | None = None):
        self._ray = ray = import_ray()
        self.engine_name = engine
        self.chunk_size = chunk_size
        # Ray's own convention: RAY_ADDRESS names the cluster (it is set inside `ray job submit`)
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.address = address
        self._pending: dict[Any, WorkUnit] = {}
        self._owns_connection = False  # whether close() disconnects (and stops a local instance)
        self._started_local = False
        self._connect(address)
        threads = threads if threads and threads > 0 else 1  # one thread: bits independent of the cohort
        cluster = self._capacity()
        if cluster["largest_node_cpus"] < threads:
            self.close()
            raise ExecutorError(f"--threads {threads}: no node of the Ray cluster has that many CPUs "
                                f"(the largest has {cluster['largest_node_cpus']:g})")
        slots = int(cluster["cpus"] // threads)
        self.gpus_per_task = 0.0
        reuse_workers = True
        if device.type == "cuda":
            if cluster["gpus"] < 1:
                self.close()
                raise ExecutorError(f"device: {device} requested, but the Ray cluster has no GPU "
                                    "(use device: cpu, or add GPU nodes)")
            self.gpus_per_task = 1 / GPU_TASKS_PER_DEVICE
            slots = min(slots, int(cluster["gpus"]) * GPU_TASKS_PER_DEVICE)
            # A worker process keeps the GPU its CUDA context was made on; where a node has several,
            # Ray may give a reused worker another one, so there each unit gets a fresh process
            # (Ray's default for GPU tasks). One GPU per node: the worker, its CUDA context and
            # its cached task serve unit after unit.
            reuse_workers = cluster["most_node_gpus"] <= 1
        if workers is not None:
            slots = min(slots, workers)
        self.resources = Resources(max(1, min(slots, max(units, 1))), threads)
        self._remote = ray.remote(
            num_cpus=threads, num_gpus=self.gpus_per_task, max_calls=0 if reuse_workers else 1,
            max_retries=MAX_RETRIES, retry_exceptions=False,
        )(_run_unit)

    # ------------------------------------------------------------------------- connection
    def _connect(self, address: str | None) -> None:
        ray = self._ray
        if ray.is_initialized():
            return  # this process is connected already (a notebook, a test): use it, leave it open
        quiet = not log.isEnabledFor(logging.INFO)
        options: dict[str, Any] = {
            "logging_level": logging.ERROR if quiet else logging.INFO,
            "log_to_driver": not quiet,  # workers' output would tear the progress bar
        }
        if address is None:
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else None
            try:  # "local": a new instance even where `ray start` runs one (join that with --address auto)
                ray.init(address="local", num_cpus=usable_cores(), num_gpus=gpus, include_dashboard=False, **options)
            except Exception as exc:
                raise ExecutorError(f"--executor ray: cannot start a local Ray instance "
                                    f"({type(exc).__name__}: {_first_line(exc)})") from exc
            self._started_local = True
        else:
            _check_reachable(address)
            try:
                ray.init(address=address, **options)
            except Exception as exc:
                auth = "" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else (
                    "; a cluster with token authentication needs RAY_AUTH_MODE=token and its token")
                raise ExecutorError(f"--address {address}: cannot connect to Ray "
                                    f"({type(exc).__name__}: {_first_line(exc)}){auth}") from exc
        self._owns_connection = True

    def _capacity(self) -> dict[str, float]:
        """CPUs and GPUs of the whole cluster, and the most CPUs and GPUs of one node."""
        ray = self._ray
        total = ray.cluster_resources()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
        return {"cpus": float(total.get("CPU", 0)), "gpus": float(total.get("GPU", 0)), "nodes": len(nodes),
                "largest_node_cpus": float(max((n.get("CPU", 0) for n in nodes), default=0)),
                "most_node_gpus": float(max((n.get("GPU", 0) for n in nodes), default=0))}

    def manifest_info(self) -> dict[str, Any]:
        """What manifest.json records about where the sweep ran."""
        ray = self._ray
        info: dict[str, Any] = {"version": ray.__version__, "address": self.address,
                                "local_instance": self._started_local, "max_retries": MAX_RETRIES,
                                "cpus_per_task": self.resources.threads, "gpus_per_task": self.gpus_per_task}
        try:
            if ray.is_initialized():
                info["address"] = ray.get_runtime_context().gcs_address
                cluster = self._capacity()
                info.update(nodes=cluster["nodes"], cluster_cpus=cluster["cpus"], cluster_gpus=cluster["gpus"])
        except Exception:  # the manifest must not fail because a cluster went away
            pass
        return {"executor": self.kind, "ray": info}

    # ------------------------------------------------------------------------- lifetime
    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, terminate: bool = False) -> None:
        """Cancel outstanding tasks; disconnect (a local instance started here stops)."""
        self._cancel()
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_connection = False

    def _cancel(self) -> None:
        pending, self._pending = list(self._pending), {}
        for ref in pending:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished, or the cluster is gone
                pass

    # ------------------------------------------------------------------------- running
    def start(self, spec: TaskSpec, device: torch.device) -> None:
        """Nothing to start ahead: Ray's workers start with its instance, and build the task per task."""

    def run(self, task: Task, spec: TaskSpec, units: list[WorkUnit], device: torch.device) -> Iterator[TrialResult]:
        for results in self.run_batches(task, spec, units, device):
            yield from results

    def run_batches(self, task: Task, spec: TaskSpec, units: list[WorkUnit],
                    device: torch.device) -> Iterator[list[TrialResult]]:
        """Keep at most `resources.workers` units in flight (--workers); yield each unit's results as
        soon as it finishes (in finishing order) and submit the next."""
        ray = self._ray
        if not units:
            return
        # Ray picks the GPU of each task and shows it to the worker as its only one
        on_worker = "cuda" if device.type == "cuda" else str(device)
        paths = _import_paths()
        waiting = list(units)
        self._pending = {}

        def submit() -> None:
            while waiting and len(self._pending) < self.resources.workers:
                unit = waiting.pop(0)
                ref = self._remote.remote(self.engine_name, self.chunk_size, unit, on_worker,
                                          self.resources.threads, paths)
                self._pending[ref] = unit

        try:
            submit()
            while self._pending:
                ready, _ = ray.wait(list(self._pending), num_returns=1)
                for ref in ready:
                    unit = self._pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise ExecutorError(_task_failure(exc, unit, ray)) from exc
                    submit()
                    yield results
        except BaseException:  # an error, Ctrl-C, or the consumer stopped: stop the rest
            self._cancel()
            raise


def _task_failure(exc: Exception, unit: WorkUnit, ray: Any) -> str:
    """One line for a task that raised, or whose worker died MAX_RETRIES + 1 times."""
    where = f"a Ray task ({len(unit.trials)} trial(s) at batch size {unit.batch_size})"
    resume = "finished trials are recorded; run the same command to resume"
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is not None:
            return f"{where} raised {type(cause).__name__}: {_first_line(cause)} (the trials finished so far are recorded)"
    lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
            getattr(ray.exceptions, "OutOfMemoryError", ray.exceptions.WorkerCrashedError))
    if isinstance(exc, lost):
        return f"{where} lost its worker {MAX_RETRIES + 1} times ({type(exc).__name__}: {_first_line(exc)}); {resume}"
    return f"{where} failed ({type(exc).__name__}: {_first_line(exc)}); {resume}"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_reachable(address: str) -> None:
    """Fail in seconds where Ray would retry for minutes: nothing listening at a host:port (or
    ray://host:port) address, or something that is not a gRPC server (Ray's GCS and Ray Client
    both are). Other forms ('auto') are left to Ray."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    hint = ("start a cluster with `ray start --head` and pass the address it prints, or leave out --address "
            "to start a local Ray instance")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as conn:
            grpc = _speaks_http2(conn)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ExecutorError(f"--address {address}: nothing answers there ({reason}); {hint}") from None
    if not grpc:
        raise ExecutorError(f"--address {address}: something answers there, but not Ray (no gRPC); {hint}")


def _speaks_http2(conn: socket.socket) -> bool:
    """Whether the peer answers an HTTP/2 connection preface with a SETTINGS frame, as gRPC does."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS
    conn.sendall(preface)
    header = b""
    while len(header) < 9:
        chunk = conn.recv(9 - len(header))
        if not chunk:
            return False
        header += chunk
    return header[3] == 4  # frame type SETTINGS


def _import_paths() -> list[str]:
    """The driver's sys.path entries outside the Python installation (the working directory, the
    config's folder: where user `module:function` targets are found), for the workers."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out = []
    for entry in sys.path:
        real = os.path.realpath(entry or ".")
        if os.path.isdir(real) and not any(real == p or real.startswith(p + os.sep) for p in prefixes):
            out.append(real)
    return out


# ----------------------------------------------------------------------------- on a Ray worker
def _prepare_worker(threads: int, paths: list[str]) -> None:
    """The driver's import paths, then the shared bootstrap (hpconj.workers.prepare_worker)."""
    for entry in reversed(paths):
        if entry not in sys.path and os.path.isdir(entry):
            sys.path.insert(0, entry)
    prepare_worker(threads)


def _run_unit(engine_name: str, chunk_size: int, unit: WorkUnit, device: str, threads: int,
              paths: list[str]) -> list[TrialResult]:
    """The Ray task: train one unit, return its results to the driver."""
    _prepare_worker(threads, paths)
    return run_unit(engine_name, chunk_size, unit, device)
