"""Reproducibility: the environment, integrity checks, and re-running trials (the determinism
settings every worker computes under are hpconj.workers's).

Two levels of `hpconj check`. When this environment matches the one in manifest.json (hpconj
and torch versions, OS/architecture/C library, torch's CPU vector capability, the arithmetic
fingerprint, device type, threads per worker) every re-run value must be *bit-equal* to the
stored one (final weights' sha256 included), and so must every re-derived optimum and slope.
Otherwise training may amplify a last-bit difference of the arithmetic, so the check compares
what the results conclude (`compare_conclusions`, `compare_analysis`): the statistics are in
their docstrings and in the README. Each difference of environment is printed as a warning;
--rtol / --atol replace either level by a plain per-value tolerance.
"""
from __future__ import annotations

import functools
import math
import platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import hpconj
from hpconj.analysis import best_grid_lr, optima, shifts, slice_keys
from hpconj.axes import AXES
from hpconj.claims import HOLDS
from hpconj.config import Config, config_from_dict
from hpconj.engine.base import tensors_digest
from hpconj.folder import (BEST_MOMENTUM_FILE, CHECKPOINT_REQUIRED, CLAIMS_FILE, CHECKPOINTS_FILE, CONFIG_FILE, CRITICAL_FILE,
                           CURVES_FILE, CURVE_REQUIRED, OPTIMA_FILE, OPTIMA_TIME_FILE, SHIFTS_FILE, SHIFTS_TIME_FILE,
                           TARGET_FILE, TRIALS_FILE, INPUT_FILES, FolderError, not_planned, read_config_data, read_optional,
                           read_table, read_trials, trial_set)
from hpconj.records import DIVERGED, OK
from hpconj.store import TRIAL_COLUMNS, trials_table
from hpconj.trials import Trial, axis_values
from hpconj.workers import apply_determinism

from hpconj.integrity import CheckError, CheckReport

COMPARED = ("status", "train_loss", "val_loss", "val_error", "metric", "steps", "examples")


# ----------------------------------------------------------------------------- environment
def system_family(platform_string: str) -> str:
    """A platform string without its kernel release: 'Linux-6.18.44-fc-v669-x86_64-with-glibc2.36'
    → 'Linux x86_64 glibc2.36'. The same OS, architecture and C library with the same torch
    compute the same floats whatever the kernel build; strings of another shape stay whole."""
    match = re.fullmatch(r"([^-]+)-.+-([^-]+)-with-(.+)", platform_string)
    return " ".join(match.groups()) if match else platform_string


@functools.cache
def arithmetic_fingerprint(device_type: str) -> str:
    """The bits of a fixed set of float32 computations on this device, one thread, hashed (16 hex
    digits): matrix products at the engines' shapes (mm, addmm, bmm, baddbmm: MKL and cuBLAS pick
    their kernels by processor model, not only by instruction set), log-softmax and its backward,
    reductions, exp/tanh/gelu over lengths with a vector tail. Machines that differ here may give
    a re-run other bits; machines that agree computed all of these the same way."""
    device = torch.device(device_type)
    apply_determinism(device)  # the settings every run and re-run computes under
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outputs = []
        for m, k, n in ((8, 64, 64), (128, 64, 10), (512, 784, 128), (3, 20, 1), (37, 300, 300)):
            a, b, bias = rand(3, m, k), rand(3, n, k), rand(3, 1, n)
            outputs += [torch.addmm(bias[0, 0], a[0], b[0].t()), torch.mm(a[0], b[0].t()), torch.mm(b[0], a[0].t()),
                        torch.bmm(a, b.transpose(1, 2)), torch.baddbmm(bias, a, b.transpose(1, 2)),
                        torch.bmm(a.transpose(1, 2), a)]
        logits = rand(1000, 10) * 10
        logp = torch.log_softmax(logits, 1)
        outputs += [logp, torch.log_softmax(rand(100, 40) * 10, 1),
                    torch.ops.aten._log_softmax_backward_data(rand(1000, 10), logp, 1, torch.float32)]
        values = rand(37, 129)
        outputs += [values.exp(), values.tanh(), torch.nn.functional.gelu(values), values.sum(0), values.sum(1),
                    values.mean(1), (values * values).sum()]
        return tensors_digest({f"{i:03d}": out for i, out in enumerate(outputs)})
    finally:
        torch.set_num_threads(threads)


def environment(threads: int, device: torch.device) -> dict[str, Any]:
    return {"hpconj": hpconj.__version__, "torch": torch.__version__, "platform": system_family(platform.platform()),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "arithmetic": arithmetic_fingerprint(device.type), "device_type": device.type, "threads_per_worker": threads}


def environment_differences(manifest: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the recorded environment and this one, among what decides the bits:
    versions, OS/architecture/C library, the vector instructions torch's CPU kernels use (AVX2 and
    AVX-512 sum in other orders), the arithmetic fingerprint (which also sees the BLAS kernels
    the processor model gets), device type and threads. A value a manifest lacks differs."""
    recorded = {
        "hpconj": manifest.get("hpconj"), "torch": manifest.get("torch"),
        "platform": system_family(str(manifest.get("platform"))),
        "cpu_capability": manifest.get("cpu_capability"), "arithmetic": manifest.get("arithmetic"),
        "device_type": str(manifest.get("device", "cpu")).split(":")[0],
        "threads_per_worker": manifest.get("threads_per_worker"),
    }
    return [f"{key}: recorded {recorded[key]}, now {current[key]}" for key in recorded if recorded[key] != current[key]]


# ----------------------------------------------------------------------------- selection
def parse_sample(spec: str) -> tuple[str, float]:
    """'all' | 'N' | 'F%' → (kind, amount)."""
    text = spec.strip()
    if text == "all":
        return "all", 1.0
    try:
        if text.endswith("%"):
            value = float(text[:-1])
            if 0 < value <= 100:
                return "fraction", value / 100
        elif int(text) > 0:
            return "count", int(text)
    except ValueError:
        pass
    raise CheckError(f"--trials: must be all, a positive count N, or a percentage F%, got {spec!r}")


def select_trials(stored: pd.DataFrame, spec: str) -> list[str]:
    """A deterministic sample by trial id, always with every seed of each slice's best grid lr and
    of its two neighbours on the grid: the points the sub-grid optimum is fitted to."""
    kind, amount = parse_sample(spec)
    ids = sorted(stored["trial_id"])
    if kind == "all":
        return ids
    count = amount if kind == "count" else math.ceil(amount * len(ids))
    chosen = set(ids[: int(count)])
    best = best_grid_lr(stored).dropna(subset=["lr_best"])
    for _, row in best.iterrows():
        mask = np.logical_and.reduce([stored[k] == row[k] for k in slice_keys(stored)])
        grid = np.sort(stored.loc[mask, "lr"].unique())
        i = int(np.searchsorted(grid, row["lr_best"]))
        near = grid[max(0, i - 1): i + 2]
        chosen |= set(stored.loc[mask & stored["lr"].isin(near), "trial_id"])
    return sorted(chosen)


# ----------------------------------------------------------------------------- comparing
def same(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Equal within tolerance; NaN equals NaN, inf equals inf of the same sign."""
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def load_stored(folder: Path) -> tuple[Config, pd.DataFrame, pd.DataFrame]:
    """The stored config, trials and curves, every column checked (CheckError naming file, column, line)."""
    try:
        raw = read_config_data(folder)
        trials = read_trials(folder)
        curves = read_optional(folder / CURVES_FILE, CURVE_REQUIRED)
    except FolderError as exc:
        raise CheckError(str(exc)) from None
    return config_from_dict(raw, label=str(folder / CONFIG_FILE)), trials, curves


def compare_ids(config: Config, stored: pd.DataFrame, report: CheckReport, folder: Path) -> dict[str, Trial]:
    """Every stored trial must be one the stored config asks for, and none may be missing."""
    planned, foreign, missing = trial_set(config, stored)
    if foreign:
        report.add(CONFIG_FILE, "trial ids", f"{len(foreign)} trials of {TRIALS_FILE}", not_planned(config))
    for trial_id in missing:
        report.add(f"{TRIALS_FILE} trial {trial_id}", "row", "expected by the config", "missing")
    return planned


def compare_results(stored: pd.DataFrame, rerun: pd.DataFrame, stored_curves: pd.DataFrame, rerun_curves: pd.DataFrame,
                    report: CheckReport, rtol: float, atol: float, folder: Path) -> None:
    by_id = stored.set_index("trial_id")
    for _, row in rerun.iterrows():
        old = by_id.loc[row["trial_id"]]
        where = f"trials.csv trial {row['trial_id']}"
        for name in COMPARED:
            if not same(old[name], row[name], rtol, atol):
                report.add(where, name, old[name], row[name])
        if report.exact and isinstance(old.get("params_sha256"), str) and old["params_sha256"] != row["params_sha256"]:
            report.add(where, "params_sha256", old["params_sha256"], row["params_sha256"])
    if stored_curves.empty or rerun_curves.empty:
        return
    a = stored_curves[stored_curves["trial_id"].isin(rerun["trial_id"])].set_index(["trial_id", "step"])["train_loss"]
    b = rerun_curves.set_index(["trial_id", "step"])["train_loss"]
    for key in sorted(set(a.index) ^ set(b.index))[:20]:
        report.add(f"curves.csv trial {key[0]}", f"step {key[1]}", "present" if key in a.index else "absent",
                   "present" if key in b.index else "absent")
    for key in sorted(set(a.index) & set(b.index)):
        if not same(a[key], b[key], rtol, atol):
            report.add(f"curves.csv trial {key[0]}", f"train_loss at step {key[1]}", a[key], b[key])


def compare_checkpoints(folder: Path, rerun_trials: list[Any], results: list[Any], report: CheckReport,
                        rtol: float, atol: float) -> None:
    """The re-run trials' checkpoints (budget.checkpoints) against checkpoints.csv, value by value."""
    path = folder / CHECKPOINTS_FILE
    wanted = {t.trial_id for t in rerun_trials}
    now = {(r.trial_id, c.step): c for r in results if r.trial_id in wanted for c in r.checkpoints}
    if not path.is_file():
        if now:
            report.add(CHECKPOINTS_FILE, "file", "absent", f"{len(now)} checkpoints re-run")
        return
    try:
        stored = read_table(path, CHECKPOINT_REQUIRED)
    except FolderError as exc:
        raise CheckError(str(exc)) from None
    repeated = stored.duplicated(["trial_id", "step"])
    if repeated.any():
        row = stored[repeated].iloc[0]
        raise CheckError(f"{path}: trial {row['trial_id']} step {row['step']} appears more than once")
    stored = stored[stored["trial_id"].isin(wanted)].set_index(["trial_id", "step"])
    for key in sorted(set(stored.index) ^ set(now))[:20]:
        report.add(f"{CHECKPOINTS_FILE} trial {key[0]}", f"step {key[1]}", "present" if key in stored.index else
                   "absent", "present" if key in now else "absent")
    for key in sorted(set(stored.index) & set(now)):
        for name in ("fraction", "examples", "train_loss", "val_loss", "val_error"):
            if not same(stored.loc[key, name], getattr(now[key], name), rtol, atol):
                report.add(f"{CHECKPOINTS_FILE} trial {key[0]}", f"{name} at step {key[1]}", stored.loc[key, name],
                           getattr(now[key], name))


# ----------------------------------------------------------------------------- another machine
SPREAD_SHARE = 0.25  # a stable-side re-run may move by at most this share of the seed-to-seed spread
OPTIMUM_OCTAVES = 0.25  # a re-derived optimum outside its stored interval may still move this far
CLIFF_FACTOR = 2.0  # past the optimum, a trial this many times worse than the best is on the cliff
SLOPE_ABS = 0.05  # a re-derived slope outside its stored interval may still move this much


def _log_metric(values: pd.Series | np.ndarray) -> np.ndarray:
    """log of a metric (floored at 1e-12, so an error rate of 0 stays finite); ±inf and NaN kept."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(values), np.log(np.maximum(values, 1e-12)), values)


@dataclass(frozen=True)
class SliceNoise:
    """What a slice's stored trials say about noise: per grid lr the seeds' log metrics, the best
    grid lr, and u, the median seed spread up to the best lr."""

    grid: np.ndarray  # sorted lrs
    logs: dict[float, np.ndarray]  # lr → log metric of every stored seed (inf: diverged)
    statuses: dict[float, set[str]]
    best: float
    u: float

    @classmethod
    def of(cls, group: pd.DataFrame, best: float) -> SliceNoise:
        grid = np.sort(group["lr"].unique())
        logs = {lr: _log_metric(g["metric"]) for lr, g in group.groupby("lr")}
        statuses = {lr: set(g["status"]) for lr, g in group.groupby("lr")}
        spreads = [_spread(logs[lr]) for lr in grid if lr <= best]
        spreads = [v for v in spreads if np.isfinite(v)]
        if not spreads:  # one seed: how far the curve moves in one grid step stands in for the spread
            means = [float(np.mean(logs[lr])) for lr in grid if lr <= best]
            spreads = [abs(b - a) for a, b in zip(means, means[1:]) if np.isfinite(a) and np.isfinite(b)]
        return cls(grid, logs, statuses, best, float(np.median(spreads)) if spreads else math.inf)

    def window(self, lr: float) -> list[float]:
        """lr and its neighbours on the grid."""
        i = int(np.searchsorted(self.grid, lr))
        return list(self.grid[max(0, i - 1): i + 2])


def _spread(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) if len(finite) > 1 else math.nan


def compare_conclusions(stored: pd.DataFrame, rerun: pd.DataFrame, stored_curves: pd.DataFrame,
                        rerun_curves: pd.DataFrame, report: CheckReport) -> None:
    """Re-run trials against stored ones on a machine whose arithmetic differs (README: "check").

    Up to a slice's best grid lr training does not amplify small differences: the re-run log
    metric may differ from the stored one by at most SPREAD_SHARE of the seed spread there (the
    larger of this lr's and the slice's median up to the best lr), either way, and below the best
    lr each curve point by as much of the seeds' spread at that step. Above it differences grow,
    up to chaos on the cliff: a re-run may come out worse by any amount, but not better than the
    stored trials of its own and the neighbouring lrs, nor than those at the best lr (all seeds;
    the same share of slack), and anything goes next to a diverged trial. A change of one step
    of a stepped metric (an error rate) always passes. A status may flip only where that window
    holds the other status, or, past the optimum, to diverged where any larger lr diverged or
    where the stored trial was already CLIFF_FACTOR times worse than the best. Steps and
    examples of trials that finished on both machines must be equal.
    """
    keys = slice_keys(stored)
    best = best_grid_lr(stored).set_index(keys)["lr_best"]
    noise = {key: SliceNoise.of(group, best.get(key, math.inf)) for key, group in stored.groupby(keys)}
    by_id = stored.set_index("trial_id")
    quantum = metric_quantum(stored["metric"])
    stable_ids = []
    for _, row in rerun.iterrows():
        old = by_id.loc[row["trial_id"]]
        where = f"trials.csv trial {row['trial_id']}"
        for name in ("steps", "examples") if old["status"] == OK == row["status"] else ():  # a divergence may come sooner
            if not same(old[name], row[name], 0.0, 0.0):
                report.add(where, name, old[name], row[name])
        key = tuple(old[k] for k in keys)
        if key not in noise:
            continue
        ok, stable = _agrees(noise[key], float(old["lr"]), old, row, quantum)
        if not ok:
            report.add(where, "status" if old["status"] != row["status"] else "metric",
                       old["status"] if old["status"] != row["status"] else old["metric"],
                       row["status"] if old["status"] != row["status"] else row["metric"])
        elif stable and old["status"] == OK == row["status"]:
            stable_ids.append(row["trial_id"])
    _compare_curves(stable_ids, stored, stored_curves, rerun_curves, report)


def _agrees(noise: SliceNoise, lr: float, old: pd.Series, new: pd.Series, quantum: float) -> tuple[bool, bool]:
    """(agrees, below the optimum: its curve is compared too) for one re-run trial."""
    window = noise.window(lr)
    below = lr < noise.best
    if old["status"] != new["status"]:
        if lr > noise.best and new["status"] == DIVERGED:
            # up the cliff a run may diverge on one machine and collapse on another
            above = [w for w in noise.grid if w >= window[0]]
            if any(DIVERGED in noise.statuses.get(w, set()) for w in above):
                return True, below
            if _log_metric([old["metric"]])[0] >= np.nanmin(noise.logs[noise.best]) + math.log(CLIFF_FACTOR):
                return True, below
        return any(new["status"] in noise.statuses.get(w, set()) for w in window), below
    a, b = _log_metric([old["metric"], new["metric"]])
    if not (np.isfinite(a) and np.isfinite(b)):
        return bool(a == b or (np.isnan(a) and np.isnan(b))), below
    if abs(float(new["metric"]) - float(old["metric"])) <= quantum:
        return True, below  # one step of a metric that moves in steps (an error rate: one example)
    local = _spread(noise.logs.get(lr, np.array([])))
    tolerance = SPREAD_SHARE * max(local if np.isfinite(local) else 0.0, noise.u)
    if lr <= noise.best:
        return abs(b - a) <= tolerance, below
    near = np.concatenate([noise.logs[w] for w in window])
    if np.isinf(near).any():
        return True, below  # next to divergence: any finite value may come out
    # past the optimum differences grow, up to chaos on the cliff: a re-run may come out worse by
    # any amount, but not better than the stored trials around it or at the best lr (that could
    # move lr*)
    floor = min(np.nanmin(near), np.nanmin(noise.logs[noise.best]))
    return bool(b >= floor - tolerance), below


def metric_quantum(metric: pd.Series) -> float:
    """The smallest step between two distinct stored values of the metric: one example of an
    error rate; for a loss, far below any tolerance."""
    values = np.unique(metric[np.isfinite(metric)].to_numpy(dtype=float))
    steps = np.diff(values)
    return float(steps[steps > 0].min()) if (steps > 0).any() else 0.0


def _compare_curves(stable: list[str], stored: pd.DataFrame, stored_curves: pd.DataFrame, rerun_curves: pd.DataFrame,
                    report: CheckReport) -> None:
    """Curve points of stable-side trials: within SPREAD_SHARE of the seeds' spread of the training
    loss at that step (or of its median over the curve, if larger)."""
    if stored_curves.empty or rerun_curves.empty or not stable:
        return
    keys = slice_keys(stored)
    cells = stored.set_index("trial_id")[[*keys, "lr"]]
    points = stored_curves.join(cells, on="trial_id")
    points["log"] = _log_metric(points["train_loss"])
    spread = points.groupby([*keys, "lr", "step"])["log"].agg(lambda v: _spread(v.to_numpy()))
    a = stored_curves[stored_curves["trial_id"].isin(stable)].set_index(["trial_id", "step"])["train_loss"]
    b = rerun_curves[rerun_curves["trial_id"].isin(stable)].set_index(["trial_id", "step"])["train_loss"]
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1)
    for trial_id, curve in joined.groupby(level=0):
        cell = tuple(cells.loc[trial_id])
        widths = spread.loc[cell] if cell in spread.index.droplevel("step") else pd.Series(dtype=float)
        floor = float(np.nanmedian(widths)) if len(widths) and np.isfinite(widths).any() else 0.0
        for (_, step), r in curve.iterrows():
            x, y = _log_metric([r["a"], r["b"]])
            width = widths.get(step, math.nan)
            tolerance = SPREAD_SHARE * max(width if np.isfinite(width) else 0.0, floor)
            if np.isnan(x) or np.isnan(y):
                report.add(f"curves.csv trial {trial_id}", f"step {step}", "present" if not np.isnan(x) else "absent",
                           "present" if not np.isnan(y) else "absent")
            elif not (x == y or abs(y - x) <= tolerance):
                report.add(f"curves.csv trial {trial_id}", f"train_loss at step {step}", float(r["a"]), float(r["b"]))


# the tables `hpconj plot` derives over training time and across momenta, the columns checked in each
TIME_TABLES = {OPTIMA_TIME_FILE: ("optima_time", ("lr_opt", "lr_lo", "lr_hi", "metric_opt")),
               SHIFTS_TIME_FILE: ("shifts_time", ("slope", "slope_lo", "slope_hi", "shift_octaves")),
               TARGET_FILE: ("targets", ("examples_to_target", "examples_lo", "examples_hi")),
               CRITICAL_FILE: ("critical", ("s_min", "e_min", "b_crit", "b_crit_lo", "b_crit_hi", "b_noise")),
               BEST_MOMENTUM_FILE: ("best_momentum", ("best_momentum", "lr_opt", "beta_share"))}


def stored_analysis(folder: Path) -> Any:
    """The analysis `hpconj plot` derives from the folder's stored records (hpconj.report.Frames),
    computed once per state of those files: the claims and the tables over time both read it."""
    stamps = tuple((name, *_stamp(folder / name)) for name in INPUT_FILES)
    return _analysis(str(folder.resolve()), stamps)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except FileNotFoundError:
        return (-1, -1)
    return (status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=2)
def _analysis(folder: str, stamps: tuple) -> Any:
    from hpconj.report import analyse, load_results  # the same derivation `hpconj plot` ran

    return analyse(load_results(Path(folder)))


def compare_derived_tables(folder: Path, report: CheckReport) -> None:
    """Each stored table over training time (and best_momentum.csv) against what the stored records
    give: an edited table is caught even with its hash recomputed in manifest.json."""
    present = [name for name in TIME_TABLES if (folder / name).is_file()]
    if not present:
        return
    try:
        frames = stored_analysis(folder)
        tables = {name: read_table(folder / name) for name in present}
    except (FolderError, ValueError) as exc:
        raise CheckError(str(exc)) from None
    for name, table in tables.items():
        attribute, columns = TIME_TABLES[name]
        derived = getattr(frames, attribute)
        keys = [c for c in table.columns if c in derived.columns and c not in columns
                and table[c].dtype == derived[c].dtype and c not in ("target", "n_batch_sizes", "n_seeds")]
        keys = [k for k in keys if k in ("parameterization", "optimizer", "axis", "fixed") or k in AXES]
        if len(table) != len(derived):
            report.add(name, "rows", len(table), len(derived))
            continue
        joined = table.merge(derived, on=keys, suffixes=("_stored", "_now"))
        for _, r in joined.iterrows():
            where = f"{name} " + ", ".join(f"{k}={r[k]}" for k in keys)
            for column in columns:
                if not same(r[f"{column}_stored"], r[f"{column}_now"], 1e-9, 0.0):
                    report.add(where, column, r[f"{column}_stored"], r[f"{column}_now"])


def compare_analysis(folder: Path, stored: pd.DataFrame, merged: pd.DataFrame, report: CheckReport,
                     exact: bool) -> None:
    """The stored tables against the stored trials (they must be what the trials give), then the
    conclusions re-derived with the re-run trials in place against those of the stored trials:
    equal where the environment matches; elsewhere every optimum within its stored interval or
    OPTIMUM_OCTAVES of it, and every slope within its stored interval or SLOPE_ABS of it (a
    bootstrap over 2–4 seeds gives intervals whose edges sit on the estimate itself). The
    re-derivation runs whether or not `hpconj plot` has written the tables."""
    try:
        tables = {name: read_table(folder / name) for name in (OPTIMA_FILE, SHIFTS_FILE) if (folder / name).is_file()}
    except FolderError as exc:
        raise CheckError(str(exc)) from None
    from_stored, now = optima(stored), optima(merged)
    shifts_stored, shifts_now = shifts(stored, from_stored), shifts(merged, now)
    if OPTIMA_FILE in tables:
        _compare_optima_table(tables[OPTIMA_FILE], from_stored, report, OPTIMA_FILE, 1e-9)
    if SHIFTS_FILE in tables:
        _compare_shift_table(tables[SHIFTS_FILE], shifts_stored, report, SHIFTS_FILE, 1e-9)
    if exact:
        _compare_optima_table(from_stored, now, report, "optima (re-run)", 1e-9)
        _compare_shift_table(shifts_stored, shifts_now, report, "shifts (re-run)", 1e-9)
    else:
        _compare_optima_moves(from_stored, now, report)
        _compare_slope_moves(shifts_stored, shifts_now, report)
    config = read_config_data(folder)
    if config.get("expect"):
        # claims over training time or on the critical batch size read the stored records' full
        # analysis both times: a re-run records final metrics only (its trials are verified above)
        try:
            full = stored_analysis(folder)
        except (FolderError, ValueError) as exc:
            raise CheckError(str(exc)) from None
        compare_claims(folder, replace(full, optima=from_stored, shifts=shifts_stored),
                       replace(full, optima=now, shifts=shifts_now), report)


def compare_claims(folder: Path, stored: Any, now: Any, report: CheckReport) -> None:
    """The config's claims (hpconj.claims): claims.csv must hold the verdicts the stored records give
    (an edited verdict is caught), and every claim that holds on the stored trials must still hold
    with the re-run trials in place — the check a CI runs to ask "do our conclusions still hold?".
    `stored` and `now` are the analysis frames (hpconj.report.Frames) of each."""
    from hpconj.report import judged_claims

    config = read_config_data(folder)
    recorded = judged_claims(config, stored)
    if recorded.empty:
        return
    if (folder / CLAIMS_FILE).is_file():
        try:
            table = read_table(folder / CLAIMS_FILE, ("id", "verdict"))
        except FolderError as exc:
            raise CheckError(str(exc)) from None
        written = dict(zip(table["id"], table["verdict"]))
        for claim_id, verdict in zip(recorded["id"], recorded["verdict"]):
            if written.get(claim_id) != verdict:
                report.add(f"{CLAIMS_FILE} claim {claim_id}", "verdict", written.get(claim_id, "absent"), verdict)
    rejudged = judged_claims(config, now)
    again = dict(zip(rejudged["id"], rejudged["verdict"]))
    for claim_id, verdict in zip(recorded["id"], recorded["verdict"]):
        if verdict == HOLDS and again.get(claim_id) != HOLDS:
            report.add(f"claim {claim_id} (re-run)", "verdict", verdict, again.get(claim_id))


def _compare_optima_table(table: pd.DataFrame, derived: pd.DataFrame, report: CheckReport, label: str,
                          rtol: float) -> None:
    joined = table.merge(derived, on=slice_keys(derived), suffixes=("_stored", "_now"))
    for _, r in joined.iterrows():
        for name in ("lr_opt", "lr_lo", "lr_hi", "metric_opt"):
            if not same(r[f"{name}_stored"], r[f"{name}_now"], rtol, 0.0):
                report.add(f"{label} slice {_slice(r)}", name, r[f"{name}_stored"], r[f"{name}_now"])


def _compare_optima_moves(table: pd.DataFrame, derived: pd.DataFrame, report: CheckReport) -> None:
    joined = table.merge(derived, on=slice_keys(derived), suffixes=("_stored", "_now"))
    for _, r in joined.iterrows():
        old, new = float(r["log2_lr_opt_stored"]), float(r["log2_lr_opt_now"])
        if not (np.isfinite(old) and np.isfinite(new)):
            if np.isfinite(old) != np.isfinite(new):
                report.add(f"optima slice {_slice(r)}", "log2 lr*", old, new)
            continue
        lo, hi = np.log2(float(r["lr_lo_stored"])), np.log2(float(r["lr_hi_stored"]))
        inside = np.isfinite(lo) and np.isfinite(hi) and lo <= new <= hi
        if not inside and abs(new - old) > OPTIMUM_OCTAVES:
            report.add(f"optima slice {_slice(r)}", "log2 lr* (re-derived)", old, new)


def _compare_shift_table(table: pd.DataFrame, derived: pd.DataFrame, report: CheckReport, label: str,
                         tol: float) -> None:
    keys = ["parameterization", "optimizer", "axis", "fixed"]
    joined = table.merge(derived, on=keys, suffixes=("_stored", "_now"))
    for _, r in joined.iterrows():
        for name in ("slope", "slope_lo", "slope_hi", "shift_octaves"):
            if not same(r[f"{name}_stored"], r[f"{name}_now"], tol, tol):
                report.add(f"{label} {r['parameterization']} {r['axis']} at {r['fixed']}", name,
                           r[f"{name}_stored"], r[f"{name}_now"])


def _compare_slope_moves(table: pd.DataFrame, derived: pd.DataFrame, report: CheckReport) -> None:
    keys = ["parameterization", "optimizer", "axis", "fixed"]
    for _, r in table.merge(derived, on=keys, suffixes=("_stored", "_now")).iterrows():
        old, new, lo, hi = (float(r[c]) for c in ("slope_stored", "slope_now", "slope_lo_stored", "slope_hi_stored"))
        if not (np.isfinite(old) and np.isfinite(new)):
            if np.isfinite(old) != np.isfinite(new):
                report.add(f"shifts {r['parameterization']} {r['axis']} at {r['fixed']}", "slope", old, new)
            continue
        inside = np.isfinite(lo) and np.isfinite(hi) and lo <= new <= hi
        if not inside and abs(new - old) > SLOPE_ABS:
            report.add(f"shifts.csv {r['parameterization']} {r['axis']} at {r['fixed']}", "slope (re-derived)",
                       old, new)


def _slice(row: pd.Series) -> str:
    """'(standard, B=16, β=0.9)', with every other axis the row has."""
    axes = [a for a in AXES if a in row.index]
    return f"({', '.join([str(row['parameterization'])] + [f'{AXES[a].symbol}={AXES[a].text(row[a])}' for a in axes])})"


def results_frame(trials: Iterable[Trial], results: Iterable[Any], metric_name: str,
                  task_axes: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Re-run results as trials.csv and curves.csv rows (the same columns and conversions)."""
    by_id = {t.trial_id: t for t in trials}
    rows, points = [], []
    for r in results:
        t = by_id[r.trial_id]
        rows.append({**axis_values(t, task_axes),
            "trial_id": t.trial_id, "status": r.status, "parameterization": t.parameterization,
            "optimizer": t.optimizer, "lr": t.lr, "batch_size": t.batch_size, "momentum": t.momentum, "seed": t.seed,
            "train_loss": r.train_loss, "val_loss": r.val_loss, "val_error": r.val_error, "steps": r.steps,
            "examples": r.examples, "wall_s": r.wall_s, "reference_batch_size": t.reference_batch_size,
            "params_sha256": r.params_sha256, "error": r.error,
        })
        points += [{"trial_id": t.trial_id, "step": p.step, "examples": p.examples, "train_loss": p.train_loss}
                   for p in r.curve]
    frame = (trials_table(pd.DataFrame(rows), metric_name, task_axes) if rows
             else pd.DataFrame(columns=TRIAL_COLUMNS[:TRIAL_COLUMNS.index("momentum") + 1] + list(task_axes)
                               + TRIAL_COLUMNS[TRIAL_COLUMNS.index("momentum") + 1:]))
    return frame, pd.DataFrame(points)
