"""Analysis of recorded trials: tidy DataFrames in, tidy DataFrames out (no drawing here).

Vocabulary (docs/design.md): a *slice* is the set of trials that differ only in lr and seed; its
*optimum* is the lr minimising the seed-mean metric; the *shift* along an axis is the slope of
log2 lr* against the axis' abscissa (hpconj.axes: log2 B, log2(1 − β), log2 width, ...), with every
other axis held at one value. A slice is keyed by every axis the trials table has.

Optimum of a slice, with m(x) the seed-mean metric at x = log2 lr (+inf if any seed diverged):
  1. i = argmin over the grid of the finite m;
  2. sub-grid refinement: the parabola through (x, log m) at i−1, i, i+1 — only when both
     neighbours are finite and it opens upwards — gives x* = its vertex, clipped to
     [x_{i−1}, x_{i+1}]; otherwise x* = x_i (a collapsed or diverged neighbour must not pull it);
     the reported metric m* is m_i, the best measured seed mean;
  3. `at_edge` when i is the first or last lr of the grid: then x* is only a bound, never refined;
  4. interval: 2.5 and 97.5 percentiles of x* over B_BOOT bootstrap resamples of the seeds
     (with replacement, the same resampled seeds for every slice, RNG seed BOOT_SEED), widened
     if needed to contain x* itself (with 2 seeds there are only 3 distinct resamples).
Stability edge: lr_div = the smallest grid lr whose seed mean is +inf (a seed diverged there);
div_gap = log2 lr_div − log2 lr*, how far below divergence the optimum sits ("aim for the maximum
stable learning rate", Saxe). Both are NaN when no lr of the grid diverged.
Shift: least-squares slope of x* against the axis over the slices that are not at an edge,
with the percentile interval of the same fit on each bootstrap resample (also widened to
contain the slope).
Transfer regret: tune lr at the reference value of the axis (smallest B, smallest β), reuse it
at every other value; regret = m(transferred lr) / m(x*) − 1 on that slice's curve
(log m interpolated linearly in x; +inf where the transferred lr diverges or leaves the grid;
NaN when the reference slice has no optimum or only an edge bound to transfer).
A single seed gives no interval (NaN): the bootstrap needs at least two.
Gradient noise scale (hpconj.noise, McCandlish et al. 2018): B_simple = tr Σ / |G|² per seed at
initialisation; across seeds, tr Σ and |G|² are averaged first and B_simple is their ratio
(a seed whose |G|² estimate is near zero would dominate a mean of ratios).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpconj.axes import AXES, axes_of, fixed_text
from hpconj.records import DIVERGED, DONE_STATUSES

RULE_KEYS = ["parameterization", "optimizer"]
NOISE_SUMMARY_COLUMNS = ["row", "seed", "examples", "trace_sigma", "grad_norm_sq", "b_simple"]
B_BOOT = 500
BOOT_SEED = 20181231


# ----------------------------------------------------------------------------- slices
def slice_keys(frame: pd.DataFrame) -> list[str]:
    """The columns that name a slice: parameterization, optimizer and every axis the table has."""
    return RULE_KEYS + axes_of(frame)


def slice_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean metric per slice and lr with the seed spread (min..max of finite values).

    Diverged trials count as +inf (so any diverged seed makes the mean +inf); failed trials
    are left out.
    """
    finished = trials[trials["status"].isin(DONE_STATUSES)].copy()
    finished["finite"] = finished["metric"].where(np.isfinite(finished["metric"]))
    grouped = finished.groupby(slice_keys(trials) + ["lr"], sort=True)
    out = grouped.agg(
        metric_mean=("metric", "mean"),
        metric_lo=("finite", "min"),
        metric_hi=("finite", "max"),
        n_seeds=("seed", "nunique"),
        n_diverged=("status", lambda s: int((s == DIVERGED).sum())),
    ).reset_index()
    out.insert(out.columns.get_loc("lr") + 1, "log2_lr", np.log2(out["lr"]))
    return out


def seed_matrix(trials: pd.DataFrame) -> dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per slice: (log2 lr grid [L], seeds [S], metric [S, L]); missing cells are NaN."""
    finished = trials[trials["status"].isin(DONE_STATUSES)]
    out = {}
    for key, group in finished.groupby(slice_keys(trials), sort=True):
        table = group.pivot_table(index="seed", columns="lr", values="metric", aggfunc="first")
        table = table.sort_index(axis=1)
        out[key] = (np.log2(table.columns.to_numpy(dtype=float)), table.index.to_numpy(), table.to_numpy(dtype=float))
    return out


# ----------------------------------------------------------------------------- optimum
def refine(x: np.ndarray, m: np.ndarray) -> tuple[float, float, bool]:
    """(x*, m*, at_edge) of one seed-mean curve m over the grid x (see the module docstring)."""
    finite = np.isfinite(m)
    if not finite.any():
        return math.nan, math.inf, False
    i = int(np.argmin(np.where(finite, m, np.inf)))
    n = len(x)
    at_edge = n == 1 or i in (0, n - 1)
    if at_edge or not (finite[i - 1] and finite[i + 1]) or min(m[i - 1], m[i], m[i + 1]) <= 0:
        return float(x[i]), float(m[i]), at_edge
    xs, ys = x[i - 1 : i + 2], np.log(m[i - 1 : i + 2])
    a, b, _ = np.polyfit(xs - x[i], ys, 2)
    if a <= 0:
        return float(x[i]), float(m[i]), at_edge
    vertex = float(np.clip(-b / (2 * a), xs[0] - x[i], xs[2] - x[i]))
    # m* stays the best measured seed mean: a lopsided curve (a cliff above the optimum) makes the
    # parabola's own minimum fall far below anything measured.
    return x[i] + vertex, float(m[i]), at_edge


def _seed_mean(values: np.ndarray) -> np.ndarray:
    """Mean over seeds (axis −2) ignoring missing cells; +inf wherever any seed diverged."""
    finite = np.where(np.isinf(values), np.nan, values)
    count = np.sum(~np.isnan(finite), axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(finite, axis=-2) / count  # NaN where no seed has a value
    return np.where(np.isinf(values).any(axis=-2), np.inf, mean)


@dataclass(frozen=True)
class Bootstrap:
    """Resampled seed positions shared by every slice: common random numbers across slices."""

    seeds: np.ndarray  # sorted distinct seeds
    draws: np.ndarray  # [B_BOOT, n_seeds] indices into `seeds`

    @classmethod
    def for_seeds(cls, seeds: np.ndarray, n: int = B_BOOT, rng_seed: int = BOOT_SEED) -> Bootstrap:
        rng = np.random.default_rng(rng_seed)
        return cls(np.sort(seeds), rng.integers(0, len(seeds), size=(n, len(seeds))))

    def means(self, seeds: np.ndarray, values: np.ndarray) -> np.ndarray | None:
        """The seed means of one slice's values [S, ...] in every resample ([B_BOOT, ...]); None when
        the slice lacks some of the resampled seeds."""
        row = {s: i for i, s in enumerate(seeds)}
        index = np.array([row.get(s, -1) for s in self.seeds])
        return None if (index < 0).any() else _seed_mean(values[index[self.draws]])

    def optima(self, x: np.ndarray, seeds: np.ndarray, values: np.ndarray) -> np.ndarray:
        """x* of every resample of one slice ([B_BOOT]; NaN where a resample has no finite point)."""
        means = self.means(seeds, values)
        if means is None:  # this slice lacks some seeds: resample its own
            rng = np.random.default_rng(BOOT_SEED)
            draws = rng.integers(0, len(seeds), size=self.draws.shape[0] * len(seeds)).reshape(-1, len(seeds))
            means = _seed_mean(values[draws])
        return np.array([refine(x, m)[0] for m in means])


def _interval(samples: np.ndarray, estimate: float) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap samples, widened to contain the estimate."""
    if not len(samples) or not np.isfinite(estimate):
        return math.nan, math.nan
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(min(lo, estimate)), float(max(hi, estimate))


def optima(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per slice: lr_opt with its bootstrap interval, metric_opt, at_edge, n_seeds, and the
    stability edge: lr_div, the smallest grid lr at which a seed diverged (NaN if none did), and
    div_gap = log2 lr_div − log2 lr*, the octaves between the optimum and divergence."""
    matrices = seed_matrix(trials)
    boot = Bootstrap.for_seeds(trials["seed"].unique()) if len(trials) else None
    rows = []
    for key, (x, seeds, values) in matrices.items():
        mean = _seed_mean(values)
        x_opt, m_opt, at_edge = refine(x, mean)
        if boot is not None and len(seeds) > 1:
            samples = boot.optima(x, seeds, values)
            lo, hi = _interval(samples[np.isfinite(samples)], x_opt)
        else:
            lo = hi = math.nan
        diverged = np.flatnonzero(np.isposinf(mean))
        x_div = float(x[diverged[0]]) if diverged.size else math.nan
        rows.append((*key, 2.0**x_opt, 2.0**lo, 2.0**hi, x_opt, m_opt, at_edge, len(seeds), 2.0**x_div, x_div - x_opt))
    columns = slice_keys(trials) + ["lr_opt", "lr_lo", "lr_hi", "log2_lr_opt", "metric_opt", "at_edge", "n_seeds",
                                    "lr_div", "div_gap"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["at_edge"] = frame["at_edge"].astype(bool)
    return frame


# ----------------------------------------------------------------------------- shifts
def axis_value(axis: str, values: pd.Series | np.ndarray) -> np.ndarray:
    """The shift's abscissa: log2 B, log2(1 − β), log2 width, ... (hpconj.axes)."""
    return AXES[axis].position(values)


def interpolated_metric(x: np.ndarray, m: np.ndarray, at: float) -> float:
    """m at x = `at`, log-linear between grid points; +inf outside the grid or next to a diverged point."""
    if not (x[0] <= at <= x[-1]) or not np.isfinite(at):
        return math.inf
    j = int(np.searchsorted(x, at))
    if j < len(x) and x[j] == at:
        return float(m[j])
    lo, hi = m[j - 1], m[j]
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= 0:
        return math.inf
    t = (at - x[j - 1]) / (x[j] - x[j - 1])
    return float(math.exp((1 - t) * math.log(lo) + t * math.log(hi)))


def shifts(trials: pd.DataFrame, optimum: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per parameterization × optimizer × axis × values of every other axis: the shift of lr*.

    Along a numeric axis, one row per series of slices (the slope against the axis' abscissa);
    along a categorical axis (init), one row per pair of its values, a → b: the move
    log2 lr*(b) − log2 lr*(a) in `shift_octaves`, no slope."""
    optimum = optima(trials) if optimum is None else optimum
    matrices = seed_matrix(trials)
    boot = Bootstrap.for_seeds(trials["seed"].unique()) if len(trials) else None
    axes, keys = axes_of(optimum), slice_keys(optimum)
    rows = []
    for axis in axes:
        others = [a for a in axes if a != axis]
        for at, group in optimum.groupby(RULE_KEYS + others, sort=True):
            fixed = dict(zip(others, at[len(RULE_KEYS):]))
            head = (*at[: len(RULE_KEYS)], axis)
            numbers = (*(fixed.get(a, math.nan) for a in axes),)
            if AXES[axis].categorical:
                values = sorted(group[axis].unique())
                for i, a in enumerate(values):
                    for b in values[i + 1:]:
                        pair = pd.concat([group[group[axis] == a], group[group[axis] == b]])
                        rows.append((*head, f"{fixed_text(fixed)}: {a} → {b}", *numbers,
                                     *_shift_numbers(axis, pair, keys, matrices, boot)))
            elif len(group) >= 2:
                rows.append((*head, fixed_text(fixed), *numbers,
                             *_shift_numbers(axis, group.sort_values(axis), keys, matrices, boot)))
    return pd.DataFrame(rows, columns=shift_columns(axes))


# `fixed` says in words where a shift was measured ("momentum=0.9"); `fixed_<axis>` says it in
# numbers (the value the axis was held at, NaN for the axis the shift runs along), for code to select on.
def shift_columns(axes: list[str]) -> list[str]:
    return ["parameterization", "optimizer", "axis", "fixed", *(f"fixed_{a}" for a in axes), "slope", "slope_lo",
            "slope_hi", "intercept", "shift_octaves", "shift_lo", "shift_hi", "regret_max", "regret_mean",
            "n_slices", "n_edge"]


SHIFT_COLUMNS = shift_columns(["batch_size", "momentum"])


def _shift_numbers(axis: str, group: pd.DataFrame, keys: list[str], matrices: dict,
                   boot: Bootstrap | None) -> tuple:
    """slope and its interval, intercept, the move in octaves (last slice − first) and its interval,
    regrets and counts of one series of slices (in order); no slope along a categorical axis."""
    usable = group[~group["at_edge"] & np.isfinite(group["log2_lr_opt"])]
    ys = usable["log2_lr_opt"].to_numpy()
    numeric = not AXES[axis].categorical
    xs = axis_value(axis, usable[axis]) if numeric else None
    slope = intercept = lo = hi = shift = shift_lo = shift_hi = math.nan
    if len(usable) >= 2:
        if numeric:
            slope, intercept = np.polyfit(xs, ys, 1)
        shift = float(ys[-1] - ys[0])
        if boot is not None:
            slopes, moves = [], []
            per_slice = np.array([boot.optima(*matrices[k]) for k in _keys(usable, keys)])  # [slices, B_BOOT]
            for column in per_slice.T:
                if np.isfinite(column).all():
                    if numeric:
                        slopes.append(np.polyfit(xs, column, 1)[0])
                    moves.append(column[-1] - column[0])
            if numeric:
                lo, hi = _interval(np.array(slopes), slope)
            shift_lo, shift_hi = _interval(np.array(moves), shift)
    regrets = _regrets(group, keys, matrices)
    finite_regret = [r for r in regrets if not math.isnan(r)]
    return (
        float(slope), float(lo), float(hi), float(intercept), shift, float(shift_lo), float(shift_hi),
        max(finite_regret) if finite_regret else math.nan,
        float(np.mean(finite_regret)) if finite_regret else math.nan,
        len(group), int(group["at_edge"].sum()),
    )


def _keys(rows: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """Each row's slice key, as seed_matrix names its slices."""
    return list(rows[keys].itertuples(index=False, name=None))


def _regrets(group: pd.DataFrame, keys: list[str], matrices: dict) -> list[float]:
    """Relative excess of the metric when the reference slice's lr* is reused on the others."""
    reference = group.iloc[0]
    transferred = reference["log2_lr_opt"]
    if not np.isfinite(transferred) or reference["at_edge"]:
        return [math.nan] * (len(group) - 1)  # no tuned lr to transfer (or only a bound)
    out = []
    for (_, row), key in zip(group.iloc[1:].iterrows(), _keys(group.iloc[1:], keys)):
        x, _, values = matrices[key]
        best = row["metric_opt"]
        if not np.isfinite(best) or best <= 0:
            out.append(math.nan)
            continue
        value = interpolated_metric(x, _seed_mean(values), transferred)
        out.append(value / best - 1.0)
    return out


# ----------------------------------------------------------------------------- summaries
def best_grid_lr(trials: pd.DataFrame) -> pd.DataFrame:
    """Per slice: the grid lr with the lowest seed-mean metric (no refinement): the sweep's summary."""
    curves = slice_curves(trials)
    rows = []
    keys = slice_keys(trials)
    for key, group in curves.groupby(keys, sort=True):
        group = group.sort_values("lr")
        values = group["metric_mean"].to_numpy()
        if not np.isfinite(values).any():
            rows.append((*key, math.nan, math.nan, math.inf, False, int(group["n_seeds"].max())))
            continue
        best = int(np.argmin(np.where(np.isfinite(values), values, np.inf)))
        lr = float(group["lr"].iloc[best])
        at_edge = len(group) == 1 or best in (0, len(group) - 1)
        rows.append((*key, lr, math.log2(lr), float(values[best]), at_edge, int(group["n_seeds"].iloc[best])))
    return pd.DataFrame(rows, columns=keys + ["lr_best", "log2_lr_best", "metric_best", "at_edge", "n_seeds"])


def shift_sentences(shift: pd.DataFrame, optimum: pd.DataFrame) -> list[str]:
    """One plain sentence per parameterization: what moved, by how much, and what reuse costs."""
    sentences = []
    for param, rows in shift.groupby("parameterization", sort=True):
        parts = []
        for axis in (a for a in AXES if a in set(rows["axis"])):
            along = rows[rows["axis"] == axis]
            values = sorted(optimum[axis].unique())
            span = f"{AXES[axis].symbol} = {AXES[axis].text(values[0])} → {AXES[axis].text(values[-1])}"
            label = AXES[axis].words
            against = AXES[axis].abscissa or "each pair of values"
            pieces = []
            for _, r in along.iterrows():
                if AXES[axis].categorical and np.isfinite(r["shift_octaves"]):
                    pieces.append(f"{r['shift_octaves']:+.1f} octaves [{r['shift_lo']:+.1f}, {r['shift_hi']:+.1f}] "
                                  f"at {r['fixed']}")
                    continue
                if not np.isfinite(r["slope"]):
                    pieces.append(f"too few interior optima at {r['fixed']}")
                    continue
                pieces.append(f"{r['shift_octaves']:+.1f} octaves at {r['fixed']} "
                              f"(slope {r['slope']:.2f} [{r['slope_lo']:.2f}, {r['slope_hi']:.2f}])")
            worst = along["regret_max"].max()
            cost = ("reusing the reference lr diverges" if np.isinf(worst)
                    else f"reusing the reference lr costs up to {100 * worst:.0f}%" if np.isfinite(worst) else "")
            parts.append(f"{label} ({span}, against {against}): lr* moves " + ", ".join(pieces)
                         + (f"; {cost}" if cost else ""))
        edges = int(optimum[optimum["parameterization"] == param]["at_edge"].sum())
        tail = f" {edges} optima at the edge of the lr grid are bounds only and were left out of the fits." if edges else ""
        sentences.append(f"**{param}**: " + "; ".join(parts) + "." + tail)
    return sentences


# ----------------------------------------------------------------------------- noise scale
def noise_summary(noise: pd.DataFrame) -> pd.DataFrame:
    """noise_scale.csv's per-seed rows (row = "seed") and one row = "mean": tr Σ and |G|² averaged
    over the seeds with finite values, B_simple = their ratio (+inf when the mean |G|² ≤ 0).
    Empty when nothing was measured."""
    if noise is None or noise.empty or "b_simple" not in noise.columns:
        return pd.DataFrame(columns=NOISE_SUMMARY_COLUMNS)
    seeds = noise.sort_values("seed", kind="stable").reset_index(drop=True)
    out = pd.DataFrame({
        "row": "seed",
        "seed": seeds["seed"].astype("Int64"),
        "examples": seeds["examples"].astype("Int64"),
        "trace_sigma": seeds["trace_sigma"].astype(float),
        "grad_norm_sq": seeds["grad_norm_sq"].astype(float),
        "b_simple": seeds["b_simple"].astype(float),
    })
    usable = out[np.isfinite(out["trace_sigma"]) & np.isfinite(out["grad_norm_sq"])]
    trace = float(usable["trace_sigma"].mean()) if len(usable) else math.nan
    signal = float(usable["grad_norm_sq"].mean()) if len(usable) else math.nan
    b_simple = math.nan if not np.isfinite(trace) else (trace / signal if signal > 0 else math.inf)
    mean = pd.DataFrame({"row": ["mean"], "seed": pd.array([pd.NA], dtype="Int64"),
                         "examples": pd.array([pd.NA], dtype="Int64"), "trace_sigma": [trace],
                         "grad_norm_sq": [signal], "b_simple": [b_simple]})
    return pd.concat([out, mean], ignore_index=True)[NOISE_SUMMARY_COLUMNS]


def mean_noise_scale(summary: pd.DataFrame) -> float:
    """B_simple of noise_summary's mean row; NaN when there is none."""
    if summary is None or summary.empty or "row" not in summary.columns:
        return math.nan
    mean = summary[summary["row"] == "mean"]
    return float(mean["b_simple"].iloc[0]) if len(mean) else math.nan


def noise_sentence(summary: pd.DataFrame, batch_sizes: list[float]) -> str:
    """What B_simple says about lr–batch-size conjugacy, with the swept batch sizes placed on either side."""
    b_simple = mean_noise_scale(summary)
    text = ("Conjugacy of lr and batch size is expected for batch sizes below B_simple (McCandlish et al. 2018): "
            "there a larger batch mostly removes gradient noise and the optimal lr grows with B; above it the "
            "gradient is nearly exact and the optimal lr saturates.")
    if not np.isfinite(b_simple) or not batch_sizes:
        return text
    below = [b for b in batch_sizes if b < b_simple]
    above = [b for b in batch_sizes if b >= b_simple]
    def listed(values: list[float]) -> str:
        return ", ".join(f"{b:g}" for b in values) + (" is" if len(values) == 1 else " are")

    where = ("all swept batch sizes lie below it" if not above else "all swept batch sizes lie above it" if not below
             else f"of the swept batch sizes, {listed(below)} below it and {listed(above)} above")
    return f"{text} Here B_simple ≈ {noise_scale_text(b_simple)}: {where}."


def noise_scale_text(value: float) -> str:
    """B_simple rounded for reading: 37, 1,234, 2.1, 0.53; ∞ when no signal was resolved."""
    if np.isposinf(value):
        return "∞"
    if not np.isfinite(value):
        return "–"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2g}"
