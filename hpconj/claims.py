"""Claims: the scientific statements a config makes about its own results (`expect:`), each
judged from an estimate and its 95% bootstrap interval against a band written from the source
or the literature — never from the result.

A claim names one number of the analysis:
  slope    the shift of log2 lr* along `axis` for `parameterization`, at the values `at` of the
           other axes (a row of shifts.csv: slope, slope_lo, slope_hi);
  optimum  log2 lr* of one slice (`at` gives its value on every axis; a row of optima.csv:
           log2_lr_opt and the log2 of lr_lo, lr_hi); an optimum at the edge of its lrs is a
           bound, never a value: inconclusive.

Verdict, with [lo, hi] the interval and [a, b] the band:
  holds         a ≤ lo and hi ≤ b (the whole interval inside the band);
  fails         hi < a or lo > b (the whole interval outside);
  inconclusive  otherwise. Then `seeds_needed` says how many seeds would likely settle it: an
                interval's half-width h shrinks like 1/√n, so n·(h/d)² seeds bring it within
                d, the estimate's distance to the nearer end of the band (∞ when the estimate
                sits on an end).
A claim whose number the analysis lacks (no such row, a single seed) is `missing`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

HOLDS, FAILS, INCONCLUSIVE, MISSING = "holds", "fails", "inconclusive", "missing"
CLAIM_COLUMNS = ["id", "kind", "parameterization", "where", "band_lo", "band_hi", "estimate", "lo", "hi",
                 "verdict", "seeds_needed", "claim", "source"]


def verdict(estimate: float, lo: float, hi: float, band: tuple[float, float], seeds: int) -> tuple[str, float]:
    """(verdict, seeds_needed) of an estimate with interval [lo, hi] against `band` (module docstring)."""
    a, b = band
    if not all(np.isfinite([estimate, lo, hi])):
        return MISSING, math.nan
    if a <= lo and hi <= b:
        return HOLDS, math.nan
    if hi < a or lo > b:
        return FAILS, math.nan
    half = (hi - lo) / 2
    distance = min(abs(estimate - a), abs(estimate - b))
    return INCONCLUSIVE, (math.ceil(seeds * (half / distance) ** 2) if distance > 0 else math.inf)


def claims_table(claims: list[Any], optima: pd.DataFrame, shifts: pd.DataFrame) -> pd.DataFrame:
    """One row per claim (CLAIM_COLUMNS), judged on the analysis' optima and shifts."""
    rows = [_judged(c, optima, shifts) for c in claims]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _judged(claim: Any, optima: pd.DataFrame, shifts: pd.DataFrame) -> tuple:
    where = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in claim.at.items())
    estimate = lo = hi = math.nan
    seeds = 0
    if claim.kind == "slope":
        where = f"along {claim.axis}" + (f" at {where}" if where else "")
        row = _row(shifts, {"parameterization": claim.parameterization, "axis": claim.axis,
                            **{f"fixed_{k}": v for k, v in claim.at.items()}})
        if row is not None:
            estimate, lo, hi = row["slope"], row["slope_lo"], row["slope_hi"]
            seeds = _seeds(optima, claim.parameterization)
    else:
        row = _row(optima, {"parameterization": claim.parameterization, **claim.at})
        if row is not None and not row["at_edge"]:
            estimate, lo, hi = row["log2_lr_opt"], math.log2(row["lr_lo"]), math.log2(row["lr_hi"])
            seeds = int(row["n_seeds"])
    judged, needed = verdict(float(estimate), float(lo), float(hi), claim.band, seeds)
    return (claim.id, claim.kind, claim.parameterization, where, claim.band[0], claim.band[1], estimate, lo, hi,
            judged, needed, claim.claim, claim.source)


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
        estimate = "–" if not np.isfinite(r["estimate"]) else f"{r['estimate']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"
        text = r["verdict"]
        if r["verdict"] == INCONCLUSIVE:
            text += f" (about {r['seeds_needed']:g} seeds)" if np.isfinite(r["seeds_needed"]) else " (on an end)"
        lines.append(f"| {r['id']}: {r['claim']} | {r['source']} | {r['parameterization']}, {r['where']} | "
                     f"[{r['band_lo']:g}, {r['band_hi']:g}] | {estimate} | **{text}** |")
    return lines + [""]
