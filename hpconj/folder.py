"""The results folder: which folders are hpconj's, the lock of its one live writer, its manifest.

A folder is hpconj's when its manifest.json is a JSON object naming the hpconj version and the
experiment key. A sweep writes that manifest before anything else it puts there, so a folder it
made is recognised from the first trial on. A sweep writes only into a folder that does not exist,
is empty (its own lock file apart), or is hpconj's; it refuses any other folder before changing
anything in it. Inside its folder hpconj deletes and overwrites only the files it names
(`OWNED_FILES`, and the figures manifest.json lists under plots/), never a file a user put there.

The lock is an advisory `flock` on `.hpconj.lock`: exclusive for a writer (`sweep`, `plot`),
tested with a shared request by readers (`table`, `check`). The kernel drops it when its process
dies, however it dies, so a lock left by a SIGKILLed sweep is simply taken over; the file holds
the holder's pid, host, start time and command, only for the message a refused command prints.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import time
import sys
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from hpconj.axes import AXES
from hpconj.records import STATUSES

# Every name hpconj writes in a results folder; nothing else in hpconj spells them out.
MANIFEST = "manifest.json"
LOCK_NAME = ".hpconj.lock"
STORE_NAME = "store.sqlite"
STORE_FILES = (STORE_NAME, f"{STORE_NAME}-wal", f"{STORE_NAME}-shm")
TRIALS_FILE, CURVES_FILE, NOISE_FILE, CONFIG_FILE = "trials.csv", "curves.csv", "noise_scale.csv", "config.yaml"
CHECKPOINTS_FILE, NOISE_END_FILE = "checkpoints.csv", "noise_scale_end.csv"
INPUT_FILES = (TRIALS_FILE, CURVES_FILE, NOISE_FILE, NOISE_END_FILE, CHECKPOINTS_FILE, CONFIG_FILE)  # a sweep's records
OPTIMA_FILE, SHIFTS_FILE, SUMMARY_FILE = "optima.csv", "shifts.csv", "summary.md"
OPTIMA_TIME_FILE, SHIFTS_TIME_FILE = "optima_over_time.csv", "shifts_over_time.csv"
TARGET_FILE, CRITICAL_FILE = "time_to_target.csv", "critical_batch.csv"
BEST_MOMENTUM_FILE = "best_momentum.csv"
CLAIMS_FILE = "claims.csv"  # the verdicts of a config's `expect:` claims (hpconj.claims)
# what `hpconj plot` derives from them (those over time only from a sweep with budget.checkpoints,
# best_momentum.csv only with more than one momentum)
ANALYSIS_FILES = (OPTIMA_FILE, SHIFTS_FILE, SUMMARY_FILE, OPTIMA_TIME_FILE, SHIFTS_TIME_FILE, TARGET_FILE,
                  CRITICAL_FILE, BEST_MOMENTUM_FILE, CLAIMS_FILE)
OWNED_FILES = (*STORE_FILES, *INPUT_FILES, MANIFEST, *ANALYSIS_FILES)
FIGURE_SUFFIXES = (".png", ".svg")


class FolderError(RuntimeError):
    """The folder is not hpconj's, is busy, or its manifest is unreadable (bad input, exit 2)."""


# ----------------------------------------------------------------------------- manifest
def read_manifest(folder: Path) -> dict[str, Any]:
    """manifest.json as a dict; FolderError naming the file when it is missing or not JSON."""
    path = folder / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FolderError(f"{path}: missing (not a results folder made by hpconj sweep)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FolderError(f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise FolderError(f"{path}: not valid JSON ({exc}); the file is damaged") from None
    if not is_manifest(manifest):
        raise FolderError(f"{path}: not an hpconj manifest (no hpconj version or experiment key)")
    return manifest


def is_manifest(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("hpconj"), str) and isinstance(data.get("experiment_key"), str)


def is_hpconj_folder(folder: Path) -> bool:
    try:
        read_manifest(folder)
    except FolderError:
        return False
    return True


def foreign_entries(folder: Path) -> list[str]:
    """What a folder holds besides hpconj's lock and the temporary files of its atomic writes
    (`.manifest.json.x1y2`, left behind only by a killed writer): empty means a sweep may start."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME and not _is_temporary(p.name))
    except FileNotFoundError:
        return []


_TEMPORARY = re.compile(r"\.(%s)\.[a-z0-9_]{8}" % "|".join(re.escape(n) for n in OWNED_FILES))


def _is_temporary(name: str) -> bool:
    """`.manifest.json.k3x_9a0b`: the shape of write_atomic's temporary files (tempfile.mkstemp)."""
    return _TEMPORARY.fullmatch(name) is not None


def check_writable_here(folder: Path) -> None:
    """A sweep may write into `folder` only if it is new, empty or hpconj's; else one line, nothing changed."""
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"--out {folder}: exists and is not a folder")
    if not folder.exists() or is_hpconj_folder(folder):
        return
    entries = foreign_entries(folder)
    if not entries:
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    why = ("its manifest.json is damaged or not hpconj's" if (folder / MANIFEST).exists()
           else "it has no manifest.json from hpconj")
    raise FolderError(f"--out {folder}: not a results folder of hpconj ({why}) and not empty ({shown}); "
                      "hpconj writes only into new or empty folders or its own: choose another --out")


def figure_names(manifest: dict[str, Any]) -> list[str]:
    """The figures directly under plots/ that hpconj recorded writing (relative paths); an entry
    that would reach anywhere else (`plots/../x.png`, `plots/a/b.png`) is never a figure."""
    files = manifest.get("files") or {}
    names = []
    for name in files:
        head, _, base = str(name).partition("/")
        if head == "plots" and base.endswith(FIGURE_SUFFIXES) and "/" not in base and "\\" not in base \
                and not base.startswith("."):
            names.append(name)
    return sorted(names)


def remove_analysis(folder: Path) -> None:
    """Drop what `hpconj plot` wrote (it describes trials that are about to change), by name only:
    a file the user put into plots/ stays, and plots/ goes only when nothing else is left in it."""
    try:
        manifest = read_manifest(folder)
    except FolderError:
        manifest = {}
    for name in (*ANALYSIS_FILES, *figure_names(manifest)):
        (folder / name).unlink(missing_ok=True)
    try:
        (folder / "plots").rmdir()
    except OSError:  # absent, or holds files hpconj did not record
        pass


# ----------------------------------------------------------------------------- the lock
def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']}, started {info['started']} "
                f"({info.get('command', '?')})")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


def _busy(folder: Path, holder: str) -> FolderError:
    return FolderError(f"{folder}: in use by another hpconj command ({holder}); wait for it to finish, "
                       "or stop it (a killed process releases the folder at once)")


def _flock_patiently(fd: int, seconds: float = 1.0) -> None:
    """LOCK_EX, retried for a moment: a reader's probe (refuse_if_busy) holds LOCK_SH for
    microseconds, and must not make a writer give up."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def writer_lock(folder: Path, command: str | None = None) -> Iterator[None]:
    """Hold the folder's exclusive lock for the block; FolderError at once if anyone holds it.

    After taking the lock, the path must still name the file locked: another writer may have
    removed it in between (a release unlinks the file), in which case we try again.
    """
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise FolderError(f"{folder}: cannot write the results folder ({exc.strerror or exc})") from None
        try:
            _flock_patiently(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(folder, _holder(path)) from None
            raise FolderError(f"{folder}: cannot lock the results folder ({exc.strerror or exc}); "
                              "hpconj needs a file system with flock") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # while still holding it: see the retry above
        finally:
            os.close(fd)


def refuse_if_busy(folder: Path) -> None:
    """For readers: FolderError if a writer holds the folder now (nothing is created or held)."""
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: no live writer
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _busy(folder, _holder(path)) from None
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- reading its tables
# Columns that analysis and check read, by kind. A column not listed is read as pandas infers it.
TEXT_COLUMNS = ("trial_id", "status", "parameterization", "optimizer", "axis", "fixed", "error", "params_sha256", "why",
                "id", "kind", "where", "verdict", "claim", "source",  # claims.csv
                *(a for a in AXES if AXES[a].categorical), *(f"fixed_{a}" for a in AXES if AXES[a].categorical))
INTEGER_COLUMNS = ("batch_size", "seed", "steps", "examples", "step", "n_seeds", "n_slices", "n_edge",
                   "reference_batch_size", "width", "depth")


def read_table(path: Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV that hpconj wrote, with its columns checked: FolderError naming the file, the column and
    the first bad row (as a line number of the file) for a missing column, a value that is not a
    number where one is expected, a fractional integer, a non-positive lr or an unknown status."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FolderError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FolderError(f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise FolderError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise FolderError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    frame = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        frame[column] = _typed_column(path, column, raw[column])
    return frame


# Ranges of the columns a trial is keyed by: a value outside names no trial hpconj could have run.
RANGES = {
    "lr": (lambda v: (v > 0) & np.isfinite(v), "not a positive finite learning rate"),
    "batch_size": (lambda v: v >= 1, "not a batch size of at least 1"),
    "momentum": (lambda v: (v >= 0) & (v < 1), "not a momentum in [0, 1)"),
    "seed": (lambda v: v >= 0, "not a seed of at least 0"),
    "width": (lambda v: v >= 1, "not a width of at least 1"),
    "depth": (lambda v: v >= 0, "not a depth of at least 0"),
    "init_scale": (lambda v: (v > 0) & np.isfinite(v), "not a positive finite init scale"),
}
NOT_EMPTY = ("trial_id", "status", "parameterization", "optimizer", "lr", "batch_size", "momentum", "seed", "step")


def _typed_column(path: Path, column: str, text: pd.Series) -> pd.Series:
    if column in NOT_EMPTY:
        _refuse_first(path, column, text, text.str.strip() == "", "empty")
    if column in TEXT_COLUMNS:
        if column == "status":
            bad = ~text.isin(STATUSES)
            _refuse_first(path, column, text, bad, f"not a trial status ({' | '.join(STATUSES)})")
        return text.where(text != "", None) if column in ("error", "params_sha256", "why") else text
    if column in ("at_edge", "bound", "reached"):
        bad = ~text.isin(("True", "False"))
        _refuse_first(path, column, text, bad, "not True or False")
        return text == "True"
    values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce")
    is_nan_text = text.str.strip().str.lower().isin(("", "nan", "na", "<na>"))
    _refuse_first(path, column, text, values.isna() & ~is_nan_text, "not a number")
    if column in RANGES:
        valid, what = RANGES[column]
        _refuse_first(path, column, text, values.notna() & ~valid(values.to_numpy(dtype=float)), what)
    if column in INTEGER_COLUMNS:
        whole = values.isna() | (np.isfinite(values) & (values == values.round()) & (values.abs() < 2**53))
        _refuse_first(path, column, text, ~whole, "not a whole number")
        return values.astype("Int64") if values.isna().any() else values.astype("int64")
    return values.astype(float)


def _refuse_first(path: Path, column: str, text: pd.Series, bad: pd.Series, what: str) -> None:
    if bool(bad.any()):
        row = int(bad.to_numpy().argmax())
        raise FolderError(f"{path}: column {column}, line {row + 2}: {what} ({text.iloc[row]!r})")


TRIAL_REQUIRED = ("trial_id", "status", "parameterization", "optimizer", "lr", "batch_size", "momentum", "seed",
                  "metric")
CURVE_REQUIRED = ("trial_id", "step", "examples", "train_loss")
CHECKPOINT_REQUIRED = ("trial_id", "step", "fraction", "examples", "train_loss", "val_loss", "val_error")
NOISE_REQUIRED = ("seed", "examples", "trace_sigma", "grad_norm_sq", "b_simple")
NOISE_END_REQUIRED = ("seed", "trial_id", "examples", "trace_sigma", "grad_norm_sq", "b_simple")


def read_trials(folder: Path) -> pd.DataFrame:
    return read_table(folder / TRIALS_FILE, TRIAL_REQUIRED)


def read_optional(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A table a folder may lack (curves.csv, noise_scale.csv): empty when absent."""
    return read_table(path, required) if path.is_file() else pd.DataFrame()


def read_config_data(folder: Path) -> dict[str, Any]:
    """config.yaml as plain data (validated by the caller through hpconj.config)."""
    path = folder / CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FolderError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FolderError(f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise FolderError(f"{where}: malformed YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(raw, dict):
        raise FolderError(f"{path}: not a config mapping")
    return raw


# ----------------------------------------------------------------------------- hashes and agreement
def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are for whoever may read the folder
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_hashes(folder: Path, written: Iterable[str], forget: Iterable[str] = (), dropped: Iterable[str] = ()) -> None:
    """Record in manifest.json the sha256 of the files just `written` (names relative to `folder`).

    Every other entry stays as recorded, so a file damaged since hpconj wrote it stays reported
    as damaged: recording is never re-certifying. Entries named in `forget`, and analysis outputs
    that hpconj itself removed (hpconj.folder.remove_analysis), are dropped. Names in `dropped`
    (deleted by `hpconj compact`) are forgotten and listed under "dropped"; a file written again
    leaves that list.
    """
    path = folder / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    files = dict(manifest.get("files") or {})
    written, dropped = list(written), set(dropped)
    for name in list(files):
        derived = name in ANALYSIS_FILES or name.startswith("plots/")
        if name in forget or name in dropped or (derived and not (folder / name).is_file()):
            del files[name]
    for name in written:
        files[name] = sha256_file(folder / name)
    manifest["files"] = dict(sorted(files.items()))
    listed = (set(manifest.get("dropped") or []) | dropped) - set(written)
    if listed:
        manifest["dropped"] = sorted(listed)
    else:
        manifest.pop("dropped", None)
    write_atomic(path, json.dumps(manifest, indent=2) + "\n")


DROPPABLE = (CURVES_FILE,)  # what `hpconj compact` may drop: the per-trial curves, most of a folder's bytes


def compact(folder: Path) -> int:
    """Drop curves.csv from a results folder hpconj made (`hpconj compact`, for results committed to
    a repository), under the writer's lock; manifest.json forgets its hash and lists it under
    "dropped", so `check --integrity` does not call it missing and `check` compares final metrics
    only. A file that no longer hashes as recorded, or was never recorded, is refused, not
    dropped: dropping it would hide the damage, or delete what hpconj did not write. The store keeps the curves: a later `hpconj sweep` into the folder exports them
    again (and they leave "dropped"). Returns the bytes freed."""
    read_manifest(folder)  # FolderError: only a folder hpconj made
    with writer_lock(folder):
        recorded = read_manifest(folder).get("files") or {}
        present = [folder / n for n in DROPPABLE if (folder / n).is_file()]
        for path in present:
            if path.name not in recorded:
                raise FolderError(f"{path}: not recorded in manifest.json (not hpconj's); nothing dropped")
            if sha256_file(path) != recorded[path.name]:
                raise FolderError(f"{path}: edited since it was recorded (sha256 differs); nothing dropped")
        freed = sum(path.stat().st_size for path in present)
        for path in present:
            path.unlink()
        record_hashes(folder, [], dropped=DROPPABLE)
    return freed


def record_problems(folder: Path, manifest: dict[str, Any], trials: pd.DataFrame, config: Any) -> list[str]:
    """How a folder's records disagree with its manifest, one line each (empty: they agree).

    The records are the sweep's outputs (trials.csv, curves.csv, noise_scale.csv, config.yaml):
    each must exist and hash as recorded; trials.csv must hold as many rows as the manifest
    counts trials, with no id twice and only ids the stored config produces; and a sweep the
    manifest calls complete must have every trial its config plans.
    """
    recorded: dict[str, str] = manifest.get("files") or {}
    problems = []
    for name in INPUT_FILES:
        path = folder / name
        if name in recorded:
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif sha256_file(path) != recorded[name]:
                problems.append(f"{name}: edited since it was recorded (sha256 differs)")
        elif path.is_file():
            problems.append(f"{name}: not recorded in manifest.json")
    counts = manifest.get("trials") or {}
    rows = sum(v for k, v in counts.items() if k != "planned" and isinstance(v, int))
    if counts and rows != len(trials):
        problems.append(f"trials.csv: {len(trials)} rows, but manifest.json records {rows} trials")
    doubled = int(trials["trial_id"].duplicated().sum()) if "trial_id" in trials else 0
    if doubled:
        problems.append(f"trials.csv: {doubled} trial ids appear more than once")
    _, foreign, missing = trial_set(config, trials)
    if foreign:
        problems.append(f"trials.csv: {len(foreign)} trials {not_planned(config)}")
    if missing and manifest.get("status") == "complete":
        problems.append(f"trials.csv: {len(missing)} trials of the stored config are missing from a complete sweep")
    return problems


def trial_set(config: Any, stored: pd.DataFrame) -> tuple[dict[str, Any], list[str], list[str]]:
    """(the config's trials by id, stored ids it does not produce, planned ids not stored).

    A grid: trials of lr values or seeds no longer in the grid are still the experiment's when their
    own fields rebuild their id under the stored config. A search: the planned trials are its path
    re-derived from the stored results (hpconj.search), and a stored trial off that path is foreign.
    """
    from hpconj.records import DONE_STATUSES
    from hpconj.search import planned_trials

    done = stored[stored["status"].isin(DONE_STATUSES)]
    plan = planned_trials(config, dict(zip(done["trial_id"], done["metric"].astype(float))))
    planned = {t.trial_id: t for t in plan.trials}
    if config.lr_search is None:
        for _, row in stored[~stored["trial_id"].isin(planned)].iterrows():
            trial = rebuild_trial(config, row)
            if trial.trial_id == row["trial_id"]:
                planned[trial.trial_id] = trial
    present = set(stored["trial_id"])
    return planned, sorted(present - set(planned)), sorted({t.trial_id for t in plan.pending} - present)


def not_planned(config: Any) -> str:
    """What a foreign trial is, in words: off a search's re-derived path, or not of the config's grid."""
    search = config.lr_search
    if search is not None:
        return f"not on the path of the {search.search} search that the stored results give (added or edited?)"
    return "not produced by the stored config.yaml (was it edited?)"


def rebuild_trial(config: Any, row: pd.Series) -> Any:
    from hpconj.trials import Trial, task_for

    b_ref = row.get("reference_batch_size")
    b_ref = None if b_ref is None or pd.isna(b_ref) else int(b_ref)
    swept = {a: row[a] for a in config.sweep.task_axes() if a in row.index}
    task = config.task
    if swept:
        values = {a: (str(v) if AXES[a].categorical else int(v) if a in INTEGER_COLUMNS else float(v))
                  for a, v in swept.items()}
        task = type(task).model_validate({**task.model_dump(), **values})
    task = task_for(config, task, str(row["parameterization"]))
    return Trial(task, config.optimizer, str(row["parameterization"]), float(row["lr"]), int(row["batch_size"]),
                 float(row["momentum"]), int(row["seed"]), config.budget, b_ref, config.optimizer_settings)
