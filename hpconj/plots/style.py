"""The look every figure shares: rcParams, colours, markers, axes in powers of two, and small
drawing helpers (hpconj.plots)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import wraps
from typing import Any, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, Locator, LogLocator, MaxNLocator

from hpconj.axes import AXES


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

F = TypeVar("F", bound=Callable[..., Figure])


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


def _axis_value_label(axis: str, value: Any) -> str:
    """'B = 16', 'β = 0.9', 'init = orthogonal'."""
    symbol = AXES[axis].symbol if axis in AXES else axis
    return f"{symbol} = {value if isinstance(value, str) else _number(value)}"


def _combos(frame: pd.DataFrame | None, axes: Sequence[str]) -> list[tuple]:
    """The value combinations of `axes` in `frame`, sorted (one empty combination when there are no axes)."""
    present = [a for a in axes if frame is not None and not frame.empty and a in frame.columns]
    if not present:
        return [()]
    rows = frame[present].drop_duplicates().itertuples(index=False, name=None)
    return sorted({tuple(_plain(v) for v in row) for row in rows})


def _plain(value: Any) -> Any:
    """A table value as a plain float, or as text for a categorical axis."""
    return value if isinstance(value, str) else float(value)


def _combo_label(axes: Sequence[str], combo: tuple) -> str:
    """'β = 0.9,  width = 64' (empty for the empty combination)."""
    return ",  ".join(_axis_value_label(a, v) for a, v in zip(axes, combo))


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


def _sorted_values(frame: pd.DataFrame, column: str) -> list[Any]:
    if frame is None or frame.empty or column not in frame.columns:
        return []
    return sorted({_plain(v) for v in frame[column].dropna().to_numpy()})


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
