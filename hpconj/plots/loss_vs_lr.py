"""Loss against lr, one panel per parameterization, one curve per batch size or momentum."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from hpconj.axes import AXES, TRIAL_AXES, axes_of
from hpconj.plots.style import (_axis_value_label, _combo_label, _combos, _draw_optimum, _finite, _interval_error,
                                _log_y, _lr_axis, _metric_name, _new_figure, _panel_label, _panels, _select,
                                _sequential_colors, _sorted_values, _styled, _title, _use_log_scale, _value_limits)


@_styled
def loss_vs_lr(curves: pd.DataFrame, optima: pd.DataFrame, meta: Mapping[str, Any] | None,
               by: str = "batch_size") -> Figure:
    """Seed-mean metric against lr, one curve per value of the axis `by`, one panel per parameterization.

    Columns: parameterizations (shared y axis); rows: the value combinations of the other axes
    (momentum when `by` is batch_size, and the reverse; with more axes, each combination). Each
    curve has its seed band (min..max over seeds), its optimum (sub-grid, with its interval;
    hollow at the grid's edge) and '×' at the top of the panel where the seed mean is +inf (diverged).
    """
    if by not in AXES:
        raise ValueError(f"by must be one of {', '.join(AXES)}, got {by!r}")
    others = [a for a in axes_of(curves) if a != by] if not curves.empty else [a for a in TRIAL_AXES if a != by]
    metric = _metric_name(meta)
    optima = optima if optima is not None else pd.DataFrame()
    panels = _panels(curves)
    by_values = _sorted_values(curves, by)
    combos = _combos(curves, others)
    colors = _sequential_colors(by_values) if by_values else {}

    n_rows, n_cols = len(combos), max(len(panels), 1)
    figure = _new_figure(3.6 * n_cols + 1.5, 0.6 + 2.9 * n_rows)
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, sharey=True, squeeze=False))
    log, limits = _y_scale(curves, optima, len(by_values))
    for row, combo in enumerate(combos):
        for col, panel in enumerate(panels or [("", "")]):
            ax = axes[row, col]
            title = _panel_label(panel, panels) if panels else "no data"
            if combo and panels:
                title += f",  {_combo_label(others, combo)}"
            ax.set_title(title)
            _lr_axis(ax, label=row == n_rows - 1)
            if log:
                _log_y(ax)
            if col == 0:
                ax.set_ylabel(f"{metric} (seed mean)")
            if not panels:
                continue
            selection = {"parameterization": panel[0], "optimizer": panel[1], **dict(zip(others, combo))}
            panel_optima = _select(optima, **selection) if not optima.empty else optima
            for index, value in enumerate(by_values):
                drawn = _draw_curve(ax, _select(_select(curves, **selection), **{by: value}), index, colors[value])
                if drawn and panel_optima is not None and not panel_optima.empty:
                    _draw_optima(ax, _select(panel_optima, **{by: value}), colors[value])
    if limits is not None:
        axes[0, 0].set_ylim(*limits)
    figure.legend(handles=_legend(by, by_values, colors, curves), loc="outside right center", title=AXES[by].words)
    figure.suptitle(_title(meta, f"{metric} against learning rate, one curve per {AXES[by].words}"))
    return figure


def _y_scale(curves: pd.DataFrame, optima: pd.DataFrame, n_values: int) -> tuple[bool, tuple[float, float] | None]:
    """Log or linear, and the shared y limits from every finite value drawn, with headroom for
    the '×' rows (one per curve) when anything diverged."""
    drawn = [_finite(curves[c]) for c in ("metric_mean", "metric_lo", "metric_hi") if c in curves.columns]
    if not optima.empty and "metric_opt" in optima.columns:
        drawn.append(_finite(optima["metric_opt"]))
    values = np.concatenate(drawn) if drawn else np.array([])
    log = _use_log_scale(values)
    any_diverged = bool(np.isposinf(curves["metric_mean"].to_numpy(dtype=float)).any()) if not curves.empty else False
    n_marker_rows = n_values if any_diverged else 0
    return log, _value_limits(values, log, headroom=0.08 + 0.045 * n_marker_rows)


def _draw_curve(ax: Axes, one: pd.DataFrame, index: int, color: Any) -> bool:
    """One curve: the seed mean, its seed band, and '×' in row `index` at the top where it diverged;
    False when there is no curve to draw."""
    if one.empty:
        return False
    one = one.sort_values("log2_lr")
    x = one["log2_lr"].to_numpy(dtype=float)
    mean = one["metric_mean"].to_numpy(dtype=float)
    finite = np.isfinite(mean)
    (line,) = ax.plot(x, np.where(finite, mean, np.nan), color=color, linewidth=1.5, marker=".", markersize=4,
                      zorder=3)
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
    return True


def _draw_optima(ax: Axes, optima: pd.DataFrame, color: Any) -> None:
    """Each optimum with its interval, and a dotted vertical line at the stability edge lr_div."""
    for optimum in optima.itertuples(index=False):
        x_opt, y_opt = float(optimum.log2_lr_opt), float(optimum.metric_opt)
        if math.isfinite(x_opt) and math.isfinite(y_opt):
            _draw_optimum(ax, x_opt, y_opt, _interval_error(x_opt, optimum.lr_lo, optimum.lr_hi), color,
                          bool(optimum.at_edge))
        lr_div = float(getattr(optimum, "lr_div", math.nan))
        if math.isfinite(lr_div) and lr_div > 0:
            edge = ax.axvline(math.log2(lr_div), color=color, linestyle=(0, (1, 2)), linewidth=1.1, alpha=0.8,
                              zorder=1)
            edge.set_gid("lr-div")


def _legend(by: str, by_values: Sequence[float], colors: Mapping[float, Any], curves: pd.DataFrame) -> list[Any]:
    """One entry per curve, then the marks: optimum, optimum at the edge, diverged, seed band."""
    seeds = sorted({int(v) for v in curves["n_seeds"].dropna()}) if "n_seeds" in curves.columns and not curves.empty else []
    handles: list[Any] = [Line2D([], [], color=colors[v], linewidth=1.5, marker=".", label=_axis_value_label(by, v))
                          for v in by_values]
    return handles + [
        Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="#777777",
               markeredgecolor="black", markeredgewidth=0.8, label="optimum ± interval"),
        Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="none",
               markeredgecolor="#777777", markeredgewidth=1.6, label="optimum at grid edge"),
        Line2D([], [], linestyle="none", marker="x", markersize=6, markeredgewidth=1.5, color="#777777",
               label="diverged (seed mean = ∞)"),
        Line2D([], [], color="#777777", linestyle=(0, (1, 2)), linewidth=1.1, label="lr_div: smallest lr that diverged"),
        Patch(facecolor="#777777", alpha=0.25, label=_band_label(seeds)),
    ]


def _band_label(seeds: Sequence[int]) -> str:
    if not seeds:
        return "seed range"
    count = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    return f"seed range (min–max of {count})"
