"""The metric over training time (budget.checkpoints): the optimum at every checkpoint, the time
to a target, and the critical batch size. DataFrames in, DataFrames out (docs/design.md).

Optimum over time. A constant-lr run's prefix is a shorter run, so every checkpoint is a sweep
of its own: the trials at share T/T_max of their budget form slices keyed by the `checkpoint`
axis (hpconj.axes), and analysis.optima / analysis.shifts give lr*(T) with its interval and the
slope of log2 lr* against log2 T. A trial that diverged before a checkpoint counts as +inf there.

Time to target (Shallue et al. 2018). For a target m₀ and a slice: at each lr, the seed-mean
metric m(T) at the checkpoints T (examples seen); the examples to target E(lr) is the first T
with m(T) ≤ m₀, interpolated linearly in (log T, log m) from the checkpoint before it (where
m > m₀); when already the first checkpoint is below m₀, E is that checkpoint and only a bound.
E = min over the lr grid, S = E / B the steps. Interval: the same bootstrap resamples of the seeds
as the optima (analysis.Bootstrap), 2.5 and 97.5 percentiles, widened to contain the estimate.
The default target is the worst slice's best final seed mean, so that every slice reaches it.

Critical batch size (McCandlish et al. 2018). Steps and examples to a fixed target obey
(S/S_min − 1)(E/E_min − 1) = 1 with E = B·S, i.e. S(B) = S_min + E_min/B: a least-squares fit of
S against (1, 1/B), weighted by 1/S² (relative errors), over the batch sizes that reached the
target; B_crit = E_min/S_min, with the interval of the same fit on each bootstrap resample.
Beside it, B_noise from the final optima: lr*(B) = lr_max/(1 + B_noise/B) fitted to the interior
optima of the `standard` parameterization (the law is one of the per-step lr) in log2 lr (a grid
search over log2 B_noise, lr_max in closed form for each); every rule's row reports that value.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hpconj.analysis import Bootstrap, _interval, _seed_mean, optima, seed_matrix, shifts, slice_keys
from hpconj.records import DIVERGED, DONE_STATUSES, OK

TARGET_COLUMNS = ["target", "examples_to_target", "examples_lo", "examples_hi", "steps_to_target", "lr_at_target",
                  "bound", "reached"]
CRITICAL_COLUMNS = ["target", "s_min", "s_min_lo", "s_min_hi", "e_min", "e_min_lo", "e_min_hi", "b_crit", "b_crit_lo",
                    "b_crit_hi", "b_noise", "n_batch_sizes"]


# ----------------------------------------------------------------------------- the metric at checkpoints
def checkpoint_trials(trials: pd.DataFrame, checkpoints: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per finished trial and checkpoint share: the trial's slice keys, lr, seed, the
    `checkpoint` share, the examples seen there, and `metric` at it (+inf, status diverged, where
    the trial had diverged before reaching it)."""
    finished = trials[trials["status"].isin(DONE_STATUSES)]
    if checkpoints is None or checkpoints.empty or finished.empty:
        return pd.DataFrame()
    keys = slice_keys(finished) + ["lr", "seed", "trial_id"]
    # the shares each batch size has (two shares that round to one step leave only the first)
    batch = finished.set_index("trial_id")["batch_size"]
    shares = (checkpoints.assign(batch_size=checkpoints["trial_id"].map(batch)).dropna(subset=["batch_size"])
              [["batch_size", "fraction"]].drop_duplicates().rename(columns={"fraction": "checkpoint"}))
    shares["batch_size"] = shares["batch_size"].astype(finished["batch_size"].dtype)
    grid = finished[keys].merge(shares, on="batch_size")
    values = checkpoints[["trial_id", "fraction", "examples", metric]].rename(
        columns={"fraction": "checkpoint", metric: "metric"})
    frame = grid.merge(values, on=["trial_id", "checkpoint"], how="left")
    # a trial that diverged before a checkpoint has no row there: it stands at the examples its
    # batch size's other trials reached
    frame["examples"] = frame.groupby(["batch_size", "checkpoint"])["examples"].transform("max")
    reached = frame["metric"].notna() & np.isfinite(frame["metric"])
    frame["status"] = np.where(reached, OK, DIVERGED)
    frame["metric"] = frame["metric"].where(reached, math.inf)
    return frame


def optima_over_time(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """lr*(T) per slice and checkpoint, and the shifts (the slope against log2 T among them)."""
    if frame.empty:
        return pd.DataFrame(), pd.DataFrame()
    best = optima(frame)
    return best, shifts(frame, best)


# ----------------------------------------------------------------------------- time to target
def default_target(trials: pd.DataFrame) -> float:
    """The worst slice's best final seed-mean metric: every slice reaches it by its end."""
    best = optima(trials)
    finite = best["metric_opt"][np.isfinite(best["metric_opt"])]
    return float(finite.max()) if len(finite) else math.nan


def _crossing(examples: np.ndarray, mean: np.ndarray, target: float) -> tuple[float, bool]:
    """(examples where the curve first reaches `target`, whether that is only a bound)."""
    below = np.flatnonzero(mean <= target)
    if not below.size:
        return math.inf, False
    j = int(below[0])
    if j == 0:
        return float(examples[0]), True
    m0, m1 = mean[j - 1], mean[j]
    if not (np.isfinite(m0) and m0 > 0 and m1 > 0 and target > 0):
        return float(examples[j]), False
    t = (math.log(m0) - math.log(target)) / (math.log(m0) - math.log(m1))
    return float(math.exp((1 - t) * math.log(examples[j - 1]) + t * math.log(examples[j]))), False


def _slice_time(group: pd.DataFrame, target: float, boot: Bootstrap | None) -> tuple[float, float, bool, np.ndarray]:
    """(fewest examples to target over the lr grid, the lr that achieves it, bound, resamples)."""
    best, best_lr, bound = math.inf, math.nan, False
    per_lr = []
    for lr, rows in group.groupby("lr", sort=True):
        table = rows.pivot_table(index="seed", columns="examples", values="metric", aggfunc="first").sort_index(axis=1)
        examples = table.columns.to_numpy(dtype=float)
        values = table.to_numpy(dtype=float)
        e, edge = _crossing(examples, _seed_mean(values), target)
        per_lr.append((examples, table.index.to_numpy(), values))
        if e < best:
            best, best_lr, bound = e, float(lr), edge
    samples = np.array([])
    if boot is not None and len(group["seed"].unique()) > 1:
        draws = []
        for examples, seeds, values in per_lr:
            means = boot.means(seeds, values)  # [B_BOOT, checkpoints]
            if means is not None:
                draws.append([_crossing(examples, m, target)[0] for m in means])
        if draws:
            samples = np.min(np.array(draws), axis=0)
    return best, best_lr, bound, samples


def time_to_target(frame: pd.DataFrame, target: float) -> tuple[pd.DataFrame, dict[tuple, np.ndarray]]:
    """Per slice (every axis but the checkpoint): the fewest examples and steps to `target` over the
    lr grid, its bootstrap interval, and the bootstrap samples themselves (for critical_batch)."""
    if frame.empty or not np.isfinite(target):
        return pd.DataFrame(), {}
    keys = [k for k in slice_keys(frame) if k != "checkpoint"]
    boot = Bootstrap.for_seeds(frame["seed"].unique())
    rows, samples = [], {}
    for key, group in frame.groupby(keys, sort=True):
        examples, lr, bound, resampled = _slice_time(group, target, boot)
        finite = resampled[np.isfinite(resampled)] if resampled.size else resampled
        lo, hi = _interval(finite, examples) if finite.size and np.isfinite(examples) else (math.nan, math.nan)
        batch = float(dict(zip(keys, key))["batch_size"])
        samples[key] = resampled
        rows.append((*key, target, examples, lo, hi, examples / batch, lr, bound, bool(np.isfinite(examples))))
    return pd.DataFrame(rows, columns=keys + TARGET_COLUMNS), samples


# ----------------------------------------------------------------------------- critical batch size
def fit_critical(batch_sizes: np.ndarray, steps: np.ndarray) -> tuple[float, float]:
    """(S_min, E_min) of S(B) = S_min + E_min/B, least squares in relative error; NaN when there
    are fewer than two finite points or the fit is not positive."""
    ok = np.isfinite(steps) & (steps > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    b, s = batch_sizes[ok].astype(float), steps[ok]
    design = np.stack([np.ones_like(b), 1.0 / b], axis=1) / s[:, None]
    (s_min, e_min), *_ = np.linalg.lstsq(design, np.ones_like(s), rcond=None)
    return (float(s_min), float(e_min)) if s_min > 0 and e_min > 0 else (math.nan, math.nan)


def fit_noise_batch(batch_sizes: np.ndarray, log2_lr: np.ndarray) -> float:
    """B_noise of lr*(B) = lr_max/(1 + B_noise/B), by a grid search over log2 B_noise (16
    points per octave, from B_min/64 to 64·B_max); NaN with fewer than three interior optima,
    ±inf when the best fit sits at the grid's end (then it is only a bound)."""
    ok = np.isfinite(log2_lr)
    if ok.sum() < 3:
        return math.nan
    b, y = batch_sizes[ok].astype(float), log2_lr[ok]
    grid = 2.0 ** np.arange(math.log2(b.min()) - 6, math.log2(b.max()) + 6 + 1e-9, 1 / 16)
    errors = []
    for noise in grid:
        offset = np.log2(1 + noise / b)
        errors.append(float(np.sum((y + offset - np.mean(y + offset)) ** 2)))
    i = int(np.argmin(errors))
    if i == 0:
        return -math.inf
    if i == len(grid) - 1:
        return math.inf
    return float(grid[i])


def critical_batch(target_table: pd.DataFrame, samples: dict[tuple, np.ndarray], final_optima: pd.DataFrame
                   ) -> pd.DataFrame:
    """Per parameterization × optimizer × values of the axes other than batch size: S_min, E_min,
    B_crit with its interval, and B_noise from the final optima."""
    if target_table.empty or "batch_size" not in target_table.columns:
        return pd.DataFrame()
    keys = [k for k in target_table.columns if k not in TARGET_COLUMNS]
    groups = [k for k in keys if k != "batch_size"]
    rows = []
    for at, group in target_table.groupby(groups, sort=True):
        group = group.sort_values("batch_size")
        batch = group["batch_size"].to_numpy(dtype=float)
        s_min, e_min = fit_critical(batch, group["steps_to_target"].to_numpy(dtype=float))
        b_crit = e_min / s_min if np.isfinite(s_min) else math.nan
        intervals = {"s": (math.nan, math.nan), "e": (math.nan, math.nan), "b": (math.nan, math.nan)}
        draws = [samples.get(tuple(r), np.array([])) for r in group[keys].itertuples(index=False, name=None)]
        if np.isfinite(b_crit) and all(d.size for d in draws):
            steps = np.array(draws) / batch[:, None]  # [batch sizes, B_BOOT]
            fits = np.array([fit for fit in (fit_critical(batch, column) for column in steps.T) if np.isfinite(fit[0])])
            if len(fits):
                intervals = {"s": _interval(fits[:, 0], s_min), "e": _interval(fits[:, 1], e_min),
                             "b": _interval(fits[:, 1] / fits[:, 0], b_crit)}
        where = dict(zip(groups, at if isinstance(at, tuple) else (at,)))
        # lr*(B) = lr_max/(1 + B_noise/B) is a law of the native (per-step) lr: the standard
        # parameterization's, so every rule of the row is set beside the same B_noise
        mask = np.logical_and.reduce([final_optima[k] == (v if k != "parameterization" else "standard")
                                      for k, v in where.items() if k in final_optima])
        chosen = final_optima[mask & ~final_optima["at_edge"]] if len(final_optima) else final_optima
        b_noise = (fit_noise_batch(chosen["batch_size"].to_numpy(dtype=float), chosen["log2_lr_opt"].to_numpy())
                   if len(chosen) else math.nan)
        rows.append((*where.values(), float(group["target"].iloc[0]), s_min, *intervals["s"], e_min, *intervals["e"],
                     b_crit, *intervals["b"], b_noise, int(np.isfinite(group["steps_to_target"]).sum())))
    return pd.DataFrame(rows, columns=groups + CRITICAL_COLUMNS)


def critical_sentences(table: pd.DataFrame, b_simple: float, b_simple_end: float = math.nan) -> list[str]:
    """One sentence per row: B_crit with its interval beside B_noise and B_simple (at initialisation
    and, where measured, at the end of training)."""
    out = []
    for _, r in table.iterrows():
        where = ", ".join(f"{k}={r[k]:g}" if isinstance(r[k], (int, float, np.floating, np.integer)) else f"{k}={r[k]}"
                          for k in table.columns if k not in CRITICAL_COLUMNS)
        if np.isfinite(r["b_crit"]):
            crit = (f"S_min ≈ {r['s_min']:.3g} steps, E_min ≈ {r['e_min']:.3g} examples, B_crit ≈ {r['b_crit']:.3g} "
                    f"[{r['b_crit_lo']:.3g}, {r['b_crit_hi']:.3g}]")
        elif r["n_batch_sizes"] < 2:
            crit = "B_crit not resolved: fewer than two batch sizes reached the target"
        else:
            crit = "B_crit not resolved: the steps to target do not fall with B as S_min + E_min/B (no positive fit)"
        noise = (f"B_noise ≈ {r['b_noise']:.3g}" if np.isfinite(r["b_noise"])
                 else "B_noise above the swept batch sizes (lr* grows with B throughout)" if np.isposinf(r["b_noise"])
                 else "B_noise below the swept batch sizes (lr* does not grow with B)" if np.isneginf(r["b_noise"])
                 else "B_noise not resolved")
        simple = f"; B_simple at initialisation ≈ {b_simple:.3g}" if np.isfinite(b_simple) else ""
        if np.isfinite(b_simple_end):
            simple += f", at the end of training ≈ {b_simple_end:.3g}"
        elif np.isposinf(b_simple_end):
            simple += ", at the end of training ∞ (the full gradient is not resolved above the noise)"
        knee = ""
        if np.isfinite(r["b_noise"]) and np.isfinite(b_simple) and b_simple > 0:
            ratio = r["b_noise"] / b_simple
            knee = (f" The knee of the optima sits where B_simple says (B_noise/B_simple = {ratio:.2g}, within a "
                    f"factor of 2)." if 0.5 <= ratio <= 2 else
                    f" The knee of the optima does not sit where B_simple says (B_noise/B_simple = {ratio:.2g}).")
        out.append(f"**{where}** (target {r['target']:.4g}): {crit}; {noise} (from the optima){simple}.{knee}")
    return out




# ----------------------------------------------------------------------------- best momentum, best batch size
def best_momentum(trials: pd.DataFrame, final_optima: pd.DataFrame) -> pd.DataFrame:
    """Per batch size (and every other axis but momentum): the best (lr*, β) pair, i.e. the
    momentum whose slice reaches the lowest seed-mean metric, and how often each momentum wins
    over the bootstrap resamples of the seeds (`beta_share`: the winner's share; `beta_lo`,
    `beta_hi`: the 2.5 and 97.5 percentiles of the winning β)."""
    if final_optima.empty or "momentum" not in final_optima.columns or final_optima["momentum"].nunique() < 2:
        return pd.DataFrame()
    keys = [k for k in slice_keys(final_optima) if k != "momentum"]
    matrices = seed_matrix(trials)
    boot = Bootstrap.for_seeds(trials["seed"].unique())
    order = slice_keys(final_optima)
    rows = []
    for at, group in final_optima.groupby(keys, sort=True):
        finite = group[np.isfinite(group["metric_opt"])]
        if finite.empty:
            continue
        best = finite.loc[finite["metric_opt"].idxmin()]
        betas = group["momentum"].to_numpy(dtype=float)
        resampled = []
        for _, row in group.iterrows():
            _, seeds, values = matrices[tuple(row[k] for k in order)]
            means = boot.means(seeds, values)
            means = np.full((len(boot.draws), 1), np.inf) if means is None else means
            resampled.append(np.min(np.where(np.isfinite(means), means, np.inf), axis=1))
        winners = betas[np.argmin(np.array(resampled), axis=0)]
        share = float(np.mean(winners == float(best["momentum"])))
        lo, hi = np.percentile(winners, [2.5, 97.5])
        rows.append((*at, float(best["momentum"]), float(best["lr_opt"]), float(best["lr_lo"]), float(best["lr_hi"]),
                     float(best["metric_opt"]), share, float(lo), float(hi)))
    return pd.DataFrame(rows, columns=keys + ["best_momentum", "lr_opt", "lr_lo", "lr_hi", "metric_opt", "beta_share",
                                             "beta_lo", "beta_hi"])


def fastest_batch(targets: pd.DataFrame) -> list[str]:
    """Which batch size reaches the target first, for a budget of steps and for one of examples."""
    if targets.empty:
        return []
    groups = [k for k in targets.columns if k not in TARGET_COLUMNS and k != "batch_size"]
    out = []
    for at, group in targets.groupby(groups, sort=True):
        reached = group[np.isfinite(group["steps_to_target"])]
        if reached.empty:
            continue
        by_steps = reached.loc[reached["steps_to_target"].idxmin()]
        by_examples = reached.loc[reached["examples_to_target"].idxmin()]
        where = ", ".join(f"{k}={v}" for k, v in zip(groups, at if isinstance(at, tuple) else (at,)))
        out.append(f"{where}: fewest steps at B = {by_steps['batch_size']:g} ({by_steps['steps_to_target']:.4g}), "
                   f"fewest examples at B = {by_examples['batch_size']:g} ({by_examples['examples_to_target']:.4g})")
    return out


# ----------------------------------------------------------------------------- why conjugacy breaks
STABILITY_OCTAVES = 1.0  # an optimum this close below lr_div is set by stability, not by noise
MOMENTUM_HORIZON = 10.0  # steps·(1 − β) below this: the running average has not had time to act


def conjugacy_flags(final_optima: pd.DataFrame, trials: pd.DataFrame, critical: pd.DataFrame) -> pd.DataFrame:
    """Per slice, where the argument for conjugacy does not apply, with the reason in words:
    `stability` (lr* within STABILITY_OCTAVES of lr_div: the optimum is the edge of stability,
    not a noise trade-off), `noise` (B above the fitted B_noise of its rule: the gradient is nearly
    exact there), `momentum` (steps·(1 − β) < MOMENTUM_HORIZON: momentum's running average spans
    more steps than the run has)."""
    if final_optima.empty:
        return pd.DataFrame()
    keys = slice_keys(final_optima)
    steps = trials.groupby(keys)["steps"].max() if "steps" in trials.columns else pd.Series(dtype=float)
    rows = []
    for _, r in final_optima.iterrows():
        reasons = []
        gap = r.get("div_gap", math.nan)
        if np.isfinite(gap) and gap < STABILITY_OCTAVES:
            reasons.append(f"stability: lr* sits {gap:.1f} octave below lr_div")
        if not critical.empty:
            match = critical[np.logical_and.reduce([critical[k] == r[k] for k in critical.columns
                                                    if k in keys and k != "batch_size"])]
            noise = float(match["b_noise"].iloc[0]) if len(match) else math.nan
            if np.isfinite(noise) and r["batch_size"] > noise:
                reasons.append(f"noise: B = {r['batch_size']:g} is above B_noise ≈ {noise:.3g}")
        count = steps.get(tuple(r[k] for k in keys), math.nan)
        if "momentum" in r and r["momentum"] > 0 and np.isfinite(count) and count * (1 - r["momentum"]) < MOMENTUM_HORIZON:
            reasons.append(f"momentum: steps·(1 − β) = {count * (1 - r['momentum']):.3g} < {MOMENTUM_HORIZON:g}")
        if reasons:
            rows.append((*(r[k] for k in keys), "; ".join(reasons)))
    return pd.DataFrame(rows, columns=keys + ["why"])
