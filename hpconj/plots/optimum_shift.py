"""The optimum against log2 B or log2(1 − β), with fitted slopes, guides and B_simple."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hpconj.analysis import mean_noise_scale, noise_scale_text
from matplotlib.ticker import FixedLocator, FuncFormatter

from hpconj.plots.style import (AXIS_SYMBOL, Log2Locator, MARKERS, power_of_two, _axis_value_label, _draw_optimum,
                                _interval_error, _log2, _new_figure, _number, _panel_label, _panels,
                                _parameterization_color, _select, _signed, _sorted_values, _styled, _title)


NOISE_NEAR_OCTAVES = 1.0  # B_simple is drawn up to this far outside the swept batch sizes
NOISE_COLOR = "#3d3d3d"


def _noise_scale(noise: pd.DataFrame | None) -> float:
    """B_simple of the summary's mean row (analysis.noise_summary); NaN when absent."""
    return mean_noise_scale(noise) if noise is not None and "b_simple" in noise.columns else math.nan


def _noise_label(value: float) -> str:
    return f"B_simple ≈ {noise_scale_text(value)}: conjugacy expected below"


def _draw_noise_scale(ax: Axes, value: float, all_x: Sequence[float], handles: list[Any]) -> None:
    """A dashed vertical line at x = log2 B_simple when it lies within NOISE_NEAR_OCTAVES of the
    swept batch sizes; a legend entry alone when it lies farther (a line there would stretch the axis)."""
    if not (math.isfinite(value) and value > 0):
        return
    x = math.log2(value)
    label = _noise_label(value)
    if all_x and min(all_x) - NOISE_NEAR_OCTAVES <= x <= max(all_x) + NOISE_NEAR_OCTAVES:
        line = ax.axvline(x, color=NOISE_COLOR, linestyle=(0, (4, 2)), linewidth=1.2, zorder=1.5, label=label)
        line.set_gid("noise-scale")
        text = ax.text(x, 0.98, " B_simple", transform=ax.get_xaxis_transform(), rotation=90, ha="right", va="top",
                       fontsize=7.5, color=NOISE_COLOR)
        text.set_gid("noise-scale-label")
        handles.append(line)
    else:
        handles.append(Line2D([], [], color=NOISE_COLOR, linestyle=(0, (4, 2)), linewidth=1.2,
                              label=f"{label} (beyond the swept batch sizes)"))


@_styled
def optimum_shift(optima: pd.DataFrame, shifts: pd.DataFrame, meta: Mapping[str, Any] | None,
                  axis: str = "batch_size", noise: pd.DataFrame | None = None) -> Figure:
    """log2 lr* (with its interval) against log2 B, or against log2(1−β) for axis="momentum".

    Both parameterizations in one panel (colour), one marker shape per value of the other axis,
    the fitted lines of `shifts` (intercept + slope·x, slope and interval in the legend) and grey
    guides of slope 1, ½ and 0 through the first point. Against batch size, `noise`
    (analysis.noise_summary) adds a dashed vertical line at the mean gradient noise scale
    B_simple, below which lr and B are expected to be conjugate.
    """
    if axis not in AXIS_SYMBOL:
        raise ValueError(f"axis must be 'batch_size' or 'momentum', got {axis!r}")
    other = "momentum" if axis == "batch_size" else "batch_size"
    shifts = shifts if shifts is not None else pd.DataFrame()
    panels = _panels(optima, shifts)
    order = [p for p, _ in panels]
    other_values = _sorted_values(optima, other)
    markers = {value: MARKERS[i % len(MARKERS)] for i, value in enumerate(other_values)}

    figure = _new_figure(7.4, 4.6)
    ax = figure.subplots()
    ax.yaxis.set_major_locator(Log2Locator(nbins=8))
    ax.yaxis.set_major_formatter(FuncFormatter(power_of_two))
    ax.set_ylabel("optimal learning rate η* (log₂ axis)")

    def x_of(values: Any) -> np.ndarray:
        array = np.asarray(values, dtype=float)
        return _log2(array) if axis == "batch_size" else _log2(1.0 - array)

    handles: list[Any] = []
    first_point: tuple[float, float] | None = None
    all_x: list[float] = []
    has_fixed = "fixed" in shifts.columns
    for panel in panels:
        color = _parameterization_color(panel[0], order)
        label = _panel_label(panel, panels)
        points = _select(optima, parameterization=panel[0], optimizer=panel[1]) if not optima.empty else optima
        fits = _select(shifts, parameterization=panel[0], optimizer=panel[1], axis=axis) if not shifts.empty else shifts
        fits = fits if fits is not None else pd.DataFrame()
        fit_handles: list[Any] = []
        if points is not None and not points.empty:
            points = points.sort_values([axis, other])
            for value in other_values or [math.nan]:
                series = _select(points, **{other: value}) if math.isfinite(value) else points
                x = x_of(series[axis])
                y = series["log2_lr_opt"].to_numpy(dtype=float)
                all_x.extend(x[np.isfinite(x)])
                ok = np.isfinite(x) & np.isfinite(y)
                # A shift row per fixed value of the other axis (analysis.shifts' "fixed", e.g.
                # "momentum=0.9"): its line spans that series; without "fixed", one line per panel below.
                own = fits[[_fixed_value(f) == value for f in fits["fixed"]]] if has_fixed and not fits.empty else None
                drawn = False
                if own is not None and ok.any():
                    for fit in own.itertuples(index=False):
                        drawn |= _draw_fit(ax, fit, x[ok], color, _fit_label(label, fit, other, value), fit_handles,
                                           marker=markers.get(value, "o") if len(other_values) > 1 else None)
                if not drawn and ok.sum() > 1:  # no fitted line: join the points thinly
                    (thin,) = ax.plot(x[ok], y[ok], color=color, linewidth=0.8, alpha=0.5, zorder=2)
                    thin.set_gid("series")
                for xi, yi, row in zip(x, y, series.itertuples(index=False)):
                    if not (math.isfinite(xi) and math.isfinite(yi)):
                        continue
                    if first_point is None:
                        first_point = (float(xi), float(yi))
                    error = _interval_error(float(yi), row.lr_lo, row.lr_hi)
                    _draw_optimum(ax, float(xi), float(yi), error, color, bool(row.at_edge),
                                  marker=markers.get(value, "o"), vertical=True, size=7)
            handles.append(Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor=color,
                                  markeredgecolor="black", markeredgewidth=0.8, label=f"{label}: optima"))
        if not has_fixed and not fits.empty and points is not None and not points.empty:
            span = x_of(points[axis])
            for fit in fits.itertuples(index=False):
                _draw_fit(ax, fit, span[np.isfinite(span)], color, _fit_label(label, fit), fit_handles)
        handles += fit_handles

    if first_point is not None and all_x and max(all_x) > min(all_x):
        x0, y0 = first_point
        xs = np.array([min(all_x), max(all_x)])
        for slope, name, style in ((1.0, "1", (0, (5, 3))), (0.5, "½", (0, (2, 2))), (0.0, "0", (0, (6, 2, 1, 2)))):
            (guide,) = ax.plot(xs, y0 + slope * (xs - x0), color="#8c8c8c", linewidth=0.9, linestyle=style,
                               zorder=1, label=f"guide: slope {name}")
            guide.set_gid("guide")
            handles.append(guide)
    if axis == "batch_size":
        _draw_noise_scale(ax, _noise_scale(noise), all_x, handles)
    if len(other_values) > 1:
        handles += [Line2D([], [], linestyle="none", marker=markers[v], markersize=6, color="#555555",
                           label=_axis_value_label(other, v)) for v in other_values]
    handles.append(Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="none",
                          markeredgecolor="#555555", markeredgewidth=1.6, label="optimum at grid edge"))

    finite_x = sorted(set(np.round(x_of(optima[axis]), 9)) if not optima.empty else [])
    finite_x = [x for x in finite_x if math.isfinite(x)]
    values = _sorted_values(optima, axis)
    if finite_x:
        ax.xaxis.set_major_locator(FixedLocator(finite_x))
        by_x = {round(float(x_of([v])[0]), 9): v for v in values}
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: _tick_value(axis, by_x, x)))
        if len(finite_x) == 1:
            ax.set_xlim(finite_x[0] - 1, finite_x[0] + 1)
    if axis == "batch_size":
        ax.set_xlabel("batch size B (log₂ axis; x = log₂ B)")
        what = "optimal learning rate against batch size"
    else:
        ax.set_xlabel("momentum β, placed at x = log₂(1 − β)  (log₂ axis)")
        what = "optimal learning rate against momentum"
    figure.legend(handles=handles, loc="outside right center")
    figure.suptitle(_title(meta, f"{what}; slope = octaves of η* per octave of {_x_words(axis)}"))
    return figure


def _tick_value(axis: str, by_x: Mapping[float, float], x: float) -> str:
    value = by_x.get(round(float(x), 9))
    if value is None:
        return power_of_two(x)
    return _number(value)


def _x_words(axis: str) -> str:
    return "B" if axis == "batch_size" else "1 − β"


def _fit_label(label: str, fit: Any, other: str | None = None, fixed: float = math.nan) -> str:
    """'standard, β = 0.9: slope +0.87 [+0.80, +0.95]' (the interval when known)."""
    slope = float(fit.slope)
    lo, hi = float(getattr(fit, "slope_lo", math.nan)), float(getattr(fit, "slope_hi", math.nan))
    interval = f" [{_signed(lo)}, {_signed(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    where = f", {_axis_value_label(other, fixed)}" if other is not None and math.isfinite(fixed) else ""
    return f"{label}{where}: slope {_signed(slope)}{interval}"


def _fixed_value(raw: Any) -> float:
    """The other axis' value of a shift row: 0.9 from "momentum=0.9" (or from 0.9); NaN if unreadable."""
    text = str(raw).rsplit("=", 1)[-1].strip()
    try:
        return float(text)
    except ValueError:
        return math.nan


def _draw_fit(ax: Axes, fit: Any, xs: np.ndarray, color: Any, label: str, handles: list[Any],
              marker: str | None = None) -> bool:
    """The fitted line intercept + slope·x over the span of `xs`; False when there is none to draw.

    Its legend entry carries `marker`, the shape of the series it fits."""
    slope, intercept = float(fit.slope), float(fit.intercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)) or xs.size == 0:
        return False
    span = np.array([xs.min(), xs.max()])
    (line,) = ax.plot(span, intercept + slope * span, color=color, linewidth=2.0, alpha=0.9, zorder=3, label=label)
    line.set_gid("fit")
    handles.append(line if marker is None else Line2D(
        [], [], color=color, linewidth=2.0, alpha=0.9, marker=marker, markersize=6, markerfacecolor=color,
        markeredgecolor="black", markeredgewidth=0.8, label=label))
    return True
