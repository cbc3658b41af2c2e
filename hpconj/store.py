"""The results store: one SQLite file, the source of truth; CSVs are exports of it.

WAL mode with synchronous=FULL, and one transaction per finished trial (its row and its curve
together), so a trial is either recorded whole or not at all, whatever kills the process. The
gradient noise scale of each seed (hpconj.noise) is one row of its own, one transaction each.
"""
from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timezone
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hpconj.axes import TASK_AXES
from hpconj.folder import CHECKPOINTS_FILE, CURVES_FILE, NOISE_END_FILE, NOISE_FILE, STORE_NAME, TRIALS_FILE, write_atomic
from hpconj.records import DIVERGED, DONE_STATUSES, FAILED, NoiseEstimate, TrialResult
from hpconj.trials import Trial


TRIAL_COLUMNS = [
    "trial_id", "status", "parameterization", "optimizer", "lr", "batch_size", "momentum", "seed",
    "train_loss", "val_loss", "val_error", "metric", "steps", "examples", "wall_s",
    "reference_batch_size", "params_sha256", "error",
]
_SORT = ["parameterization", "optimizer", "batch_size", "momentum", "lr", "seed"]
NOISE_COLUMNS = ["seed", "examples", "trace_sigma", "grad_norm_sq", "b_simple"]
CHECKPOINT_COLUMNS = ["trial_id", "step", "fraction", "examples", "train_loss", "val_loss", "val_error"]
NOISE_END_COLUMNS = ["seed", "trial_id", "examples", "trace_sigma", "grad_norm_sq", "b_simple"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    parameterization TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    lr REAL NOT NULL,
    batch_size INTEGER NOT NULL,
    momentum REAL NOT NULL,
    seed INTEGER NOT NULL,
    reference_batch_size INTEGER,
    train_loss REAL, val_loss REAL, val_error REAL,
    steps INTEGER NOT NULL, examples INTEGER NOT NULL, wall_s REAL NOT NULL,
    params_sha256 TEXT, error TEXT,
    fields TEXT NOT NULL,
    engine TEXT, device TEXT,
    finished_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS curves (
    trial_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    examples INTEGER NOT NULL,
    train_loss REAL,
    PRIMARY KEY (trial_id, step)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    trial_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    fraction REAL NOT NULL,
    examples INTEGER NOT NULL,
    train_loss REAL, val_loss REAL, val_error REAL,
    PRIMARY KEY (trial_id, step)
);
CREATE TABLE IF NOT EXISTS noise_scale_end (
    seed INTEGER PRIMARY KEY,
    trial_id TEXT NOT NULL,
    examples INTEGER NOT NULL,
    trace_sigma REAL,
    grad_norm_sq REAL,
    b_simple REAL
);
CREATE TABLE IF NOT EXISTS noise_scale (
    seed INTEGER PRIMARY KEY,
    examples INTEGER NOT NULL,
    trace_sigma REAL,
    grad_norm_sq REAL,
    b_simple REAL
);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or does not belong to this sweep."""


def _real(value: float) -> float | None:
    # SQLite stores ±inf as REAL but turns NaN into NULL; say so explicitly.
    return None if isinstance(value, float) and math.isnan(value) else value


class Store:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a readable hpconj store ({exc})") from None

    @classmethod
    def open(cls, folder: Path) -> Store:
        return cls(folder / STORE_NAME)

    def close(self) -> None:
        self.db.close()

    # -- metadata
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, values: dict[str, str]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items())
        self.db.execute("COMMIT")

    # -- trials
    def finished_ids(self) -> set[str]:
        marks = ",".join("?" * len(DONE_STATUSES))
        rows = self.db.execute(f"SELECT trial_id FROM trials WHERE status IN ({marks})", DONE_STATUSES)
        return {r[0] for r in rows}

    def final_metrics(self, metric_name: str) -> dict[str, float]:
        """Trial id → final `metric_name` (+inf when diverged) of every trial recorded ok or diverged,
        straight from SQL (what a sweep re-plans from after every round; trials_frame parses every row)."""
        if metric_name not in ("train_loss", "val_loss", "val_error"):
            raise ValueError(f"unknown metric {metric_name!r}")
        marks = ",".join("?" * len(DONE_STATUSES))
        rows = self.db.execute(f"SELECT trial_id, status, {metric_name} FROM trials WHERE status IN ({marks})",
                               DONE_STATUSES)
        return {trial_id: math.inf if status == DIVERGED else (math.nan if value is None else float(value))
                for trial_id, status, value in rows}

    def record(self, trial: Trial, result: TrialResult, engine: str, device: str) -> None:
        """Write one finished trial and its curve in a single transaction."""
        self.record_many([(trial, result)], engine, device)

    def record_many(self, finished: Sequence[tuple[Trial, TrialResult]], engine: str, device: str) -> None:
        """Write trials that came back together (a worker's unit) and their curves in one transaction:
        one wait for the disk instead of one per trial; all of them are recorded or none."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for trial, result in finished:
                self._insert(trial, result, engine, device)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # an interrupt may land after COMMIT
                self.db.execute("ROLLBACK")
            raise

    def _insert(self, trial: Trial, result: TrialResult, engine: str, device: str) -> None:
        row = (
            trial.trial_id, result.status, trial.parameterization, trial.optimizer, trial.lr, trial.batch_size,
            trial.momentum, trial.seed, trial.reference_batch_size, _real(result.train_loss),
            _real(result.val_loss), _real(result.val_error), result.steps, result.examples, result.wall_s,
            result.params_sha256, result.error, json.dumps(trial.identity(), sort_keys=True), engine, device,
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        points = [(trial.trial_id, p.step, p.examples, _real(p.train_loss)) for p in result.curve]
        marks = [(trial.trial_id, c.step, c.fraction, c.examples, _real(c.train_loss), _real(c.val_loss),
                  _real(c.val_error)) for c in result.checkpoints]
        self.db.execute("DELETE FROM curves WHERE trial_id = ?", (trial.trial_id,))
        self.db.execute("DELETE FROM checkpoints WHERE trial_id = ?", (trial.trial_id,))
        self.db.execute(f"INSERT OR REPLACE INTO trials VALUES ({','.join('?' * len(row))})", row)
        self.db.executemany("INSERT INTO curves VALUES (?, ?, ?, ?)", points)
        self.db.executemany("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)", marks)

    # -- gradient noise scale
    def record_noise(self, estimate: NoiseEstimate) -> None:
        """Write (or replace) one seed's estimate in a single transaction."""
        row = (estimate.seed, estimate.examples, _real(estimate.trace_sigma), _real(estimate.grad_norm_sq),
               _real(estimate.b_simple))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO noise_scale VALUES (?, ?, ?, ?, ?)", row)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def record_noise_end(self, estimate: NoiseEstimate, trial_id: str) -> None:
        """Write (or replace) one seed's estimate at the end of training, on `trial_id`'s final model."""
        row = (estimate.seed, trial_id, estimate.examples, _real(estimate.trace_sigma),
               _real(estimate.grad_norm_sq), _real(estimate.b_simple))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO noise_scale_end VALUES (?, ?, ?, ?, ?, ?)", row)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def noise_end_trials(self) -> dict[int, tuple[str, int]]:
        """seed → (the trial its end-of-training estimate was measured on, the examples it used)."""
        rows = self.db.execute("SELECT seed, trial_id, examples FROM noise_scale_end").fetchall()
        return {seed: (trial_id, examples) for seed, trial_id, examples in rows}

    def noise_end_frame(self) -> pd.DataFrame:
        """The noise_scale_end.csv table: one row per seed, sorted by seed."""
        frame = pd.read_sql_query(f"SELECT {', '.join(NOISE_END_COLUMNS)} FROM noise_scale_end ORDER BY seed", self.db)
        for col in ("trace_sigma", "grad_norm_sq", "b_simple"):
            frame[col] = frame[col].astype(float)
        return frame[NOISE_END_COLUMNS]

    def noise_examples(self) -> dict[int, int]:
        """seed → the number of examples its stored estimate was measured on."""
        return dict(self.db.execute("SELECT seed, examples FROM noise_scale").fetchall())

    def noise_frame(self) -> pd.DataFrame:
        """The noise_scale.csv table: one row per measured seed, sorted by seed."""
        frame = pd.read_sql_query(f"SELECT {', '.join(NOISE_COLUMNS)} FROM noise_scale ORDER BY seed", self.db)
        for col in ("trace_sigma", "grad_norm_sq", "b_simple"):
            frame[col] = frame[col].astype(float)
        return frame[NOISE_COLUMNS]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall())

    def trials_frame(self, metric_name: str, task_axes: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """The trials.csv table; `task_axes` maps each swept architecture axis (hpconj.axes) to the
        value a task records by leaving it out (its default), and adds its column."""
        frame = pd.read_sql_query("SELECT * FROM trials", self.db)
        tasks = [json.loads(f)["task"] for f in frame["fields"]]
        for axis, default in (task_axes or {}).items():
            frame[axis] = [task.get(axis, default) for task in tasks]
        return trials_table(frame, metric_name, list(task_axes or {}))

    def checkpoints_frame(self) -> pd.DataFrame:
        """The checkpoints.csv table: the metrics of each trial at each checkpoint it reached."""
        frame = pd.read_sql_query(f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM checkpoints", self.db)
        for col in ("fraction", "train_loss", "val_loss", "val_error"):
            frame[col] = frame[col].astype(float)
        return frame.sort_values(["trial_id", "step"], kind="stable").reset_index(drop=True)

    def curves_frame(self) -> pd.DataFrame:
        frame = pd.read_sql_query("SELECT trial_id, step, examples, train_loss FROM curves", self.db)
        return frame.sort_values(["trial_id", "step"], kind="stable").reset_index(drop=True)


def trials_table(frame: pd.DataFrame, metric_name: str, task_axes: Sequence[str] = ()) -> pd.DataFrame:
    """The trials.csv table: the configured metric added (+inf if diverged), sorted, fixed columns;
    the swept architecture axes' columns (in hpconj.axes order) after momentum."""
    frame = frame.copy()
    for col in ("train_loss", "val_loss", "val_error"):
        frame[col] = frame[col].astype(float)
    frame["metric"] = frame[metric_name]
    frame.loc[frame["status"] == DIVERGED, "metric"] = math.inf
    frame.loc[frame["status"] == FAILED, "metric"] = math.nan
    frame["reference_batch_size"] = frame["reference_batch_size"].astype("Int64")
    axes = [a for a in TASK_AXES if a in task_axes]
    frame = frame.sort_values(_SORT[:2] + axes + _SORT[2:], kind="stable").reset_index(drop=True)
    at = TRIAL_COLUMNS.index("momentum") + 1
    return frame[TRIAL_COLUMNS[:at] + axes + TRIAL_COLUMNS[at:]]


def export_csv(store: Store, folder: Path, metric_name: str,
               task_axes: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """trials.csv and curves.csv from the store (floats in full precision, +inf as `inf`)."""
    trials_path, curves_path = folder / TRIALS_FILE, folder / CURVES_FILE
    write_atomic(trials_path, store.trials_frame(metric_name, task_axes).to_csv(index=False))
    write_atomic(curves_path, store.curves_frame().to_csv(index=False))
    return trials_path, curves_path


def export_checkpoints_csv(store: Store, folder: Path) -> Path | None:
    """checkpoints.csv from the store; None (and no file) when no trial has a checkpoint."""
    path = folder / CHECKPOINTS_FILE
    frame = store.checkpoints_frame()
    if frame.empty:
        path.unlink(missing_ok=True)
        return None
    write_atomic(path, frame.to_csv(index=False))
    return path


def export_noise_csv(store: Store, folder: Path) -> Path | None:
    """noise_scale.csv (and noise_scale_end.csv) from the store; None (and no file) when no seed
    has an estimate."""
    end, frame_end = folder / NOISE_END_FILE, store.noise_end_frame()
    if frame_end.empty:
        end.unlink(missing_ok=True)
    else:
        write_atomic(end, frame_end.to_csv(index=False))
    path = folder / NOISE_FILE
    frame = store.noise_frame()
    if frame.empty:
        path.unlink(missing_ok=True)
        return None
    write_atomic(path, frame.to_csv(index=False))
    return path

