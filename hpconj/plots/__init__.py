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

import functools
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

# Headless by default (these figures never need a GUI: they are drawn with FigureCanvasAgg), but never
# override a backend the user chose (MPLBACKEND) or a session already running pyplot (a notebook).
if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import pandas as pd
from matplotlib.figure import Figure

from hpconj.axes import AXES, axes_of
from hpconj.plots.heatmap import metric_heatmap
from hpconj.plots.loss_vs_lr import loss_vs_lr
from hpconj.plots.optimum_shift import optimum_shift
from hpconj.plots.style import STYLE, Log2Locator, _frame, _sorted_values, power_of_two
from hpconj.plots.time_to_target import steps_to_target
from hpconj.plots.training import training_curves

__all__ = [
    "loss_vs_lr",
    "optimum_shift",
    "metric_heatmap",
    "training_curves",
    "steps_to_target",
    "write_figures",
    "power_of_two",
    "Log2Locator",
]


# -------------------------------------------------------------------------------------------- writing


FORMATS = ("png", "svg")  # what a figure is saved as: PNG at 150 dpi, SVG
SAVE_OPTIONS: dict[str, dict[str, Any]] = {"png": {"dpi": 150, "metadata": {"Software": None}},
                                           "svg": {"metadata": {"Date": None, "Creator": None}}}


def write_figures(frames: Mapping[str, pd.DataFrame] | Any, meta: Mapping[str, Any] | None, folder: Path,
                  formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Save every figure that has data in `formats` (PNG at 150 dpi, SVG) under `folder/"plots"`.

    `frames` maps (or has attributes) curves, optima, shifts, training and, optionally, noise
    (drawn on optimum_shift_batch_size). Written, when their frame is not empty:
    loss_vs_lr_<axis> for batch_size and for every other axis with more than one value,
    optimum_shift_<axis> for every numeric axis with more than one value (hpconj.axes order),
    metric_heatmap, training_curves; with checkpoints, optimum_over_time (lr* against log2 T) and
    steps_to_target (hpconj.training_time). Returns the paths written, in that order.
    """
    curves, optima = _frame(frames, "curves"), _frame(frames, "optima")
    shifts, training = _frame(frames, "shifts"), _frame(frames, "training")
    noise = _frame(frames, "noise")
    jobs: list[tuple[str, Callable[[], Figure]]] = []
    for axis in axes_of(curves) if not curves.empty else []:
        if axis == "batch_size" or len(_sorted_values(curves, axis)) > 1:
            jobs.append((f"loss_vs_lr_{axis}", functools.partial(loss_vs_lr, curves, optima, meta, by=axis)))
    for axis in axes_of(optima) if not optima.empty else []:
        if not AXES[axis].categorical and len(_sorted_values(optima, axis)) > 1:
            extra = {"noise": noise} if axis == "batch_size" else {}
            jobs.append((f"optimum_shift_{axis}",
                         functools.partial(optimum_shift, optima, shifts, meta, axis=axis, **extra)))
    if not curves.empty:
        jobs.append(("metric_heatmap", lambda: metric_heatmap(curves, optima, meta)))
    if not training.empty:
        jobs.append(("training_curves", lambda: training_curves(training, meta)))
    optima_time, shifts_time = _frame(frames, "optima_time"), _frame(frames, "shifts_time")
    if not optima_time.empty and len(_sorted_values(optima_time, "checkpoint")) > 1:
        jobs.append(("optimum_over_time", lambda: optimum_shift(optima_time, shifts_time, meta, axis="checkpoint")))
    targets, critical = _frame(frames, "targets"), _frame(frames, "critical")
    if not targets.empty:
        jobs.append(("steps_to_target", lambda: steps_to_target(targets, critical, meta)))

    out = Path(folder) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    return [path for paths in _render_all(jobs, out, formats) for path in paths]


_JOBS: list[tuple[str, Callable[[], Figure]]] = []  # what forked renderers draw (closures do not pickle)


def _render_all(jobs: list[tuple[str, Callable[[], Figure]]], out: Path,
                formats: tuple[str, ...] = FORMATS) -> list[list[Path]]:
    """Every job's files, in job order: drawn in forked processes, one per core, when there are
    several figures and cores (a figure's drawing is single-threaded Python), else here."""
    workers = min(len(jobs), renderers())
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_render(name, make, out, formats) for name, make in jobs]
    _JOBS[:] = jobs
    try:
        # fork: the figures' data are inherited, not pickled; nothing here has started threads
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_render_job, range(len(jobs)), [out] * len(jobs), [formats] * len(jobs)))
    finally:
        _JOBS.clear()


def renderers() -> int:
    """Processes that draw figures at once: the usable cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _render_job(index: int, out: Path, formats: tuple[str, ...]) -> list[Path]:
    name, make = _JOBS[index]
    return _render(name, make, out, formats)


def _render(name: str, make: Callable[[], Figure], out: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Draw one figure and save it in `formats`: PNG (150 dpi), SVG."""
    figure = make()
    written = []
    # a fixed hash salt makes the SVG's element ids, and so its bytes, the same on every run
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": "hpconj"}):
        for suffix, options in ((f".{f}", SAVE_OPTIONS[f]) for f in formats):
            path = out / f"{name}{suffix}"
            figure.savefig(path, facecolor="white", **options)
            written.append(path)
            # The layout (in inches, so the same for every format) is known now: keep it instead of
            # solving it again for the next format (constrained layout costs a full draw).
            figure.set_layout_engine("none")
    return written
