"""Bracket search and random search against lr grids, on the quickstart's slices, in one run.

    make bench            # or: .venv/bin/python benchmarks/search.py [--seeds 2]

The quickstart (configs/quickstart.yaml: digits MLP, B ∈ {8, 32, 128}, β ∈ {0, 0.9}, standard and
conjugate, 12 slices) is swept four ways, each as a user would (`hpconj sweep --quiet`, a fresh
folder, wall time from process start to exit, the same machine in the same run):

  dense        quarter-octave grid on 2^-10 .. 2^1 (45 lrs per slice): the reference optima
  grid         half-octave grid on the same range (23 lrs), the quickstart's own
  bracket      configs/quickstart_search.yaml (bracket search from 2^-4, step 2, precision 0.25)
  random       random search on 2^-10 .. 2^1 with as many lrs per slice as the bracket search used
               on average (rounded up)

For each, the optimum of every slice (hpconj.analysis.optima) is compared with the dense grid's:
the worst and median |log2 lr* − log2 lr*_dense| in octaves, and how many optima are at an edge.
The dense grid's optima are themselves estimates (two seeds); an error is a distance to them.
Target (issue 18): the bracket search within 0.15 octave everywhere with ≤ 40% of the half-octave
grid's trials.
"""
from __future__ import annotations

import argparse
import copy
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from hpconj.analysis import optima
from hpconj.folder import read_trials

ROOT = Path(__file__).resolve().parents[1]
SLICE = ["parameterization", "batch_size", "momentum"]


def sweep(config: dict, folder: Path) -> float:
    """Run `hpconj sweep` on `config` into `folder` as a user would; its wall time in seconds."""
    path = folder.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hpconj", "sweep", str(path), "--out", str(folder), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"hpconj sweep {path} failed:\n{done.stderr}")
    return time.perf_counter() - start


def variants(seeds: int) -> dict[str, dict]:
    base = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    base["seeds"] = seeds
    searched = yaml.safe_load((ROOT / "configs" / "quickstart_search.yaml").read_text())
    searched["seeds"] = seeds
    dense = copy.deepcopy(base)
    dense["sweep"]["lr"] = {"log2_range": [-10, 1], "step": 0.25}
    return {"dense": dense, "grid": base, "bracket": searched}


def errors(found: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    joined = found.merge(reference, on=SLICE, suffixes=("", "_ref"))
    return np.abs(joined["log2_lr_opt"] - joined["log2_lr_opt_ref"]).to_numpy()


def replay_starts(dense: pd.DataFrame, searched: dict, reference: pd.DataFrame, grid_trials: int) -> None:
    """The bracket search from other starts, replayed on the dense grid's results without training:
    every lr it asks for is a dense-grid lr (the same trial, hence the same result), except those
    beyond the dense grid's ends, which count as diverged and are counted."""
    from hpconj.config import config_from_dict
    from hpconj.search import planned_trials

    results = dict(zip(dense["trial_id"], dense["metric"].astype(float)))
    print("the bracket search from other starts, replayed on the dense grid's results (no training):")
    print(f"{'start':<7} {'trials':>7} {'of grid':>8} {'worst':>7} {'median':>7} {'outside':>8}")
    for start in (-8, -6, -4, -2, 0):
        data = copy.deepcopy(searched)
        data["sweep"]["lr"]["start"] = f"2^{start}"
        config = config_from_dict(data)
        known: dict[str, float] = {}
        outside = 0
        while (plan := planned_trials(config, known)).pending:
            for trial in plan.pending:
                outside += trial.trial_id not in results
                known[trial.trial_id] = results.get(trial.trial_id, math.inf)
        ids = {t.trial_id for t in plan.trials}
        error = errors(optima(dense[dense["trial_id"].isin(ids)]), reference)
        print(f"2^{start:<5} {len(ids):>7} {len(ids) / grid_trials:>8.0%} {error.max():>7.3f} {np.median(error):>7.3f} "
              f"{outside:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per trial (the quickstart's 2)")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = variants(args.seeds)
        for name in ("dense", "grid", "bracket", "random"):
            if name == "random":  # as many lrs per slice as the bracket search used, rounded up
                per_slice = math.ceil(rows["bracket"]["trials"] / len(rows["bracket"]["optima"]) / args.seeds)
                configs["random"] = copy.deepcopy(configs["grid"])
                configs["random"]["sweep"]["lr"] = {"search": "random", "trials": per_slice, "log2_range": [-10, 1]}
            seconds = sweep(configs[name], Path(tmp) / name)
            trials = read_trials(Path(tmp) / name)
            rows[name] = {"trials": len(trials), "seconds": seconds, "optima": optima(trials), "trials_frame": trials}
    reference = rows["dense"]["optima"]
    grid_trials = rows["grid"]["trials"]
    print(f"{len(reference)} slices (quickstart), {args.seeds} seeds; errors against the dense grid's optima, in octaves")
    print(f"{'method':<9} {'trials':>7} {'of grid':>8} {'wall s':>7} {'worst':>7} {'median':>7} {'at edge':>8}")
    for name, row in rows.items():
        error = errors(row["optima"], reference)
        edge = int(row["optima"]["at_edge"].sum())
        print(f"{name:<9} {row['trials']:>7} {row['trials'] / grid_trials:>8.0%} {row['seconds']:>7.1f} "
              f"{error.max():>7.3f} {np.median(error):>7.3f} {edge:>8}")
    replay_starts(rows["dense"]["trials_frame"], configs["bracket"], reference, grid_trials)
    bracket = rows["bracket"]
    worst = errors(bracket["optima"], reference).max()
    share = bracket["trials"] / grid_trials
    verdict = "met" if worst <= 0.15 and share <= 0.40 else "NOT met"
    print(f"target (bracket ≤ 0.15 octave worst error with ≤ 40% of the grid's trials): {verdict} "
          f"({worst:.3f} octave, {share:.0%})")


if __name__ == "__main__":
    main()
