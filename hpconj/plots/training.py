"""Training curves at each slice's best lr."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from hpconj.axes import axes_of
from hpconj.plots.style import (_axis_value_label, _combo_label, _combos, _log_y, _new_figure, _panel_label, _panels, _select,
                                _sequential_colors, _sorted_values, _styled, _title)


@_styled
def training_curves(training: pd.DataFrame, meta: Mapping[str, Any] | None) -> Figure:
    """Seed-mean train loss against examples seen (log y), one line per slice at its best lr:
    colour by batch size, line style by parameterization, one panel per momentum value (with
    more axes, per combination of their values)."""
    others = [a for a in axes_of(training) if a != "batch_size"] if not training.empty else ["momentum"]
    combos = _combos(training, others)
    batch_sizes = _sorted_values(training, "batch_size")
    colors = _sequential_colors(batch_sizes) if batch_sizes else {}
    panels = _panels(training)
    # The first parameterization wide and pale, the others thin on top: identical trainings (conjugate
    # equals standard at B = B_ref, β = 0) then show as a dashed line over a pale one, not as one line.
    looks = [("-", 2.6, 0.5), ("--", 1.3, 1.0), (":", 1.6, 1.0), ("-.", 1.3, 1.0)]
    styles = {panel: looks[i % len(looks)] for i, panel in enumerate(panels)}
    figure = _new_figure(3.6 * len(combos) + 1.7, 3.8)
    axes = figure.subplots(1, len(combos), sharey=True, squeeze=False)[0]

    keys = [c for c in ["parameterization", "optimizer", *axes_of(training), "lr", "examples"] if c in training.columns]
    if not training.empty:
        means = training.groupby(keys, sort=True, dropna=False)["train_loss"].mean().reset_index()
        losses = means["train_loss"].to_numpy(dtype=float)
    else:
        means, losses = training, np.array([])
    positive = losses[np.isfinite(losses)]
    log = positive.size > 0 and bool(np.all(positive > 0))
    for ax, combo in zip(axes, combos):
        ax.set_title(_combo_label(others, combo) if combo else "training")
        ax.set_xlabel("examples seen")
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        if log:
            _log_y(ax)
        if means.empty:
            continue
        panel_means = _select(means, **dict(zip(others, combo)))
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
