"""Run a sweep: config → trials → cohorts → engine → store, resumable at any point.

The results folder is bound to the config's experiment key (everything but the lr grid, seeds,
name and device): re-running the same command skips finished trials; a different experiment is
refused unless `fresh`. Every finished trial is committed before the next one starts.

Before training, the gradient noise scale B_simple of each seed's initial model (hpconj.noise)
is measured once, in the main process on the sweep's device, and kept in the store: a seed is
measured again only when its estimate is missing or was taken on another number of examples.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
import yaml

import hpconj
from hpconj.config import Config, experiment_view
from hpconj.cost import SweepError
from hpconj.engine import TrialResult
from hpconj.folder import (CONFIG_FILE, INPUT_FILES, MANIFEST, STORE_FILES, FolderError, check_writable_here,
                           read_manifest, record_hashes, remove_analysis, write_atomic, writer_lock)
from hpconj.engine.cohort import trained_models
from hpconj.engine.reference import trained_model
from hpconj.noise import measure_noise_scale, noise_examples
from hpconj.records import FAILED, OK
from hpconj.repro import arithmetic_fingerprint
from hpconj.store import Store, StoreError, export_checkpoints_csv, export_csv, export_noise_csv
from hpconj.tasks import Task, TaskError, build_task
from hpconj.search import SearchPlan, planned_trials
from hpconj.trials import Cohort, Trial, group_cohorts, task_for
from hpconj.workers import Executor, apply_determinism, split_units, torch_threads


log = logging.getLogger("hpconj")


class SweepTooLarge(SweepError):
    """A sweep above hpconj.cost's limit, refused before it is expanded; carries its cost."""

    def __init__(self, cost: Any):
        super().__init__(cost.refusal())
        self.cost = cost


@dataclass(frozen=True)
class SweepPlan:
    config: Config
    trials: list[Trial]
    cohorts: list[Cohort]
    steps: dict[int, int]  # batch size → optimizer steps per trial
    cost: Any = None  # hpconj.cost.SweepCost, when plan_sweep estimated it (not with --yes)

    @property
    def total_steps(self) -> int:
        return sum(self.steps[t.batch_size] for t in self.trials)


@dataclass
class SweepOutcome:
    folder: Path
    total: int
    skipped: int
    ran: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False
    stopped: list[str] = field(default_factory=list)  # slices whose lr search a limit stopped (hpconj.search)


def sweep_size(config: Config, task: Task) -> tuple[int, int]:
    """(trials, optimizer steps summed over them) by arithmetic on the config (hpconj.cost; about
    as many as a search takes): what sizes the workers before the sweep is planned."""
    from hpconj.cost import sweep_steps, trial_count

    return trial_count(config), sweep_steps(config, {b: task.steps(config.budget, b) for b in config.sweep.batch_size})


def plan_sweep(config: Config, task: Task, *, yes: bool = False) -> SweepPlan:
    """Expand the config; check every batch size against the data before any training.

    A sweep above hpconj.cost's limit (trials, or estimated time) is refused with SweepTooLarge
    before it is expanded — expanding 10^7 trials alone takes minutes and gigabytes — unless `yes`.
    """
    from hpconj.cost import batch_steps, estimate_cost

    data = getattr(task, "data", None)
    steps = batch_steps(config, None if data is None else data.n_train, bool(data is not None and data.classes))
    cost = None
    if not yes:
        cost = estimate_cost(config, task, steps)
        if cost.exceeds_limit:
            raise SweepTooLarge(cost)
    trials = planned_trials(config, {}).trials  # a search: its first round
    if any(t.native.per_example for t in trials):
        check_per_example_model(task)
    return SweepPlan(config, trials, group_cohorts(trials), steps, cost)


# Layers whose output for one example depends on the others in its batch (BatchNorm) or on a
# random draw per forward pass (Dropout): per-example gradients of such a model are not the
# per-example parts of its batch gradient.
_COUPLING_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def check_per_example_model(task: Task) -> None:
    """Per-example rules (adaptive `conjugate`, `mcallester`) need a model whose batch gradient is
    the mean of its per-example gradients: refuse BatchNorm and Dropout with one line."""
    model = task.init_model(0)
    found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _COUPLING_LAYERS)})
    if found:
        raise SweepError(f"task.model: the per-example rules (conjugate for adaptive optimizers, mcallester) need "
                         f"per-example gradients whose mean is the batch gradient, but the model has "
                         f"{', '.join(found)}; use standard or sqrt, or a model without them")


def widest_task(config: Config, first: Task) -> Task:
    """The task of the sweep's last architecture (the largest value of every swept axis, which are
    sorted): what CUDA chunk sizes must fit. `first` when no architecture axis is swept."""
    variants = config.task_variants()
    if len(variants) == 1:
        return first
    try:
        return build_task(variants[-1][1])
    except TaskError as exc:
        raise SweepError(f"task: {exc}") from None


def load_task(config: Config) -> Task:
    try:
        return build_task(config.first_task)
    except TaskError as exc:
        raise SweepError(f"task: {exc}") from None


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SweepError(f"device: {name} requested, but this torch sees no CUDA device (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SweepError(f"device: {name} requested, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


# ----------------------------------------------------------------------------- the folder
def open_results(config: Config, folder: Path, fresh: bool) -> Store:
    """Reopen or start the results folder (its lock held); refuse one that holds a different experiment.

    A folder that is not hpconj's yet gets a manifest first (see hpconj.folder), so that it is
    recognised as hpconj's even if the sweep dies before its first trial.
    """
    check_writable_here(folder)
    if fresh:
        for name in (*STORE_FILES, *INPUT_FILES):
            (folder / name).unlink(missing_ok=True)
        remove_analysis(folder)
    claimed = _claimed_key(folder)
    if claimed is not None and claimed != config.experiment_key() and not fresh:
        raise _different_experiment(folder, _stored_config(folder), config)
    if claimed is None or fresh:
        write_atomic(folder / MANIFEST, json.dumps({"hpconj": hpconj.__version__, "experiment_key":
                                                    config.experiment_key(), "status": "starting"}, indent=2) + "\n")
    try:
        store = Store.open(folder)
    except StoreError as exc:
        raise SweepError(str(exc)) from None
    stored_key = store.get_meta("experiment_key")
    if stored_key is not None and stored_key != config.experiment_key():
        previous = json.loads(store.get_meta("config") or "{}")
        store.close()
        raise _different_experiment(folder, previous, config)
    store.set_meta({"experiment_key": config.experiment_key(), "config": json.dumps(config.canonical())})
    return store


def _different_experiment(folder: Path, previous: dict[str, Any], config: Config) -> SweepError:
    difference = config_difference(previous, config.canonical()) or "its manifest.json names another experiment"
    return SweepError(f"{folder} holds results of a different experiment ({difference}); "
                      "use --fresh to replace them, or --out for a new folder")


def _stored_config(folder: Path) -> dict[str, Any]:
    """The config.yaml a sweep left in its folder, as plain data ({} when absent or unreadable)."""
    try:
        data = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _claimed_key(folder: Path) -> str | None:
    """The experiment key of the folder's manifest; None when the folder has none yet."""
    try:
        return read_manifest(folder)["experiment_key"]
    except FolderError:
        return None


def config_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first key path whose value differs between two canonical configs' experiments
    (hpconj.config.experiment_view: not the lr grid, seeds, name, device, ...)."""
    return _first_difference(experiment_view(old), experiment_view(new))


def _first_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, path + ".")
            if found:
                return found
        elif a != b:
            return f"{path}: {json.dumps(a)} → {json.dumps(b)}"
    return ""


# ----------------------------------------------------------------------------- running
def run_sweep(
    plan: SweepPlan,
    task: Task,
    folder: Path,
    executor: Executor,
    device: torch.device,
    *,
    fresh: bool = False,
    max_trials: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[Trial, TrialResult], None] | None = None,
) -> SweepOutcome:
    """Run every unfinished trial of `plan`, recording each one as soon as it comes back.

    The folder's lock is held from before anything is written until the last file is: a second
    sweep, a `--fresh` or a `plot` on the same folder is refused meanwhile (hpconj.folder).
    """
    try:
        check_writable_here(folder)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"--out {folder}: cannot write the results folder ({exc.strerror or exc})") from None
    with writer_lock(folder):
        return _run_locked(plan, task, folder, executor, device, fresh=fresh, max_trials=max_trials,
                           on_start=on_start, on_result=on_result)


def _run_locked(
    plan: SweepPlan,
    task: Task,
    folder: Path,
    executor: Executor,
    device: torch.device,
    *,
    fresh: bool,
    max_trials: int | None,
    on_start: Callable[[int, int], None] | None,
    on_result: Callable[[Trial, TrialResult], None] | None,
) -> SweepOutcome:
    config = plan.config
    store = open_results(config, folder, fresh)
    started = _now()
    planned = planned_trials(config, recorded_results(store, config))
    outcome = SweepOutcome(folder, total=len(planned.trials), skipped=len(planned.trials) - len(planned.pending))
    attempted: set[str] = set()
    write_atomic(folder / CONFIG_FILE, yaml.safe_dump(config.canonical(), sort_keys=False))
    write_manifest(folder, config, store, executor, device, started, None, "running", planned)
    on_device = task.to(device)
    if on_start is not None:
        on_start(len(planned.trials), outcome.skipped)
    try:
        measure_noise(config, on_device, store, device)  # a new estimate shows after the next `hpconj plot`
        while True:  # one pass for a grid; one round of every slice at a time for a search
            todo = [t for t in planned.pending if t.trial_id not in attempted]
            if max_trials is not None:
                todo = todo[: max(0, max_trials - outcome.ran)]
            if not todo:
                break
            if not attempted:
                remove_analysis(folder)  # stale once new trials land: run hpconj plot again
            attempted |= {t.trial_id for t in todo}
            _run_trials(todo, config, on_device, store, executor, device, outcome, on_result)
            planned = planned_trials(config, recorded_results(store, config))
            outcome.total = len(planned.trials)
            if on_start is not None:
                on_start(outcome.total, outcome.skipped)
        outcome.stopped = planned.stopped
        if not planned.pending and max_trials is None:  # every planned trial is recorded now
            measure_final_noise(config, planned.trials, on_device, store, device, executor.resources.threads,
                                executor.engine_name)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        outcome.counts = store.counts()
        export_csv(store, folder, config.metric.name, config.task_axis_defaults())
        export_noise_csv(store, folder)
        export_checkpoints_csv(store, folder)
        status = "interrupted" if outcome.interrupted else ("complete" if not planned.pending else "partial")
        write_manifest(folder, config, store, executor, device, started, _now(), status, planned)
        present = [name for name in INPUT_FILES if (folder / name).is_file()]
        record_hashes(folder, present, forget=set(INPUT_FILES) - set(present))
        store.close()
    return outcome


def _run_trials(todo: list[Trial], config: Config, task: Task, store: Store, executor: Executor,
                device: torch.device, outcome: SweepOutcome, on_result: Callable[[Trial, TrialResult], None] | None,
                ) -> None:
    """Train `todo` (cohorts by task and batch size, cut into work units) and record each result."""
    units = split_units(group_cohorts(todo), {t.trial_id for t in todo}, executor.chunk_size,
                        executor.resources.workers)
    by_id = {t.trial_id: t for t in todo}
    for results in executor.run_batches(task, config.first_task, units, device):
        finished = [(by_id[result.trial_id], result) for result in results]
        store.record_many(finished, executor.engine_name, str(device))  # recorded before anything else happens
        for trial, result in finished:
            outcome.ran += 1
            if result.status == FAILED:
                outcome.failures.append(f"trial {trial.trial_id} (lr={trial.lr:g}, B={trial.batch_size}): "
                                        f"{result.error}")
            if on_result is not None:
                on_result(trial, result)


def recorded_results(store: Store, config: Config) -> dict[str, float]:
    """Trial id → final metric (+inf when diverged) of every trial recorded ok or diverged: what a
    search plans its next round from (hpconj.search)."""
    return store.final_metrics(config.metric.name)


def measure_noise(config: Config, task: Task, store: Store, device: torch.device) -> int:
    """Measure and record B_simple for each seed of `config` that has no current estimate.

    Current means: measured on as many examples as `config.noise_scale.examples` gives for this
    task. A model that fails while being measured (one that cannot take a batch of one example,
    say) costs its estimate only: the failure is logged and the sweep goes on. Returns how many
    estimates were recorded.
    """
    if not config.noise_scale.enabled:
        return 0
    wanted = noise_examples(task, config.noise_scale.examples)
    stored = store.noise_examples()
    recorded = 0
    for seed in config.seeds:
        if stored.get(seed) == wanted:
            continue
        try:
            estimate = measure_noise_scale(task, seed, config.noise_scale.examples, device)
        except Exception as exc:  # user models may raise anything; the trials must still run
            log.warning("gradient noise scale of seed %d not measured (%s: %s)", seed, type(exc).__name__, exc)
            continue
        store.record_noise(estimate)
        recorded += 1
    return recorded


def measure_final_noise(config: Config, trials: list[Trial], task: Task, store: Store, device: torch.device,
                        threads: int, engine: str = "cohort") -> int:
    """B_simple at the end of training, per seed, on one trial's final model (the noise scale grows
    as the loss falls): of the sweep's first architecture and parameterization, its smallest batch
    size and momentum, the lr whose trial of that seed ended lowest. The sweep's engine trains them
    again (the cohort engine as one stack), with the workers' thread count; an estimate is recorded
    only when the final weights match the stored digest. Returns how many estimates were recorded."""
    if not config.noise_scale.enabled:
        return 0
    first = config.parameterizations[0]
    smallest = (min(config.sweep.batch_size), min(config.sweep.momentum))
    own = task_for(config, config.first_task, first)  # the task the first parameterization's trials train
    candidates = {t.trial_id: t for t in trials if t.task == own and t.parameterization == first
                  and (t.batch_size, t.momentum) == smallest}
    stored = store.trials_frame(config.metric.name, config.task_axis_defaults()).set_index("trial_id")
    wanted = noise_examples(task, config.noise_scale.examples)
    done, chosen = store.noise_end_trials(), []
    for seed in config.seeds:
        rows = stored.loc[[i for i in candidates if i in stored.index and candidates[i].seed == seed]]
        rows = rows[rows["status"] == OK]
        if rows.empty:
            continue
        trial_id = str(rows["metric"].idxmin())
        if done.get(seed) != (trial_id, wanted):
            chosen.append(candidates[trial_id])
    if not chosen:
        return 0
    try:
        trained = _trained_again(chosen, config.first_task, task, device, threads, engine)
    except Exception as exc:  # a user model may raise anything; the results are recorded already
        log.warning("noise scale at the end of training not measured (%s: %s)", type(exc).__name__, exc)
        return 0
    recorded = 0
    for trial in chosen:
        model, result = trained[trial.trial_id]
        if result.params_sha256 != stored.loc[trial.trial_id, "params_sha256"]:
            log.warning("noise scale at the end of training of seed %d not measured: trial %s re-trained to "
                        "other weights than recorded", trial.seed, trial.trial_id)
            continue
        try:
            # (the noise batch is the first architecture's data, which every architecture shares)
            estimate = measure_noise_scale(task, trial.seed, config.noise_scale.examples, device, model=model)
        except Exception as exc:
            log.warning("noise scale at the end of training of seed %d not measured (%s: %s)", trial.seed,
                        type(exc).__name__, exc)
            continue
        store.record_noise_end(estimate, trial.trial_id)
        recorded += 1
    return recorded


def _trained_again(trials: list[Trial], spec: Any, task: Task, device: torch.device, threads: int,
                   engine: str) -> dict[str, tuple[nn.Module, TrialResult]]:
    """The trials (one task and batch size) trained again, with their final models: as one stack by
    the cohort engine, one at a time by the reference engine; `threads` torch threads (the workers'
    count: the same bits as the recorded trials)."""
    own = task if trials[0].task == spec else build_task(trials[0].task).to(device)
    with torch_threads(threads):
        if engine == "cohort":
            return trained_models(own, trials, device)
        return {t.trial_id: trained_model(own, t, device) for t in trials}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_state(cwd: Path) -> dict[str, Any]:
    """Commit and dirty flag of the working directory's git repository, if any."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def write_manifest(
    folder: Path, config: Config, store: Store, executor: Executor, device: torch.device,
    started: str, ended: str | None, status: str, planned: SearchPlan,
) -> None:
    manifest = {
        "hpconj": hpconj.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "arithmetic": arithmetic_fingerprint(device.type),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "engine": executor.engine_name,
        **executor.manifest_info(),  # "executor": local | ray, and for ray its version and address
        "workers": executor.resources.workers,
        "threads_per_worker": executor.resources.threads,
        "chunk_size": executor.chunk_size,
        "determinism": apply_determinism(device),
        "git": git_state(Path.cwd()),
        "config_hash": config.config_hash(),
        "experiment_key": config.experiment_key(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": started,
        "ended": ended,
        "status": status,
        "trials": {"planned": len(planned.trials), **store.counts()},
        "pid": os.getpid(),
    }
    previous = folder / MANIFEST
    if previous.is_file():  # keep the recorded file hashes until record_hashes replaces them
        try:
            manifest["files"] = json.loads(previous.read_text()).get("files", {})
        except ValueError:
            pass
    write_atomic(previous, json.dumps(manifest, indent=2) + "\n")

