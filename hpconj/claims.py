"""Claims: the scientific statements a config makes about its own results (`expect:`), each
judged from an estimate and its 95% bootstrap interval against a band written from the source
or the literature — never from the result.

A claim names one number of the analysis (`at` fixes the values of the other axes):
  slope           the shift of log2 lr* along `axis` for `parameterization` (shifts.csv: slope,
                  slope_lo, slope_hi);
  optimum         log2 lr* of one slice (optima.csv: log2_lr_opt and the log2 of lr_lo, lr_hi); an
                  optimum at the edge of its lrs is a bound, never a value: inconclusive;
  regret          the relative excess of the metric when the lr tuned at the first value of `axis`
                  is reused along it (shifts.csv: regret_max; ∞ when it diverges). A seed-mean
                  number without a bootstrap interval: its interval is the point itself;
  time_slope      the slope of log2 lr* against log2 T, the examples seen, over the checkpoints of
                  one slice (shifts_over_time.csv, axis checkpoint);
  critical_batch  log2(B_crit / B_simple): the critical batch size of the steps-to-target fit
                  S(B) = S_min + E_min/B (critical_batch.csv, with its interval) against the
                  gradient noise scale at initialisation (noise_scale.csv, the seeds' ratio of means);
  stability_gap   log2(lr_div / lr*), octaves from the optimum up to the smallest lr at which a seed
                  diverged (optima.csv; interval from lr*'s, lr_div being a grid point);
  time_to_target  log2 of the examples to reach the metric's target in one slice
                  (time_to_target.csv);
  best_momentum   the momentum β of the best (lr*, β) pair at the values `at` of the other axes
                  (best_momentum.csv; its interval: the 2.5 and 97.5 percentiles of the winning β
                  over the bootstrap resamples).
For the last two, `versus` (values that replace some of `at`) names a second slice, and the number
becomes the difference to it (for time_to_target the log2 ratio): [lo, hi] = [lo₁ − hi₂, hi₁ − lo₂]
(conservative).

Verdict, with [lo, hi] the interval and [a, b] the band (either end may be ±.inf):
  holds         a ≤ lo and hi ≤ b (the whole interval inside the band);
  fails         hi < a or lo > b (the whole interval outside);
  inconclusive  otherwise. Then `seeds_needed` says how many seeds would likely settle it: an
                interval's half-width h shrinks like 1/√n, so n·(h/d)² seeds bring it within
                d, the estimate's distance to the nearer end of the band (∞ when the estimate
                sits on an end).
A claim whose number the analysis lacks (no such row, a single seed, a target never reached) is
`missing`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from hpconj.config.schema import CLAIM_KINDS

HOLDS, FAILS, INCONCLUSIVE, MISSING = "holds", "fails", "inconclusive", "missing"
CLAIM_COLUMNS = ["id", "kind", "parameterization", "where", "band_lo", "band_hi", "estimate", "lo", "hi",
                 "verdict", "seeds_needed", "claim", "source"]
NOTHING = (math.nan, math.nan, math.nan)


def verdict(estimate: float, lo: float, hi: float, band: tuple[float, float], seeds: int) -> tuple[str, float]:
    """(verdict, seeds_needed) of an estimate with interval [lo, hi] against `band` (module docstring)."""
    a, b = band
    if math.isnan(estimate) or math.isnan(lo) or math.isnan(hi) or (math.isinf(estimate) and lo != hi):
        return MISSING, math.nan
    if a <= lo and hi <= b:
        return HOLDS, math.nan
    if hi < a or lo > b:
        return FAILS, math.nan
    half = (hi - lo) / 2
    distance = min(abs(estimate - a), abs(estimate - b))
    return INCONCLUSIVE, (math.ceil(seeds * (half / distance) ** 2) if distance > 0 else math.inf)


def claims_table(claims: list[Any], frames: Any) -> pd.DataFrame:
    """One row per claim (CLAIM_COLUMNS), judged on the analysis `frames` (an object with the
    DataFrames optima, shifts, shifts_time, targets, critical, best_momentum and noise as attributes; a missing
    one reads as empty)."""
    rows = [_judged(c, frames) for c in claims]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _judged(claim: Any, frames: Any) -> tuple:
    where = _where(claim.at)
    if claim.axis is not None:
        where = f"along {claim.axis}" + (f" at {where}" if where else "")
    if claim.versus:
        where += f" versus {_where({**claim.at, **claim.versus})}"
    estimate, lo, hi = (float(x) for x in NUMBERS[claim.kind](claim, frames))
    seeds = _seeds(_frame(frames, "optima"), claim.parameterization)
    judged, needed = verdict(estimate, lo, hi, claim.band, seeds)
    return (claim.id, claim.kind, claim.parameterization, where, claim.band[0], claim.band[1], estimate, lo, hi,
            judged, needed, claim.claim, claim.source)


def _where(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# ----------------------------------------------------------------------------- one number per kind
def _slope(claim: Any, frames: Any) -> tuple[float, float, float]:
    row = _row(_frame(frames, "shifts"), {"parameterization": claim.parameterization, "axis": claim.axis,
                                           **{f"fixed_{k}": v for k, v in claim.at.items()}})
    return NOTHING if row is None else (row["slope"], row["slope_lo"], row["slope_hi"])


def _optimum(claim: Any, frames: Any) -> tuple[float, float, float]:
    row = _row(_frame(frames, "optima"), {"parameterization": claim.parameterization, **claim.at})
    if row is None or bool(row["at_edge"]):
        return NOTHING
    return row["log2_lr_opt"], _log2(row["lr_lo"]), _log2(row["lr_hi"])


def _regret(claim: Any, frames: Any) -> tuple[float, float, float]:
    row = _row(_frame(frames, "shifts"), {"parameterization": claim.parameterization, "axis": claim.axis,
                                           **{f"fixed_{k}": v for k, v in claim.at.items()}})
    return NOTHING if row is None else (row["regret_max"],) * 3


def _time_slope(claim: Any, frames: Any) -> tuple[float, float, float]:
    row = _row(_frame(frames, "shifts_time"), {"parameterization": claim.parameterization, "axis": "checkpoint",
                                                **{f"fixed_{k}": v for k, v in claim.at.items()}})
    return NOTHING if row is None else (row["slope"], row["slope_lo"], row["slope_hi"])


def _critical_batch(claim: Any, frames: Any) -> tuple[float, float, float]:
    row = _row(_frame(frames, "critical"), {"parameterization": claim.parameterization, **claim.at})
    noise = _frame(frames, "noise")
    means = noise[noise["row"] == "mean"]["b_simple"] if "row" in noise.columns else pd.Series(dtype=float)
    b_simple = float(means.iloc[0]) if len(means) else math.nan
    if row is None or not (np.isfinite(b_simple) and b_simple > 0):
        return NOTHING
    return tuple(_log2(row[c]) - math.log2(b_simple) for c in ("b_crit", "b_crit_lo", "b_crit_hi"))  # type: ignore


def _stability_gap(claim: Any, frames: Any) -> tuple[float, float, float]:
    row = _row(_frame(frames, "optima"), {"parameterization": claim.parameterization, **claim.at})
    if row is None or bool(row["at_edge"]) or not np.isfinite(row["lr_div"]):
        return NOTHING
    top = _log2(row["lr_div"])
    return top - row["log2_lr_opt"], top - _log2(row["lr_hi"]), top - _log2(row["lr_lo"])


def _time_to_target(claim: Any, frames: Any) -> tuple[float, float, float]:
    return _versus(claim, lambda at: _examples(_frame(frames, "targets"), claim.parameterization, at))


def _best_momentum(claim: Any, frames: Any) -> tuple[float, float, float]:
    def one(at: dict[str, Any]) -> tuple[float, float, float]:
        row = _row(_frame(frames, "best_momentum"), {"parameterization": claim.parameterization, **at})
        return NOTHING if row is None else (row["best_momentum"], row["beta_lo"], row["beta_hi"])

    return _versus(claim, one)


def _versus(claim: Any, number: Callable[[dict[str, Any]], tuple[float, float, float]]) -> tuple[float, float, float]:
    """The number at `at`, or with `versus` its difference to the number at the second slice."""
    first = number(dict(claim.at))
    if not claim.versus:
        return first
    second = number({**claim.at, **claim.versus})
    return first[0] - second[0], first[1] - second[2], first[2] - second[1]


def _examples(targets: pd.DataFrame, parameterization: str, at: dict[str, Any]) -> tuple[float, float, float]:
    """log2 of the examples to target of one slice and their interval; NaN when it was never reached
    or only bounded (reached at the first checkpoint)."""
    row = _row(targets, {"parameterization": parameterization, **at})
    if row is None or not bool(row["reached"]) or bool(row["bound"]):
        return NOTHING
    return _log2(row["examples_to_target"]), _log2(row["examples_lo"]), _log2(row["examples_hi"])


NUMBERS: dict[str, Callable[[Any, Any], tuple[float, float, float]]] = {
    "slope": _slope, "optimum": _optimum, "regret": _regret, "time_slope": _time_slope,
    "critical_batch": _critical_batch, "stability_gap": _stability_gap, "time_to_target": _time_to_target,
    "best_momentum": _best_momentum,
}
assert tuple(NUMBERS) == CLAIM_KINDS, "every kind the schema accepts has one number here"


# ----------------------------------------------------------------------------- helpers
def _frame(frames: Any, name: str) -> pd.DataFrame:
    frame = getattr(frames, name, None)
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame()


def _log2(value: Any) -> float:
    value = float(value)
    return math.log2(value) if value > 0 else (math.nan if not math.isinf(value) else math.inf)


def _row(frame: pd.DataFrame, values: dict[str, Any]) -> pd.Series | None:
    """The one row of `frame` with these values (None when there is none, or not exactly one)."""
    if frame.empty or any(k not in frame.columns for k in values):
        return None
    mask = np.logical_and.reduce([_equal(frame[k], v) for k, v in values.items()])
    found = frame[mask]
    return found.iloc[0] if len(found) == 1 else None


def _equal(column: pd.Series, value: Any) -> np.ndarray:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and pd.api.types.is_numeric_dtype(column):
        return np.isclose(column.to_numpy(dtype=float), float(value), rtol=1e-9, atol=1e-12)
    return (column.astype(str) == str(value)).to_numpy()


def _seeds(optima: pd.DataFrame, parameterization: str) -> int:
    if "parameterization" not in optima.columns:
        return 0
    rows = optima[optima["parameterization"] == parameterization]
    return int(rows["n_seeds"].min()) if not rows.empty else 0


def claims_markdown(table: pd.DataFrame) -> list[str]:
    """The claims section of summary.md: one row per claim, refuted ones as plainly as the others."""
    if table.empty:
        return []
    lines = ["## Claims", "", "Each claim's band comes from its source, not from these results; the verdict reads the "
             "estimate's 95% interval: holds (inside the band), fails (outside), inconclusive (across an end; "
             "seeds needed: about how many would settle it).", "",
             "| claim | source | where | band | estimate [95% interval] | verdict |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['id']}: {r['claim']} | {r['source']} | {r['parameterization']}, {r['where']} | "
                     f"{band_text(r)} | {estimate_text(r)} | **{verdict_text(r)}** |")
    return lines + [""]


def estimate_text(row: Any) -> str:
    """"0.95 [0.81, 1.10]"; a number without an interval (regret) alone; "–" when missing. More
    decimals (up to 4) where two would show an interval's end on an end of the band it does not touch."""
    estimate, lo, hi = float(row["estimate"]), float(row["lo"]), float(row["hi"])
    if math.isnan(estimate):
        return "–"
    if math.isinf(estimate) and row["kind"] == "regret":
        return "∞ (diverges)"
    ends = {float(row["band_lo"]), float(row["band_hi"])}
    digits = next((d for d in (2, 3, 4) if not any(round(x, d) in ends and x not in ends for x in (lo, hi))), 4)
    return f"{estimate:.{digits}f}" if lo == hi else f"{estimate:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def band_text(row: Any) -> str:
    """"[-0.25, 0.25]", "≤ 0", "≥ 1" (an open end is ±∞)."""
    a, b = float(row["band_lo"]), float(row["band_hi"])
    if math.isinf(a) and not math.isinf(b):
        return f"≤ {b:g}"
    if math.isinf(b) and not math.isinf(a):
        return f"≥ {a:g}"
    return f"[{a:g}, {b:g}]"


def verdict_text(row: Any) -> str:
    """The verdict, and for an inconclusive one about how many seeds would settle it."""
    text = str(row["verdict"])
    if text == INCONCLUSIVE:
        needed = float(row["seeds_needed"])
        if not np.isfinite(needed):
            text += " (on an end)"
        else:
            text += f" (about {needed:g} seeds)" if needed <= 1000 else " (more than 1,000 seeds)"
    return text
