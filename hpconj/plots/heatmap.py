"""The metric over lr × batch size, with the path of the optimum."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps, patheffects
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter

from hpconj.axes import axes_of
from hpconj.plots.style import (DIVERGED_COLOR, _combo_label, _combos, _finite, _log2, _lr_axis, _metric_name, _new_figure,
                                _number, _panel_label, _panels, _select, _sorted_values, _styled, _title,
                                _use_log_scale)


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (half a gap beyond the ends; width 1 for a single centre)."""
    if centers.size == 1:
        return np.array([centers[0] - 0.5, centers[0] + 0.5])
    middle = (centers[:-1] + centers[1:]) / 2
    return np.concatenate([[centers[0] - (middle[0] - centers[0])], middle, [centers[-1] + (centers[-1] - middle[-1])]])


@_styled
def metric_heatmap(curves: pd.DataFrame, optima: pd.DataFrame, meta: Mapping[str, Any] | None) -> Figure:
    """Seed-mean metric over lr (x) × batch size (y): one panel per parameterization (columns) and
    momentum value (rows; with more axes, per combination of their values), one shared colour
    scale, diverged cells grey, and the optimum path."""
    metric = _metric_name(meta)
    optima = optima if optima is not None else pd.DataFrame()
    panels = _panels(curves)
    others = [a for a in axes_of(curves) if a != "batch_size"] if not curves.empty else ["momentum"]
    combos = _combos(curves, others)
    n_rows, n_cols = len(combos), max(len(panels), 1)
    figure = _new_figure(3.5 * n_cols + 1.6, 0.9 + 2.6 * n_rows)
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False, sharey=True))
    norm = _color_scale(curves)
    batch_sizes = _sorted_values(curves, "batch_size")
    y_centers = _log2(batch_sizes)
    mappable, any_diverged = None, False
    for row, combo in enumerate(combos):
        for col, panel in enumerate(panels or [("", "")]):
            ax = axes[row, col]
            ax.grid(False)
            title = _panel_label(panel, panels) if panels else "no data"
            if combo and panels:
                title += f",  {_combo_label(others, combo)}"
            ax.set_title(title)
            _lr_axis(ax, label=row == n_rows - 1)
            if col == 0:
                ax.set_ylabel("batch size B (log₂ axis)")
            if not panels:
                continue
            selection: dict[str, Any] = {"parameterization": panel[0], "optimizer": panel[1], **dict(zip(others, combo))}
            cells = _select(curves, **selection)
            if cells.empty:
                continue
            mesh, diverged = _draw_cells(ax, cells, batch_sizes, y_centers, norm)
            mappable, any_diverged = mesh, any_diverged or diverged
            _draw_path(ax, _select(optima, **selection) if not optima.empty else optima)
    for ax in axes.ravel():
        ax.yaxis.set_major_locator(FixedLocator(list(y_centers)))
        ax.yaxis.set_major_formatter(FuncFormatter(
            lambda y, _p: _number(2 ** y) if math.isfinite(y) and abs(2 ** y - round(2 ** y)) < 1e-6 else ""))
    if mappable is None:
        mappable = ScalarMappable(norm=norm, cmap=CMAP)
    colorbar = figure.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.9, aspect=30, pad=0.02)
    colorbar.set_label(f"{metric} (seed mean)")
    handles = _legend(any_diverged)
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    figure.suptitle(_title(meta, f"{metric} over learning rate × batch size"))
    return figure


CMAP = colormaps["viridis"]


def _color_scale(curves: pd.DataFrame) -> Normalize:
    """One colour scale for every panel: log when the finite values span enough, else linear."""
    values = _finite(curves["metric_mean"]) if not curves.empty else np.array([])
    if _use_log_scale(values):
        return LogNorm(vmin=float(values.min()), vmax=float(values.max()))
    if values.size:
        low, high = float(values.min()), float(values.max())
        return Normalize(vmin=low, vmax=high if high > low else low + 1.0)
    return Normalize(vmin=0.0, vmax=1.0)


def _draw_cells(ax: Axes, cells: pd.DataFrame, batch_sizes: list[float], y_centers: np.ndarray,
                norm: Normalize) -> tuple[Any, bool]:
    """The panel's cells, lr × batch size, diverged ones grey; the mesh drawn and whether any diverged."""
    x_centers = np.unique(np.round(cells["log2_lr"].to_numpy(dtype=float), 9))
    grid = np.full((len(batch_sizes), len(x_centers)), np.nan)
    for b_index, batch_size in enumerate(batch_sizes):
        one = _select(cells, batch_size=batch_size)
        for x, value in zip(np.round(one["log2_lr"].to_numpy(dtype=float), 9),
                            one["metric_mean"].to_numpy(dtype=float)):
            grid[b_index, int(np.searchsorted(x_centers, x))] = value
    x_edges, y_edges = _edges(x_centers), _edges(y_centers)
    diverged = np.isposinf(grid)
    if diverged.any():
        gray = ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~diverged, np.ones_like(grid)),
                             cmap=ListedColormap([DIVERGED_COLOR]), vmin=0, vmax=1, edgecolors="white", linewidth=0.4)
        gray.set_gid("heatmap-diverged")
    finite = np.isfinite(grid)
    if isinstance(norm, LogNorm):
        finite &= grid > 0
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~finite, grid), cmap=CMAP, norm=norm,
                         edgecolors="white", linewidth=0.4)
    mesh.set_gid("heatmap")
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    return mesh, bool(diverged.any())


def _legend(any_diverged: bool) -> list[Any]:
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
    return handles


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
