"""The optimum against log2 B or log2(1 − β), with fitted slopes, guides and B_simple."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter

from hpconj.analysis import axis_value, mean_noise_scale, noise_scale_text
from hpconj.axes import AXES, axes_of
from hpconj.plots.style import (Log2Locator, MARKERS, power_of_two, _combo_label, _combos, _draw_optimum,
                                _interval_error, _new_figure, _number, _panel_label, _panels,
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


@dataclass
class _Canvas:
    """What the figure's parts share while it is drawn: the axes, the swept values' layout, the
    legend entries in order, the first optimum drawn (where the guides start) and every x drawn."""

    ax: Axes
    axis: str
    others: list[str]  # the other axes: one series of optima per combination of their values
    panels: list[tuple[str, str]]
    combos: list[tuple]
    markers: dict[tuple, str]
    handles: list[Any] = field(default_factory=list)
    first_point: tuple[float, float] | None = None
    all_x: list[float] = field(default_factory=list)

    def x_of(self, values: Any) -> np.ndarray:
        """x = log2 B, log2(1 − β), log2 width, ... (analysis.axis_value)."""
        return axis_value(self.axis, values)

    def marker(self, combo: tuple) -> str:
        return self.markers.get(combo, "o")


@_styled
def optimum_shift(optima: pd.DataFrame, shifts: pd.DataFrame, meta: Mapping[str, Any] | None,
                  axis: str = "batch_size", noise: pd.DataFrame | None = None) -> Figure:
    """log2 lr* (with its interval) against log2 B, or against log2(1−β) for axis="momentum"
    (against any numeric axis' abscissa, hpconj.axes).

    Both parameterizations in one panel (colour), one marker shape per value of the other axes,
    the fitted lines of `shifts` (intercept + slope·x, slope and interval in the legend) and grey
    guides of slope 1, ½ and 0 through the first point. Against batch size, `noise`
    (analysis.noise_summary) adds a dashed vertical line at the mean gradient noise scale
    B_simple, below which lr and B are expected to be conjugate.
    """
    if axis not in AXES or AXES[axis].categorical:
        raise ValueError(f"axis must be a numeric axis ({', '.join(a for a in AXES if not AXES[a].categorical)}), "
                         f"got {axis!r}")
    others = [a for a in axes_of(optima) if a != axis] if not optima.empty else []
    shifts = shifts if shifts is not None else pd.DataFrame()
    panels = _panels(optima, shifts)
    combos = _combos(optima, others) if others else []
    markers = {combo: MARKERS[i % len(MARKERS)] for i, combo in enumerate(combos)}

    figure = _new_figure(7.4, 4.6)
    canvas = _Canvas(figure.subplots(), axis, others, panels, combos, markers)
    canvas.ax.yaxis.set_major_locator(Log2Locator(nbins=8))
    canvas.ax.yaxis.set_major_formatter(FuncFormatter(power_of_two))
    canvas.ax.set_ylabel("optimal learning rate η* (log₂ axis)")
    for panel in panels:
        _draw_panel(canvas, panel, optima, shifts)
    _draw_guides(canvas)
    if axis == "batch_size":
        _draw_noise_scale(canvas.ax, _noise_scale(noise), canvas.all_x, canvas.handles)
    if len(combos) > 1:
        canvas.handles += [Line2D([], [], linestyle="none", marker=markers[c], markersize=6, color="#555555",
                                  label=_combo_label(others, c)) for c in combos]
    canvas.handles.append(Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="none",
                                 markeredgecolor="#555555", markeredgewidth=1.6, label="optimum at grid edge"))
    _x_ticks(canvas, optima)
    figure.legend(handles=canvas.handles, loc="outside right center")
    figure.suptitle(_title(meta, f"{_what(axis)}; slope = octaves of η* per octave of {_x_words(axis)}"))
    return figure


def _draw_panel(canvas: _Canvas, panel: tuple[str, str], optima: pd.DataFrame, shifts: pd.DataFrame) -> None:
    """One parameterization × optimizer: its optima per value of the other axis, and its fits."""
    color = _parameterization_color(panel[0], [p for p, _ in canvas.panels])
    label = _panel_label(panel, canvas.panels)
    points = _select(optima, parameterization=panel[0], optimizer=panel[1]) if not optima.empty else optima
    fits = _select(shifts, parameterization=panel[0], optimizer=panel[1], axis=canvas.axis) if not shifts.empty else shifts
    fits = fits if fits is not None else pd.DataFrame()
    fixed = [f"fixed_{o}" for o in canvas.others]
    # a shift row per combination of the other axes' values (analysis.shifts)
    per_value = bool(fixed) and all(f in fits.columns for f in fixed)
    fit_handles: list[Any] = []
    if points is not None and not points.empty:
        points = points.sort_values([canvas.axis, *canvas.others])
        for combo in canvas.combos or [()]:
            own = None
            if per_value and not fits.empty:
                own = fits[np.logical_and.reduce([fits[f] == v for f, v in zip(fixed, combo)])]
            _draw_series(canvas, points, combo, own, color, label, fit_handles)
        canvas.handles.append(Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor=color,
                                     markeredgecolor="black", markeredgewidth=0.8, label=f"{label}: optima"))
    if not per_value and not fits.empty and points is not None and not points.empty:
        span = canvas.x_of(points[canvas.axis])
        for fit in fits.itertuples(index=False):
            _draw_fit(canvas.ax, fit, span[np.isfinite(span)], color, _fit_label(label, fit), fit_handles)
    canvas.handles += fit_handles


def _draw_series(canvas: _Canvas, points: pd.DataFrame, combo: tuple, own: pd.DataFrame | None, color: Any,
                 label: str, fit_handles: list[Any]) -> None:
    """The optima at one combination of the other axes' values, with the fitted line of their shift
    row `own` spanning them (or, without one, a thin line joining them)."""
    series = _select(points, **dict(zip(canvas.others, combo)))
    x = canvas.x_of(series[canvas.axis])
    y = series["log2_lr_opt"].to_numpy(dtype=float)
    canvas.all_x.extend(x[np.isfinite(x)])
    ok = np.isfinite(x) & np.isfinite(y)
    drawn = False
    if own is not None and ok.any():
        for fit in own.itertuples(index=False):
            drawn |= _draw_fit(canvas.ax, fit, x[ok], color, _fit_label(label, fit, canvas.others, combo),
                               fit_handles, marker=canvas.marker(combo) if len(canvas.combos) > 1 else None)
    if not drawn and ok.sum() > 1:
        (thin,) = canvas.ax.plot(x[ok], y[ok], color=color, linewidth=0.8, alpha=0.5, zorder=2)
        thin.set_gid("series")
    for xi, yi, row in zip(x, y, series.itertuples(index=False)):
        if not (math.isfinite(xi) and math.isfinite(yi)):
            continue
        if canvas.first_point is None:
            canvas.first_point = (float(xi), float(yi))
        error = _interval_error(float(yi), row.lr_lo, row.lr_hi)
        _draw_optimum(canvas.ax, float(xi), float(yi), error, color, bool(row.at_edge),
                      marker=canvas.marker(combo), vertical=True, size=7)


def _draw_guides(canvas: _Canvas) -> None:
    """Grey lines of slope 1, ½ and 0 through the first optimum, over every x drawn."""
    if canvas.first_point is None or not canvas.all_x or max(canvas.all_x) <= min(canvas.all_x):
        return
    x0, y0 = canvas.first_point
    xs = np.array([min(canvas.all_x), max(canvas.all_x)])
    for slope, name, style in ((1.0, "1", (0, (5, 3))), (0.5, "½", (0, (2, 2))), (0.0, "0", (0, (6, 2, 1, 2)))):
        (guide,) = canvas.ax.plot(xs, y0 + slope * (xs - x0), color="#8c8c8c", linewidth=0.9, linestyle=style,
                                  zorder=1, label=f"guide: slope {name}")
        guide.set_gid("guide")
        canvas.handles.append(guide)


def _x_ticks(canvas: _Canvas, optima: pd.DataFrame) -> None:
    """A tick at each swept value of the axis, labelled with the value (not its log), and the x label."""
    ax, axis = canvas.ax, canvas.axis
    finite_x = sorted(set(np.round(canvas.x_of(optima[axis]), 9)) if not optima.empty else [])
    finite_x = [x for x in finite_x if math.isfinite(x)]
    values = _sorted_values(optima, axis)
    if finite_x:
        ax.xaxis.set_major_locator(FixedLocator(finite_x))
        by_x = {round(float(canvas.x_of([v])[0]), 9): v for v in values}
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: _tick_value(axis, by_x, x)))
        if len(finite_x) == 1:
            ax.set_xlim(finite_x[0] - 1, finite_x[0] + 1)
    if axis == "batch_size":
        ax.set_xlabel("batch size B (log₂ axis; x = log₂ B)")
    elif axis == "momentum":
        ax.set_xlabel("momentum β, placed at x = log₂(1 − β)  (log₂ axis)")
    else:
        ax.set_xlabel(f"{AXES[axis].words} (log₂ axis)")


def _what(axis: str) -> str:
    return f"optimal learning rate against {AXES[axis].words}"


def _tick_value(axis: str, by_x: Mapping[float, float], x: float) -> str:
    value = by_x.get(round(float(x), 9))
    if value is None:
        return power_of_two(x)
    return _number(value)


def _x_words(axis: str) -> str:
    return {"batch_size": "B", "momentum": "1 − β"}.get(axis, AXES[axis].words)


def _fit_label(label: str, fit: Any, others: list[str] | None = None, combo: tuple = ()) -> str:
    """'standard, β = 0.9: slope +0.87 [+0.80, +0.95]' (the interval when known)."""
    slope = float(fit.slope)
    lo, hi = float(getattr(fit, "slope_lo", math.nan)), float(getattr(fit, "slope_hi", math.nan))
    interval = f" [{_signed(lo)}, {_signed(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    where = f", {_combo_label(others, combo)}" if others and combo else ""
    return f"{label}{where}: slope {_signed(slope)}{interval}"


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
