"""Steps to a target against batch size (Shallue et al. 2018), with perfect scaling and the fit
S(B) = S_min + E_min/B whose knee is the critical batch size (McCandlish et al. 2018)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter

from hpconj.plots.style import (MARKERS, Log2Locator, _combo_label, _combos, _new_figure, _number, _panel_label,
                                _panels, _parameterization_color, _select, _sorted_values, _styled, _title,
                                power_of_two)


@_styled
def steps_to_target(targets: pd.DataFrame, critical: pd.DataFrame, meta: Mapping[str, Any] | None) -> Figure:
    """log2 steps to the target against log2 B, one panel per parameterization, one marker per
    value of the other axes; grey dashed: perfect scaling (steps ∝ 1/B) through the smallest
    batch size; solid: the fitted S_min + E_min/B; dotted vertical: B_crit = E_min/S_min."""
    panels = _panels(targets)
    others = [c for c in ("momentum", "width", "depth", "init_scale", "init") if c in targets.columns]
    combos = _combos(targets, others)
    markers = {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(combos)}
    figure = _new_figure(3.8 * max(len(panels), 1) + 2.4, 4.2)
    axes = figure.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
    handles: list[Any] = []
    for ax, panel in zip(axes, panels or [("", "")]):
        ax.set_title(_panel_label(panel, panels) if panels else "no data")
        ax.set_xlabel("batch size B (log₂ axis)")
        ax.yaxis.set_major_locator(Log2Locator(nbins=8))
        ax.yaxis.set_major_formatter(FuncFormatter(power_of_two))
        color = _parameterization_color(panel[0], [p for p, _ in panels])
        rows = _select(targets, parameterization=panel[0], optimizer=panel[1]) if panels else targets
        for combo in combos:
            where = dict(zip(others, combo))
            series = _select(rows, **where).sort_values("batch_size")
            fit = _select(critical, parameterization=panel[0], optimizer=panel[1], **where) if not critical.empty \
                else critical
            _draw_series(ax, series, fit, color, markers[combo])
    axes[0].set_ylabel("steps to target (log₂ axis)")
    _batch_ticks(axes, targets)
    handles += [Line2D([], [], linestyle="none", marker=markers[c], markersize=6, color="#555555",
                       label=_combo_label(others, c) or "optimum over lr") for c in combos]
    handles += [Line2D([], [], color="#8c8c8c", linestyle=(0, (5, 3)), label="perfect scaling (steps ∝ 1/B)"),
                Line2D([], [], color="#555555", linewidth=1.6, label="fit S_min + E_min/B"),
                Line2D([], [], color="#555555", linestyle=(0, (1, 2)), label="B_crit = E_min/S_min")]
    figure.legend(handles=handles, loc="outside right center")
    target = float(targets["target"].iloc[0]) if not targets.empty else math.nan
    figure.suptitle(_title(meta, f"steps to reach {meta.get('metric', 'metric') if meta else 'metric'} ≤ "
                                 f"{target:.4g} at the best lr of each batch size"))
    return figure


def _draw_series(ax: Axes, series: pd.DataFrame, fit: pd.DataFrame, color: Any, marker: str) -> None:
    reached = series[np.isfinite(series["steps_to_target"])]
    if reached.empty:
        return
    b = reached["batch_size"].to_numpy(dtype=float)
    steps = reached["steps_to_target"].to_numpy(dtype=float)
    x, y = np.log2(b), np.log2(steps)
    low = np.log2(reached["examples_lo"].to_numpy(dtype=float) / b)
    high = np.log2(reached["examples_hi"].to_numpy(dtype=float) / b)
    error = np.where(np.isfinite(low) & np.isfinite(high), np.stack([y - low, high - y]), 0.0)
    bars = ax.errorbar(x, y, yerr=np.clip(error, 0, None), fmt="none", ecolor=color, elinewidth=1.0, capsize=2.5,
                       zorder=3)
    for artist in bars.lines[2]:
        artist.set_gid("target-interval")
    (points,) = ax.plot(x, y, linestyle="none", marker=marker, markersize=7, markerfacecolor=color,
                        markeredgecolor="black", markeredgewidth=0.8, zorder=4)
    points.set_gid("steps-to-target")
    (perfect,) = ax.plot(x[[0, -1]], y[0] - (x[[0, -1]] - x[0]), color="#8c8c8c", linestyle=(0, (5, 3)),
                         linewidth=0.9, zorder=1)
    perfect.set_gid("perfect-scaling")
    if fit is None or fit.empty:
        return
    s_min, e_min, b_crit = (float(fit[c].iloc[0]) for c in ("s_min", "e_min", "b_crit"))
    if not (math.isfinite(s_min) and math.isfinite(e_min)):
        return
    grid = np.linspace(x.min(), x.max(), 64)
    (curve,) = ax.plot(grid, np.log2(s_min + e_min / 2.0**grid), color=color, linewidth=1.6, zorder=2)
    curve.set_gid("critical-fit")
    # B_crit is drawn where it lies within an octave of the swept batch sizes (summary.md states it anyway)
    if math.isfinite(b_crit) and b_crit > 0 and x.min() - 1 <= math.log2(b_crit) <= x.max() + 1:
        knee = ax.axvline(math.log2(b_crit), color=color, linestyle=(0, (1, 2)), linewidth=1.1, zorder=1)
        knee.set_gid("b-crit")


def _batch_ticks(axes: Any, targets: pd.DataFrame) -> None:
    values = _sorted_values(targets, "batch_size")
    if not values:
        return
    for ax in axes:
        ax.xaxis.set_major_locator(FixedLocator([math.log2(v) for v in values]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _p: _number(2**x)))
