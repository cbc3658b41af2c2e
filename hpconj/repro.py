"""Reproducibility: determinism settings, file hashes, integrity checks, and re-running trials.

Policy for `hpconj check` tolerances: when this environment matches the one in manifest.json
(hpconj and torch versions, OS/architecture/C library, torch's CPU vector capability, the
arithmetic fingerprint, device type, threads per worker) every re-run value must be *bit-equal*
to the stored one (final weights' sha256 included). Otherwise the default is rtol 1e-4 (atol
1e-12), weight digests are not compared, and each difference of environment is printed as a
warning. --rtol / --atol override either default.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

import hpconj
from hpconj.analysis import best_grid_lr, optima, shifts
from hpconj.config import Config, config_from_dict
from hpconj.engine.base import tensors_digest
from hpconj.store import TRIAL_COLUMNS, trials_table, write_atomic
from hpconj.trials import Trial, expand_trials

HASHED = ("trials.csv", "curves.csv", "noise_scale.csv", "config.yaml", "optima.csv", "shifts.csv", "summary.md")
COMPARED = ("status", "train_loss", "val_loss", "val_error", "metric", "steps", "examples")
LOOSE_RTOL, LOOSE_ATOL = 1e-4, 1e-12


class CheckError(ValueError):
    """The folder cannot be checked at all (bad input: exit status 2)."""


# ----------------------------------------------------------------------------- determinism
def apply_determinism(device: torch.device | None = None) -> dict[str, Any]:
    """Deterministic kernels everywhere (and the cuBLAS workspace CUDA needs for them)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {
        "use_deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "CUBLAS_WORKSPACE_CONFIG": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }


# ----------------------------------------------------------------------------- hashes
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def result_files(folder: Path) -> list[Path]:
    """Every result file hpconj writes (the store excepted: SQLite rewrites its pages freely)."""
    files = [folder / name for name in HASHED if (folder / name).is_file()]
    plots = folder / "plots"
    if plots.is_dir():
        files += sorted(p for p in plots.iterdir() if p.suffix in (".png", ".svg"))
    return files


def record_hashes(folder: Path) -> None:
    """Put the sha256 of every result file into manifest.json."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest["files"] = {str(p.relative_to(folder)): sha256_file(p) for p in result_files(folder)}
    write_atomic(path, json.dumps(manifest, indent=2) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise CheckError(f"{folder}: no such results folder")
    path = folder / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckError(f"{path}: missing (not an hpconj results folder?)") from None
    except (OSError, ValueError) as exc:
        raise CheckError(f"{path}: unreadable ({exc})") from None


def integrity_problems(folder: Path) -> list[str]:
    """Files edited or deleted since hpconj recorded them, one line each."""
    manifest = read_manifest(folder)
    recorded: dict[str, str] = manifest.get("files") or {}
    if not recorded:
        raise CheckError("manifest.json: records no file hashes (made by an older hpconj?)")
    problems = []
    for name, digest in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: edited since it was recorded (sha256 differs)")
    return problems


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
    """A deterministic sample by trial id, always with every seed of each slice's best grid lr."""
    kind, amount = parse_sample(spec)
    ids = sorted(stored["trial_id"])
    if kind == "all":
        return ids
    count = amount if kind == "count" else math.ceil(amount * len(ids))
    chosen = set(ids[: int(count)])
    best = best_grid_lr(stored)
    keys = ["parameterization", "optimizer", "batch_size", "momentum"]
    merged = stored.merge(best[keys + ["lr_best"]], on=keys)
    chosen |= set(merged[np.isclose(merged["lr"], merged["lr_best"], rtol=0, atol=0)]["trial_id"])
    return sorted(chosen)


# ----------------------------------------------------------------------------- comparing
@dataclass
class CheckReport:
    differences: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # where, field, stored, now, rel
    warnings: list[str] = field(default_factory=list)
    rerun: int = 0
    exact: bool = True

    def add(self, where: str, name: str, stored: Any, now: Any) -> None:
        self.differences.append((where, name, _fmt(stored), _fmt(now), _relative(stored, now)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _relative(a: Any, b: Any) -> str:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(a) and math.isfinite(b)):
        return ""
    return f"{abs(a - b) / max(abs(a), abs(b), 1e-300):.2e}"


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
    try:
        raw = yaml.safe_load((folder / "config.yaml").read_text())
        trials = pd.read_csv(folder / "trials.csv")
        curves = pd.read_csv(folder / "curves.csv") if (folder / "curves.csv").is_file() else pd.DataFrame()
    except FileNotFoundError as exc:
        raise CheckError(f"{exc.filename}: missing") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise CheckError(f"{folder}: unreadable results ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise CheckError("config.yaml: not a config mapping")
    return config_from_dict(raw, label=str(folder / "config.yaml")), trials, curves


def compare_ids(config: Config, stored: pd.DataFrame, report: CheckReport, folder: Path) -> dict[str, Trial]:
    """Every stored trial must be one the stored config asks for, and none may be missing."""
    planned = {t.trial_id: t for t in expand_trials(config)}
    # trials of lr values or seeds no longer in the grid are still this experiment's when their
    # own fields rebuild their id under the stored config
    for _, row in stored[~stored["trial_id"].isin(planned)].iterrows():
        trial = rebuild_trial(config, row)
        if trial.trial_id == row["trial_id"]:
            planned[trial.trial_id] = trial
    present = set(stored["trial_id"])
    foreign = sorted(present - set(planned))
    if foreign:
        report.add("config.yaml", "trial ids", f"{len(foreign)} trials of trials.csv",
                   "not produced by the stored config (was it edited?)")
    for trial_id in sorted(set(t.trial_id for t in expand_trials(config)) - present):
        report.add(f"trials.csv trial {trial_id}", "row", "expected by the config", "missing")
    return planned


def rebuild_trial(config: Config, row: pd.Series) -> Trial:
    b_ref = row.get("reference_batch_size")
    b_ref = None if b_ref is None or pd.isna(b_ref) else int(b_ref)
    return Trial(config.task, config.optimizer, str(row["parameterization"]), float(row["lr"]), int(row["batch_size"]),
                 float(row["momentum"]), int(row["seed"]), config.budget, b_ref, config.optimizer_settings)


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
    # curve points are loss values: equal between cohort runs, ≤ 1e-6 between engines (README)
    curve_rtol = rtol if report.exact else max(rtol, 1e-6)
    for key in sorted(set(a.index) & set(b.index)):
        if not same(a[key], b[key], curve_rtol, atol):
            report.add(f"curves.csv trial {key[0]}", f"train_loss at step {key[1]}", a[key], b[key])


def compare_analysis(folder: Path, stored: pd.DataFrame, merged: pd.DataFrame, report: CheckReport, rtol: float,
                     atol: float) -> None:
    """Re-derive optima and shifts from the (partly re-run) trials; compare with the stored tables."""
    keys = ["parameterization", "optimizer", "batch_size", "momentum"]
    stored_best, now_best = best_grid_lr(stored), best_grid_lr(merged)
    joined = stored_best.merge(now_best, on=keys, suffixes=("_stored", "_now"))
    for _, r in joined.iterrows():
        if not same(r["lr_best_stored"], r["lr_best_now"], 0.0, 0.0):
            report.add(f"slice {_slice(r)}", "best grid lr", r["lr_best_stored"], r["lr_best_now"])
    optimum = optima(merged)
    if (folder / "optima.csv").is_file():
        table = pd.read_csv(folder / "optima.csv").merge(optimum, on=keys, suffixes=("_stored", "_now"))
        for _, r in table.iterrows():
            for name in ("lr_opt", "lr_lo", "lr_hi", "metric_opt"):
                if not same(r[f"{name}_stored"], r[f"{name}_now"], max(rtol, 1e-9), atol):
                    report.add(f"optima.csv slice {_slice(r)}", name, r[f"{name}_stored"], r[f"{name}_now"])
    if (folder / "shifts.csv").is_file():
        keys2 = ["parameterization", "optimizer", "axis", "fixed"]
        table = pd.read_csv(folder / "shifts.csv").merge(shifts(merged, optimum), on=keys2, suffixes=("_stored", "_now"))
        for _, r in table.iterrows():
            for name in ("slope", "slope_lo", "slope_hi", "shift_octaves"):
                if not same(r[f"{name}_stored"], r[f"{name}_now"], max(rtol, 1e-9), max(atol, 1e-9)):
                    report.add(f"shifts.csv {r['parameterization']} {r['axis']} at {r['fixed']}", name,
                               r[f"{name}_stored"], r[f"{name}_now"])


def _slice(row: pd.Series) -> str:
    return f"({row['parameterization']}, B={row['batch_size']}, β={row['momentum']:g})"


def results_frame(trials: Iterable[Trial], results: Iterable[Any], metric_name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Re-run results as trials.csv and curves.csv rows (the same columns and conversions)."""
    by_id = {t.trial_id: t for t in trials}
    rows, points = [], []
    for r in results:
        t = by_id[r.trial_id]
        rows.append({
            "trial_id": t.trial_id, "status": r.status, "parameterization": t.parameterization,
            "optimizer": t.optimizer, "lr": t.lr, "batch_size": t.batch_size, "momentum": t.momentum, "seed": t.seed,
            "train_loss": r.train_loss, "val_loss": r.val_loss, "val_error": r.val_error, "steps": r.steps,
            "examples": r.examples, "wall_s": r.wall_s, "reference_batch_size": t.reference_batch_size,
            "params_sha256": r.params_sha256, "error": r.error,
        })
        points += [{"trial_id": t.trial_id, "step": p.step, "examples": p.examples, "train_loss": p.train_loss}
                   for p in r.curve]
    frame = trials_table(pd.DataFrame(rows), metric_name) if rows else pd.DataFrame(columns=TRIAL_COLUMNS)
    return frame, pd.DataFrame(points)
