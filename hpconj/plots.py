"""Figures of a sweep: they only DRAW the DataFrames of `hpconj.analysis` (nothing statistical here).

Every function returns a `matplotlib.figure.Figure` built without pyplot, so no global figure
state is created or leaked; `write_figures` saves them as PNG (150 dpi) and SVG.

Artists that tests (or readers) may want to find carry a `gid`:

- ``"curve"``: a slice's seed-mean metric against log2 lr (finite points; gaps where diverged),
- ``"band"``: the seed spread (min..max over seeds of finite values),
- ``"optimum"``: an optimum marker (hollow when the optimum is at the edge of the grid),
- ``"optimum-interval"``: its horizontal (or vertical) interval bar,
- ``"diverged"``: '×' markers at the top of a panel where the seed-mean metric is +inf (diverged),
- ``"fit"``: a fitted line log2 lr* = intercept + slope·x,
- ``"guide"``: the grey reference lines of slope 1, ½ and 0,
- ``"optimum-path"``: the optimum per batch size on a heatmap,
- ``"heatmap"`` / ``"heatmap-diverged"``: the metric cells and the diverged cells,
- ``"training"``: a seed-mean training curve,
- ``"noise-scale"``: the vertical line at the gradient noise scale B_simple (optimum shift
  against batch size), with its text ``"noise-scale-label"``.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

# Headless by default (these figures never need a GUI: they are drawn with FigureCanvasAgg), but never
# override a backend the user chose (MPLBACKEND) or a session already running pyplot (a notebook).
if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib import colormaps, patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hpconj.analysis import mean_noise_scale, noise_scale_text
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, Locator, LogLocator, MaxNLocator

__all__ = [
    "loss_vs_lr",
    "optimum_shift",
    "metric_heatmap",
    "training_curves",
    "write_figures",
    "power_of_two",
    "Log2Locator",
]

STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "legend.frameon": False,
    "svg.hashsalt": "hpconj",  # deterministic SVG ids
    "mathtext.default": "regular",
}
PARAMETERIZATION_COLORS = {"standard": "#1f5fa8", "sqrt": "#2a9d8f", "conjugate": "#d1495b"}
OTHER_COLORS = ["#8d6a9f", "#e9a23b", "#555555", "#7fb800"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">"]
DIVERGED_COLOR = "#b3b3b3"
SLICE_COLUMNS = ["parameterization", "optimizer", "batch_size", "momentum"]
AXIS_SYMBOL = {"batch_size": "B", "momentum": "β"}
AXIS_WORDS = {"batch_size": "batch size", "momentum": "momentum"}

F = TypeVar("F", bound=Callable[..., Figure])


# --------------------------------------------------------------------------------------------- helpers


def _styled(function: F) -> F:
    """Build the figure under the house style (artists keep their properties after the context)."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        # a fixed hash salt makes the SVG's element ids, and so its bytes, the same on every run
        with matplotlib.rc_context({**STYLE, "svg.hashsalt": "hpconj"}):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def power_of_two(value: float, _position: object = None) -> str:
    """Tick label of a log2 coordinate: 2^-6 → '$2^{-6}$', 2^-6.5 → '$2^{-6.5}$' (mathtext)."""
    if not math.isfinite(value):
        return ""
    rounded = round(value)
    exponent = str(int(rounded)) if abs(value - rounded) < 1e-6 else f"{value:.2f}".rstrip("0").rstrip(".")
    exponent = exponent.replace("-", "\N{MINUS SIGN}")
    return f"$2^{{{exponent}}}$"


def _number(value: float) -> str:
    """Short label of a hyperparameter value: 8, 0.9, 0.99, 1e-05."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def _axis_value_label(axis: str, value: float) -> str:
    return f"{AXIS_SYMBOL.get(axis, axis)} = {_number(value)}"


def _signed(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.2f}".replace("-", "\N{MINUS SIGN}")


def _meta(meta: Mapping[str, Any] | None, key: str, default: str = "") -> str:
    if not meta:
        return default
    value = meta.get(key, default)
    return default if value is None else str(value)


def _title(meta: Mapping[str, Any] | None, what: str) -> str:
    """'quickstart — mlp 64-64-64-10 on digits · momentum · 4 epochs · B_ref = 8' + a line saying what is shown."""
    b_ref = _meta(meta, "reference_batch_size")
    parts = [p for p in (_meta(meta, "task"), _meta(meta, "optimizer"), _meta(meta, "budget"),
                         f"B_ref = {b_ref}" if b_ref else "") if p]
    head = " · ".join(parts)
    name = _meta(meta, "name")
    if name:
        head = f"{name} — {head}" if head else name
    return f"{head}\n{what}" if head else what


def _metric_name(meta: Mapping[str, Any] | None) -> str:
    return _meta(meta, "metric", "metric") or "metric"


def _order_parameterizations(values: Iterable[str]) -> list[str]:
    preferred = ["standard", "sqrt", "conjugate"]
    present = list(dict.fromkeys(str(v) for v in values))
    return [p for p in preferred if p in present] + sorted(p for p in present if p not in preferred)


def _panels(*frames: pd.DataFrame) -> list[tuple[str, str]]:
    """(parameterization, optimizer) pairs present in any frame, standard first, conjugate second."""
    pairs: dict[tuple[str, str], None] = {}
    for frame in frames:
        if frame is None or frame.empty:
            continue
        columns = [c for c in ("parameterization", "optimizer") if c in frame.columns]
        for row in frame[columns].drop_duplicates().itertuples(index=False):
            values = dict(zip(columns, row))
            pairs[(str(values.get("parameterization", "")), str(values.get("optimizer", "")))] = None
    order = _order_parameterizations(p for p, _ in pairs)
    return sorted(pairs, key=lambda pair: (order.index(pair[0]), pair[1]))


def _panel_label(panel: tuple[str, str], panels: Sequence[tuple[str, str]]) -> str:
    several_optimizers = len({optimizer for _, optimizer in panels}) > 1
    return f"{panel[0]} ({panel[1]})" if several_optimizers else panel[0]


def _select(frame: pd.DataFrame, **equal: Any) -> pd.DataFrame:
    if frame is None or frame.empty:
        return frame
    mask = np.ones(len(frame), dtype=bool)
    for column, value in equal.items():
        if column not in frame.columns:
            continue
        if isinstance(value, float):
            mask &= np.isclose(frame[column].to_numpy(dtype=float), value, rtol=0, atol=1e-12)
        else:
            mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def _sorted_values(frame: pd.DataFrame, column: str) -> list[float]:
    if frame is None or frame.empty or column not in frame.columns:
        return []
    return sorted({float(v) for v in frame[column].dropna().to_numpy()})


def _sequential_colors(values: Sequence[float]) -> dict[float, Any]:
    """viridis by rank (the yellow end is cut off: it is unreadable on white)."""
    cmap = colormaps["viridis"]
    if len(values) == 1:
        return {values[0]: cmap(0.35)}
    return {value: cmap(0.85 * i / (len(values) - 1)) for i, value in enumerate(values)}


def _parameterization_color(parameterization: str, order: Sequence[str]) -> str:
    if parameterization in PARAMETERIZATION_COLORS:
        return PARAMETERIZATION_COLORS[parameterization]
    others = [p for p in order if p not in PARAMETERIZATION_COLORS]
    return OTHER_COLORS[others.index(parameterization) % len(OTHER_COLORS)] if parameterization in others else "#333333"


def _finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float).ravel()
    return array[np.isfinite(array)]


def _use_log_scale(values: np.ndarray) -> bool:
    """Log scale when the finite, positive values span more than one decade."""
    return values.size > 0 and bool(np.all(values > 0)) and float(values.max()) > 10 * float(values.min())


def _value_limits(values: np.ndarray, log: bool, headroom: float) -> tuple[float, float] | None:
    """Axis limits with a small margin below and `headroom` (a share of the span) above."""
    if values.size == 0:
        return None
    low, high = float(values.min()), float(values.max())
    if log:
        span = math.log10(high / low) if high > low else 1.0
        return low / 10 ** (0.05 * span), high * 10 ** (headroom * span)
    span = high - low if high > low else (abs(high) or 1.0)
    return low - 0.05 * span, high + headroom * span


def _log2(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(array > 0, np.log2(np.where(array > 0, array, 1.0)), np.nan)


class Log2Locator(Locator):
    """Ticks on a log2 coordinate: whole octaves (at most `nbins` + 1), or half and quarter octaves
    when the view spans less than two octaves, so tick labels stay short (2^-6, 2^-5.5)."""

    def __init__(self, nbins: int = 7) -> None:
        self._octaves = MaxNLocator(nbins=nbins, integer=True, min_n_ticks=2)

    def __call__(self) -> Sequence[float]:
        assert self.axis is not None
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
        low, high = sorted((float(vmin), float(vmax)))
        if not (math.isfinite(low) and math.isfinite(high)):
            return []
        if high - low >= 2:
            return list(self._octaves.tick_values(low, high))
        for step in (1.0, 0.5, 0.25):
            ticks = np.arange(math.ceil(low / step - 1e-9) * step, high + 1e-9, step)
            if len(ticks) >= 2:
                return [float(t) for t in ticks]
        return [round((low + high) / 2 * 4) / 4]


def _log_y(ax: Axes) -> None:
    """Log y axis with minor ticks at 2 and 5 only: readable, and far fewer tick artists to lay out."""
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))


def _lr_axis(ax: Axes, label: bool = True) -> None:
    ax.xaxis.set_major_locator(Log2Locator())
    ax.xaxis.set_major_formatter(FuncFormatter(power_of_two))
    if label:
        ax.set_xlabel("learning rate η (log₂ axis)")


def _interval_error(center: float, lo: float, hi: float) -> list[list[float]] | None:
    """Asymmetric error bar [[below], [above]] in log2 units, or None when the interval is missing."""
    low, high = _log2([lo, hi])
    if not (math.isfinite(center) and math.isfinite(low) and math.isfinite(high)):
        return None
    return [[max(center - float(low), 0.0)], [max(float(high) - center, 0.0)]]


def _draw_optimum(ax: Axes, x: float, y: float, error: list[list[float]] | None, color: Any, edge: bool,
                  marker: str = "o", vertical: bool = False, size: float = 7.5, zorder: float = 5) -> None:
    """An optimum marker (hollow when at the edge of the grid) with its interval bar."""
    if error is not None:
        bar = ax.errorbar([x], [y], yerr=error if vertical else None, xerr=None if vertical else error, fmt="none",
                          ecolor=color, elinewidth=1.4, capsize=3, capthick=1.4, zorder=zorder - 0.5)
        for artist in bar.lines[1] + bar.lines[2]:
            artist.set_gid("optimum-interval")
    (line,) = ax.plot([x], [y], linestyle="none", marker=marker, markersize=size, zorder=zorder,
                      markerfacecolor="none" if edge else color, markeredgecolor=color if edge else "black",
                      markeredgewidth=1.6 if edge else 0.8)
    line.set_gid("optimum")


def _frame(frames: Any, name: str) -> pd.DataFrame:
    """frames[name] or frames.name; an empty DataFrame when missing."""
    if isinstance(frames, Mapping):
        value = frames.get(name)
    else:
        value = getattr(frames, name, None)
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame()


# ---------------------------------------------------------------------------------------- loss vs lr


@_styled
def loss_vs_lr(curves: pd.DataFrame, optima: pd.DataFrame, meta: Mapping[str, Any] | None,
               by: str = "batch_size") -> Figure:
    """Seed-mean metric against lr, one curve per value of `by`, one panel per parameterization.

    Columns: parameterizations (shared y axis); rows: the values of the other axis (momentum when
    `by` is batch_size, and the reverse). Each curve has its seed band (min..max over seeds), its
    optimum (sub-grid, with its interval; hollow at the grid's edge) and '×' at the top of the
    panel where the seed mean is +inf (diverged).
    """
    if by not in AXIS_SYMBOL:
        raise ValueError(f"by must be 'batch_size' or 'momentum', got {by!r}")
    other = "momentum" if by == "batch_size" else "batch_size"
    metric = _metric_name(meta)
    optima = optima if optima is not None else pd.DataFrame()
    panels = _panels(curves)
    by_values = _sorted_values(curves, by)
    other_values = _sorted_values(curves, other) or [math.nan]
    colors = _sequential_colors(by_values) if by_values else {}

    n_rows, n_cols = len(other_values), max(len(panels), 1)
    figure = _new_figure(3.6 * n_cols + 1.5, 0.6 + 2.9 * n_rows)
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, sharey=True, squeeze=False))

    # Shared y limits from every finite value drawn; headroom for the '×' row when anything diverged.
    drawn = [_finite(curves[c]) for c in ("metric_mean", "metric_lo", "metric_hi") if c in curves.columns]
    if not optima.empty and "metric_opt" in optima.columns:
        drawn.append(_finite(optima["metric_opt"]))
    values = np.concatenate(drawn) if drawn else np.array([])
    log = _use_log_scale(values)
    any_diverged = bool(np.isposinf(curves["metric_mean"].to_numpy(dtype=float)).any()) if not curves.empty else False
    n_marker_rows = len(by_values) if any_diverged else 0
    limits = _value_limits(values, log, headroom=0.08 + 0.045 * n_marker_rows)
    seeds = sorted({int(v) for v in curves["n_seeds"].dropna()}) if "n_seeds" in curves.columns and not curves.empty else []

    for row, other_value in enumerate(other_values):
        for col, panel in enumerate(panels or [("", "")]):
            ax = axes[row, col]
            title = _panel_label(panel, panels) if panels else "no data"
            if math.isfinite(other_value) and panels:
                title += f",  {_axis_value_label(other, other_value)}"
            ax.set_title(title)
            _lr_axis(ax, label=row == n_rows - 1)
            if log:
                _log_y(ax)
            if col == 0:
                ax.set_ylabel(f"{metric} (seed mean)")
            if not panels:
                continue
            selection = {"parameterization": panel[0], "optimizer": panel[1]}
            if math.isfinite(other_value):
                selection[other] = other_value
            panel_curves = _select(curves, **selection)
            panel_optima = _select(optima, **selection) if not optima.empty else optima
            for index, value in enumerate(by_values):
                one = _select(panel_curves, **{by: value}).sort_values("log2_lr")
                if one.empty:
                    continue
                color = colors[value]
                x = one["log2_lr"].to_numpy(dtype=float)
                mean = one["metric_mean"].to_numpy(dtype=float)
                finite = np.isfinite(mean)
                (line,) = ax.plot(x, np.where(finite, mean, np.nan), color=color, linewidth=1.5, marker=".",
                                  markersize=4, zorder=3)
                line.set_gid("curve")
                lo = one["metric_lo"].to_numpy(dtype=float) if "metric_lo" in one.columns else mean
                hi = one["metric_hi"].to_numpy(dtype=float) if "metric_hi" in one.columns else mean
                band = np.isfinite(lo) & np.isfinite(hi)
                if band.any():
                    fill = ax.fill_between(x, np.where(band, lo, np.nan), np.where(band, hi, np.nan), where=band,
                                           color=color, alpha=0.18, linewidth=0, zorder=2)
                    fill.set_gid("band")
                diverged = np.isposinf(mean)
                if diverged.any():
                    (crosses,) = ax.plot(x[diverged], np.full(int(diverged.sum()), 0.975 - 0.045 * index),
                                         transform=ax.get_xaxis_transform(), linestyle="none", marker="x",
                                         markersize=6, markeredgewidth=1.5, color=color, zorder=4, clip_on=False)
                    crosses.set_gid("diverged")
                if panel_optima is not None and not panel_optima.empty:
                    for optimum in _select(panel_optima, **{by: value}).itertuples(index=False):
                        x_opt, y_opt = float(optimum.log2_lr_opt), float(optimum.metric_opt)
                        if not (math.isfinite(x_opt) and math.isfinite(y_opt)):
                            continue
                        _draw_optimum(ax, x_opt, y_opt, _interval_error(x_opt, optimum.lr_lo, optimum.lr_hi), color,
                                      bool(optimum.at_edge))
    if limits is not None:
        axes[0, 0].set_ylim(*limits)

    handles: list[Any] = [Line2D([], [], color=colors[v], linewidth=1.5, marker=".", label=_axis_value_label(by, v))
                          for v in by_values]
    handles += [
        Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="#777777",
               markeredgecolor="black", markeredgewidth=0.8, label="optimum ± interval"),
        Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="none",
               markeredgecolor="#777777", markeredgewidth=1.6, label="optimum at grid edge"),
        Line2D([], [], linestyle="none", marker="x", markersize=6, markeredgewidth=1.5, color="#777777",
               label="diverged (seed mean = ∞)"),
        Patch(facecolor="#777777", alpha=0.25, label=_band_label(seeds)),
    ]
    figure.legend(handles=handles, loc="outside right center", title=AXIS_WORDS[by])
    figure.suptitle(_title(meta, f"{metric} against learning rate, one curve per {AXIS_WORDS[by]}"))
    return figure


def _band_label(seeds: Sequence[int]) -> str:
    if not seeds:
        return "seed range"
    count = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    return f"seed range (min–max of {count})"


# ------------------------------------------------------------------------------------- optimum shift


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


# ---------------------------------------------------------------------------------------- heatmap


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (half a gap beyond the ends; width 1 for a single centre)."""
    if centers.size == 1:
        return np.array([centers[0] - 0.5, centers[0] + 0.5])
    middle = (centers[:-1] + centers[1:]) / 2
    return np.concatenate([[centers[0] - (middle[0] - centers[0])], middle, [centers[-1] + (centers[-1] - middle[-1])]])


@_styled
def metric_heatmap(curves: pd.DataFrame, optima: pd.DataFrame, meta: Mapping[str, Any] | None) -> Figure:
    """Seed-mean metric over lr (x) × batch size (y): one panel per parameterization (columns) and
    momentum value (rows), one shared colour scale, diverged cells grey, and the optimum path."""
    metric = _metric_name(meta)
    optima = optima if optima is not None else pd.DataFrame()
    panels = _panels(curves)
    momenta = _sorted_values(curves, "momentum") or [math.nan]
    n_rows, n_cols = len(momenta), max(len(panels), 1)
    figure = _new_figure(3.5 * n_cols + 1.6, 0.9 + 2.6 * n_rows)
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False, sharey=True))

    values = _finite(curves["metric_mean"]) if not curves.empty else np.array([])
    norm: Normalize
    if _use_log_scale(values):
        norm = LogNorm(vmin=float(values.min()), vmax=float(values.max()))
    elif values.size:
        low, high = float(values.min()), float(values.max())
        norm = Normalize(vmin=low, vmax=high if high > low else low + 1.0)
    else:
        norm = Normalize(vmin=0.0, vmax=1.0)
    cmap = colormaps["viridis"]
    batch_sizes = _sorted_values(curves, "batch_size")
    y_centers = _log2(batch_sizes)
    mappable = None
    any_diverged = False
    for row, momentum in enumerate(momenta):
        for col, panel in enumerate(panels or [("", "")]):
            ax = axes[row, col]
            ax.grid(False)
            title = _panel_label(panel, panels) if panels else "no data"
            if math.isfinite(momentum) and panels:
                title += f",  {_axis_value_label('momentum', momentum)}"
            ax.set_title(title)
            _lr_axis(ax, label=row == n_rows - 1)
            if col == 0:
                ax.set_ylabel("batch size B (log₂ axis)")
            if not panels:
                continue
            selection: dict[str, Any] = {"parameterization": panel[0], "optimizer": panel[1]}
            if math.isfinite(momentum):
                selection["momentum"] = momentum
            cells = _select(curves, **selection)
            if cells.empty:
                continue
            x_keys = np.round(cells["log2_lr"].to_numpy(dtype=float), 9)
            x_centers = np.unique(x_keys)
            grid = np.full((len(batch_sizes), len(x_centers)), np.nan)
            for b_index, batch_size in enumerate(batch_sizes):
                one = _select(cells, batch_size=batch_size)
                for x, value in zip(np.round(one["log2_lr"].to_numpy(dtype=float), 9),
                                    one["metric_mean"].to_numpy(dtype=float)):
                    grid[b_index, int(np.searchsorted(x_centers, x))] = value
            x_edges, y_edges = _edges(x_centers), _edges(y_centers)
            diverged = np.isposinf(grid)
            if diverged.any():
                any_diverged = True
                gray = ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~diverged, np.ones_like(grid)),
                                     cmap=ListedColormap([DIVERGED_COLOR]), vmin=0, vmax=1,
                                     edgecolors="white", linewidth=0.4)
                gray.set_gid("heatmap-diverged")
            finite = np.isfinite(grid)
            if isinstance(norm, LogNorm):
                finite &= grid > 0
            mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~finite, grid), cmap=cmap, norm=norm,
                                 edgecolors="white", linewidth=0.4)
            mesh.set_gid("heatmap")
            mappable = mesh
            ax.set_xlim(x_edges[0], x_edges[-1])
            ax.set_ylim(y_edges[0], y_edges[-1])
            _draw_path(ax, _select(optima, **selection) if not optima.empty else optima)
    for ax in axes.ravel():
        ax.yaxis.set_major_locator(FixedLocator(list(y_centers)))
        ax.yaxis.set_major_formatter(FuncFormatter(
            lambda y, _p: _number(2 ** y) if math.isfinite(y) and abs(2 ** y - round(2 ** y)) < 1e-6 else ""))
    if mappable is None:
        mappable = ScalarMappable(norm=norm, cmap=cmap)
    colorbar = figure.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.9, aspect=30, pad=0.02)
    colorbar.set_label(f"{metric} (seed mean)")
    handles: list[Any] = [
        Line2D([], [], color="white", linewidth=1.8, marker="o", markersize=5, markerfacecolor="white",
               markeredgecolor="black", path_effects=[patheffects.withStroke(linewidth=3.2, foreground="black")],
               label="optimum per batch size"),
        Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none", markeredgecolor="white",
               markeredgewidth=2.0, path_effects=[patheffects.withStroke(linewidth=3.6, foreground="black")],
               label="optimum at grid edge"),
    ]
    if any_diverged:
        handles.append(Patch(facecolor=DIVERGED_COLOR, edgecolor="white", label="diverged (seed mean = ∞)"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    figure.suptitle(_title(meta, f"{metric} over learning rate × batch size"))
    return figure


def _draw_path(ax: Axes, optima: pd.DataFrame) -> None:
    if optima is None or optima.empty:
        return
    path = optima.sort_values("batch_size")
    x = path["log2_lr_opt"].to_numpy(dtype=float)
    y = _log2(path["batch_size"].to_numpy(dtype=float))
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return
    stroke = [patheffects.withStroke(linewidth=3.2, foreground="black")]
    (line,) = ax.plot(np.where(ok, x, np.nan), y, color="white", linewidth=1.8, zorder=4, path_effects=stroke)
    line.set_gid("optimum-path")
    for xi, yi, edge in zip(x[ok], y[ok], path["at_edge"].to_numpy()[ok]):
        if bool(edge):  # a wide white ring (outlined in black) around the path's end: hollow
            (point,) = ax.plot([xi], [yi], linestyle="none", marker="o", markersize=10, zorder=5,
                               markerfacecolor="none", markeredgecolor="white", markeredgewidth=2.0,
                               path_effects=[patheffects.withStroke(linewidth=3.6, foreground="black")])
        else:
            (point,) = ax.plot([xi], [yi], linestyle="none", marker="o", markersize=6, zorder=5,
                               markerfacecolor="white", markeredgecolor="black", markeredgewidth=1.0)
        point.set_gid("optimum")


# ------------------------------------------------------------------------------------ training curves


@_styled
def training_curves(training: pd.DataFrame, meta: Mapping[str, Any] | None) -> Figure:
    """Seed-mean train loss against examples seen (log y), one line per slice at its best lr:
    colour by batch size, line style by parameterization, one panel per momentum value."""
    momenta = _sorted_values(training, "momentum") or [math.nan]
    batch_sizes = _sorted_values(training, "batch_size")
    colors = _sequential_colors(batch_sizes) if batch_sizes else {}
    panels = _panels(training)
    # The first parameterization wide and pale, the others thin on top: identical trainings (conjugate
    # equals standard at B = B_ref, β = 0) then show as a dashed line over a pale one, not as one line.
    looks = [("-", 2.6, 0.5), ("--", 1.3, 1.0), (":", 1.6, 1.0), ("-.", 1.3, 1.0)]
    styles = {panel: looks[i % len(looks)] for i, panel in enumerate(panels)}
    figure = _new_figure(3.6 * len(momenta) + 1.7, 3.8)
    axes = figure.subplots(1, len(momenta), sharey=True, squeeze=False)[0]

    keys = [c for c in SLICE_COLUMNS + ["lr", "examples"] if c in training.columns]
    if not training.empty:
        means = training.groupby(keys, sort=True, dropna=False)["train_loss"].mean().reset_index()
        losses = means["train_loss"].to_numpy(dtype=float)
    else:
        means, losses = training, np.array([])
    positive = losses[np.isfinite(losses)]
    log = positive.size > 0 and bool(np.all(positive > 0))
    for ax, momentum in zip(axes, momenta):
        ax.set_title(_axis_value_label("momentum", momentum) if math.isfinite(momentum) else "training")
        ax.set_xlabel("examples seen")
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        if log:
            _log_y(ax)
        if means.empty:
            continue
        panel_means = _select(means, momentum=momentum) if math.isfinite(momentum) else means
        for panel in panels:
            for batch_size in batch_sizes:
                one = _select(panel_means, parameterization=panel[0], optimizer=panel[1], batch_size=batch_size)
                if one.empty:
                    continue
                for _, curve in one.groupby("lr", sort=True):
                    curve = curve.sort_values("examples")
                    y = curve["train_loss"].to_numpy(dtype=float)
                    y = np.where(np.isfinite(y) & ((y > 0) | (not log)), y, np.nan)
                    style, width, alpha = styles[panel]
                    (line,) = ax.plot(curve["examples"].to_numpy(dtype=float), y, color=colors[batch_size],
                                      linestyle=style, linewidth=width, alpha=alpha)
                    line.set_gid("training")
    axes[0].set_ylabel("train loss (seed mean of batch losses)")
    handles: list[Any] = [Line2D([], [], color=colors[b], linewidth=1.6, label=_axis_value_label("batch_size", b))
                          for b in batch_sizes]
    handles += [Line2D([], [], color="#444444", linestyle=styles[p][0], linewidth=styles[p][1], alpha=styles[p][2],
                       label=_panel_label(p, panels)) for p in panels]
    figure.legend(handles=handles, loc="outside right center")
    figure.suptitle(_title(meta, "training curves at the best grid learning rate of each slice"))
    return figure


def _thousands(value: float, _position: object = None) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


# -------------------------------------------------------------------------------------------- writing


def write_figures(frames: Mapping[str, pd.DataFrame] | Any, meta: Mapping[str, Any] | None, folder: Path) -> list[Path]:
    """Save every figure that has data as PNG (150 dpi) and SVG under `folder/"plots"`.

    `frames` maps (or has attributes) curves, optima, shifts, training and, optionally, noise
    (drawn on optimum_shift_batch_size). Written, when their
    frame is not empty: loss_vs_lr_batch_size, loss_vs_lr_momentum (more than one momentum),
    optimum_shift_batch_size (more than one batch size), optimum_shift_momentum (more than one
    momentum), metric_heatmap, training_curves. Returns the paths written, in that order.
    """
    curves, optima = _frame(frames, "curves"), _frame(frames, "optima")
    shifts, training = _frame(frames, "shifts"), _frame(frames, "training")
    noise = _frame(frames, "noise")
    jobs: list[tuple[str, Callable[[], Figure]]] = []
    if not curves.empty:
        jobs.append(("loss_vs_lr_batch_size", lambda: loss_vs_lr(curves, optima, meta, by="batch_size")))
        if len(_sorted_values(curves, "momentum")) > 1:
            jobs.append(("loss_vs_lr_momentum", lambda: loss_vs_lr(curves, optima, meta, by="momentum")))
    if not optima.empty:
        if len(_sorted_values(optima, "batch_size")) > 1:
            jobs.append(("optimum_shift_batch_size", lambda: optimum_shift(optima, shifts, meta, axis="batch_size",
                                                                          noise=noise)))
        if len(_sorted_values(optima, "momentum")) > 1:
            jobs.append(("optimum_shift_momentum", lambda: optimum_shift(optima, shifts, meta, axis="momentum")))
    if not curves.empty:
        jobs.append(("metric_heatmap", lambda: metric_heatmap(curves, optima, meta)))
    if not training.empty:
        jobs.append(("training_curves", lambda: training_curves(training, meta)))

    out = Path(folder) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, make in jobs:
        figure = make()
        # a fixed hash salt makes the SVG's element ids, and so its bytes, the same on every run
        with matplotlib.rc_context({**STYLE, "svg.hashsalt": "hpconj"}):
            for suffix, options in ((".png", {"dpi": 150, "metadata": {"Software": None}}),
                                    (".svg", {"metadata": {"Date": None, "Creator": None}})):
                path = out / f"{name}{suffix}"
                figure.savefig(path, facecolor="white", **options)
                written.append(path)
                # The layout (in inches, so the same for every format) is known now: keep it instead of
                # solving it again for the next format (constrained layout costs a full draw).
                figure.set_layout_engine("none")
    return written
