"""Analysis of recorded trials: tidy DataFrames in, tidy DataFrames out (no drawing here)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

SLICE_AXES = ["parameterization", "optimizer", "batch_size", "momentum"]


def slice_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean metric per slice and lr (diverged trials count as +inf; failed ones are left out)."""
    finished = trials[trials["status"].isin(["ok", "diverged"])]
    grouped = finished.groupby(SLICE_AXES + ["lr"], sort=True)["metric"]
    return grouped.agg(metric_mean="mean", metric_std="std", n_seeds="count").reset_index()


def best_grid_lr(trials: pd.DataFrame) -> pd.DataFrame:
    """Per slice: the grid lr with the lowest seed-mean metric, its log2, and whether it is at an edge."""
    curves = slice_curves(trials)
    rows = []
    for key, group in curves.groupby(SLICE_AXES, sort=True):
        group = group.sort_values("lr")
        values = group["metric_mean"].to_numpy()
        if not np.isfinite(values).any():
            rows.append((*key, math.nan, math.nan, math.inf, False, int(group["n_seeds"].max())))
            continue
        best = int(np.nanargmin(np.where(np.isfinite(values), values, np.inf)))
        lr = float(group["lr"].iloc[best])
        at_edge = best in (0, len(group) - 1) and len(group) > 1
        rows.append((*key, lr, math.log2(lr), float(values[best]), at_edge, int(group["n_seeds"].iloc[best])))
    return pd.DataFrame(rows, columns=SLICE_AXES + ["lr_best", "log2_lr_best", "metric_best", "at_edge", "n_seeds"])
