"""Figures draw what the analysis frames say: checked on the artists' data, not on pixels."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from hpconj import plots
from hpconj.analysis import SHIFT_COLUMNS

META = {"task": "mlp 64-64-64-10 on digits", "optimizer": "momentum", "budget": "4 epochs", "metric": "val_loss",
        "name": "synthetic"}
SLICE = ["parameterization", "optimizer", "batch_size", "momentum"]


def true_optimum(parameterization: str, batch_size: int, momentum: float) -> float:
    """log2 lr*: moves with B and 1 − β under standard, fixed under conjugate."""
    if parameterization == "standard":
        return -6.0 + math.log2(batch_size / 8) + math.log2(1 - momentum)
    return -6.0


def synthetic(parameterizations: tuple[str, ...] = ("standard", "conjugate"), batch_sizes: tuple[int, ...] = (8, 32, 128),
              momenta: tuple[float, ...] = (0.0, 0.9), log2_lrs: Any = None, seeds: int = 2,
              edge: tuple[str, int, float] | None = None, all_diverged: tuple[str, int, float] | None = None,
              ) -> dict[str, pd.DataFrame]:
    """Parabolas in log2 lr around a known optimum; diverged two octaves above it."""
    grid = np.arange(-12.0, 1.0, 1.0) if log2_lrs is None else np.asarray(log2_lrs, dtype=float)
    curve_rows, optimum_rows, training_rows = [], [], []
    for p in parameterizations:
        for b in batch_sizes:
            for m in momenta:
                x_opt = true_optimum(p, b, m)
                dead = all_diverged == (p, b, m)
                for x in grid:
                    diverged = dead or x > x_opt + 2
                    value = math.inf if diverged else 0.1 * 2 ** (0.25 * (x - x_opt) ** 2)
                    spread = 0.0 if seeds == 1 else 0.1 * value
                    lo, hi = (math.nan, math.nan) if diverged else (value - spread, value + spread)
                    curve_rows.append((p, "momentum", b, m, 2 ** x, x, value, lo, hi, seeds, seeds if diverged else 0))
                at_edge = edge == (p, b, m)
                if dead:
                    optimum_rows.append((p, "momentum", b, m, math.nan, math.nan, math.nan, math.nan, math.inf,
                                         False, seeds))
                else:
                    optimum_rows.append((p, "momentum", b, m, 2 ** x_opt, 2 ** (x_opt - 0.4), 2 ** (x_opt + 0.3),
                                         x_opt, 0.1, at_edge, seeds))
                for seed in range(seeds):
                    for step in range(0, 11):
                        training_rows.append((p, "momentum", b, m, 2 ** x_opt, seed, step, step * b,
                                              2.3 * math.exp(-0.3 * step) + 0.05 * (1 + seed)))
    curves = pd.DataFrame(curve_rows, columns=SLICE + ["lr", "log2_lr", "metric_mean", "metric_lo", "metric_hi",
                                                       "n_seeds", "n_diverged"])
    optima = pd.DataFrame(optimum_rows, columns=SLICE + ["lr_opt", "lr_lo", "lr_hi", "log2_lr_opt", "metric_opt",
                                                         "at_edge", "n_seeds"])
    shift_rows = []
    for p in parameterizations:
        for axis, x_of in (("batch_size", lambda b, m: math.log2(b)), ("momentum", lambda b, m: math.log2(1 - m))):
            one = optima[(optima.parameterization == p) & optima.log2_lr_opt.notna()]
            x = np.array([x_of(b, m) for b, m in zip(one.batch_size, one.momentum)])
            fixed = one.momentum == one.momentum.min() if axis == "batch_size" else one.batch_size == one.batch_size.min()
            x, y = x[fixed.to_numpy()], one.log2_lr_opt.to_numpy()[fixed.to_numpy()]
            if len(set(x)) > 1:
                slope, intercept = np.polyfit(x, y, 1)
            else:
                slope = intercept = math.nan
            shift_rows.append((p, "momentum", axis, slope, slope - 0.1, slope + 0.1, intercept, slope * 4, 0.5, 0.2,
                               len(x), 0))
    shifts = pd.DataFrame(shift_rows, columns=["parameterization", "optimizer", "axis", "slope", "slope_lo", "slope_hi",
                                               "intercept", "shift_octaves", "regret_max", "regret_mean", "n_slices",
                                               "n_edge"])
    training = pd.DataFrame(training_rows, columns=SLICE + ["lr", "seed", "step", "examples", "train_loss"])
    return {"curves": curves, "optima": optima, "shifts": shifts, "training": training}


def by_gid(figure: Figure, gid: str, ax: Any = None) -> list[Any]:
    axes = [ax] if ax is not None else figure.axes
    return [artist for a in axes for artist in a.get_children() if artist.get_gid() == gid]


def legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def data_axes(figure: Figure) -> list[Any]:
    """Panels, without colour bars."""
    return [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return synthetic(edge=("conjugate", 128, 0.9))


# ------------------------------------------------------------------------------------------ loss vs lr


def test_loss_vs_lr_panels_share_y_and_show_curves(frames):
    figure = plots.loss_vs_lr(frames["curves"], frames["optima"], META, by="batch_size")
    axes = data_axes(figure)
    assert len(axes) == 2 * 2  # two parameterizations side by side × two momentum rows
    first = axes[0]
    assert all(first.get_shared_y_axes().joined(first, ax) for ax in axes)
    assert [ax.get_title().split(",")[0] for ax in axes] == ["standard", "conjugate"] * 2
    assert "β = 0.9" in axes[2].get_title()
    assert first.get_yscale() == "log"  # the synthetic metric spans more than a decade
    assert "val_loss" in first.get_ylabel()
    assert "learning rate" in axes[-1].get_xlabel()
    suptitle = figure.get_suptitle()
    assert META["task"] in suptitle and META["optimizer"] in suptitle and META["budget"] in suptitle
    assert len(by_gid(figure, "curve", first)) == 3  # one per batch size
    texts = legend_texts(figure)
    assert {"B = 8", "B = 32", "B = 128"} <= set(texts)


def test_loss_vs_lr_optimum_markers_sit_at_the_optimum(frames):
    figure = plots.loss_vs_lr(frames["curves"], frames["optima"], META, by="batch_size")
    axes = data_axes(figure)
    optima = frames["optima"]
    for ax, (p, m) in zip(axes, [("standard", 0.0), ("conjugate", 0.0), ("standard", 0.9), ("conjugate", 0.9)]):
        expected = sorted(optima[(optima.parameterization == p) & (optima.momentum == m)].log2_lr_opt)
        markers = by_gid(figure, "optimum", ax)
        assert sorted(float(line.get_xdata()[0]) for line in markers) == pytest.approx(expected)
        assert all(float(line.get_ydata()[0]) == pytest.approx(0.1) for line in markers)
        # interval bars: horizontal, from log2 lr_lo to log2 lr_hi
        bars = by_gid(figure, "optimum-interval", ax)
        assert bars
        segments = [seg for bar in bars if hasattr(bar, "get_segments") for seg in bar.get_segments()]
        assert sorted(round(float(s[0][0] - x), 6) for s, x in zip(
            sorted(segments, key=lambda s: s[0][0]), expected)) == [-0.4] * 3


def test_loss_vs_lr_edge_optima_are_hollow_and_others_filled(frames):
    figure = plots.loss_vs_lr(frames["curves"], frames["optima"], META)
    markers = by_gid(figure, "optimum")
    hollow = [line for line in markers if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and float(hollow[0].get_xdata()[0]) == pytest.approx(-6.0)
    assert len(markers) - len(hollow) == len(frames["optima"]) - 1


def test_loss_vs_lr_diverged_points_are_crosses_at_the_top(frames):
    figure = plots.loss_vs_lr(frames["curves"], frames["optima"], META)
    ax = data_axes(figure)[0]  # standard, β = 0
    crosses = by_gid(figure, "diverged", ax)
    assert crosses and all(line.get_marker() == "x" for line in crosses)
    curves = frames["curves"]
    expected = curves[(curves.parameterization == "standard") & (curves.momentum == 0.0)
                      & np.isinf(curves.metric_mean)]
    drawn = sorted(float(x) for line in crosses for x in line.get_xdata())
    assert drawn == sorted(expected.log2_lr)
    for line in crosses:  # in axes coordinates vertically: near the top of the panel
        assert all(0.8 < y <= 1.0 for y in line.get_ydata())
        assert line.get_transform() == ax.get_xaxis_transform()
    # curve lines leave diverged points out (NaN gap), bands span finite points only
    for line in by_gid(figure, "curve", ax):
        assert np.isfinite(np.asarray(line.get_ydata(), dtype=float)).sum() > 0
        assert not np.isinf(np.asarray(line.get_ydata(), dtype=float)).any()
    assert by_gid(figure, "band", ax)


def test_loss_vs_lr_by_momentum_has_a_row_per_batch_size(frames):
    figure = plots.loss_vs_lr(frames["curves"], frames["optima"], META, by="momentum")
    axes = data_axes(figure)
    assert len(axes) == 2 * 3
    assert "B = 128" in axes[-1].get_title()
    assert {"β = 0", "β = 0.9"} <= set(legend_texts(figure))
    assert len(by_gid(figure, "curve", axes[0])) == 2


def test_lr_ticks_are_powers_of_two():
    assert plots.power_of_two(-6) == "$2^{\N{MINUS SIGN}6}$"
    assert plots.power_of_two(-6.5) == "$2^{\N{MINUS SIGN}6.5}$"
    assert plots.power_of_two(0) == "$2^{0}$"
    figure = plots.loss_vs_lr(*[synthetic()[k] for k in ("curves", "optima")], META)
    axis = data_axes(figure)[-1].xaxis
    ticks = axis.get_majorticklocs()
    assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)  # whole octaves over a 12-octave grid
    labels = [axis.get_major_formatter()(t) for t in ticks]
    assert all(label.startswith("$2^{") for label in labels)
    # less than two octaves in view: half octaves
    assert list(plots.Log2Locator().tick_values(-6.5, -5.5)) == [-6.5, -6.0, -5.5]


# --------------------------------------------------------------------------------------- optimum shift


def test_optimum_shift_points_fits_and_guides(frames):
    figure = plots.optimum_shift(frames["optima"], frames["shifts"], META, axis="batch_size")
    assert len(data_axes(figure)) == 1
    ax = figure.axes[0]
    fits = by_gid(figure, "fit")
    assert len(fits) == 2
    shifts = frames["shifts"].set_index(["parameterization", "axis"])
    for line in fits:
        p = line.get_label().split(":")[0]
        slope, intercept = shifts.loc[(p, "batch_size"), ["slope", "intercept"]]
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert y == pytest.approx(intercept + slope * x)
        assert x.min() == pytest.approx(3.0) and x.max() == pytest.approx(7.0)  # log2 8 .. log2 128
    texts = legend_texts(figure)
    assert any(t.startswith("standard: slope +1.00 [+0.90, +1.10]") for t in texts), texts
    assert any(t.startswith("conjugate: slope +0.00") or t.startswith("conjugate: slope \N{MINUS SIGN}0.00")
               for t in texts), texts
    guides = by_gid(figure, "guide")
    assert [g.get_label() for g in guides] == ["guide: slope 1", "guide: slope ½", "guide: slope 0"]
    assert {t for t in texts if t.startswith("guide")} == {g.get_label() for g in guides}
    slopes = [np.diff(g.get_ydata())[0] / np.diff(g.get_xdata())[0] for g in guides]
    assert slopes == pytest.approx([1.0, 0.5, 0.0])
    # all three pass through the first point: standard at B = 8, β = 0
    x0, y0 = 3.0, true_optimum("standard", 8, 0.0)
    for g in guides:
        x, y = np.asarray(g.get_xdata()), np.asarray(g.get_ydata())
        assert np.interp(x0, x, y) == pytest.approx(y0)
    markers = by_gid(figure, "optimum")
    assert len(markers) == len(frames["optima"])
    assert sum(line.get_markerfacecolor() == "none" for line in markers) == 1
    optima = frames["optima"]
    assert sorted(float(line.get_ydata()[0]) for line in markers) == pytest.approx(sorted(optima.log2_lr_opt))
    assert "batch size" in ax.get_xlabel() and "log₂" in ax.get_xlabel()
    assert "learning rate" in ax.get_ylabel() and "log₂" in ax.get_ylabel()
    assert META["task"] in figure.get_suptitle() and META["optimizer"] in figure.get_suptitle()


def test_optimum_shift_momentum_axis_is_log2_one_minus_beta(frames):
    figure = plots.optimum_shift(frames["optima"], frames["shifts"], META, axis="momentum")
    ax = figure.axes[0]
    xs = {round(float(line.get_xdata()[0]), 6) for line in by_gid(figure, "optimum")}
    assert xs == {0.0, round(math.log2(0.1), 6)}
    assert "log₂(1 − β)" in ax.get_xlabel()
    assert any(t.startswith("standard: slope +1.00") for t in legend_texts(figure))
    figure.canvas.draw()
    assert {t.get_text() for t in ax.get_xticklabels()} >= {"0", "0.9"}


def shifts_per_fixed_value(optima: pd.DataFrame) -> pd.DataFrame:
    """Shift rows as hpconj.analysis writes them: one per fixed value of the other axis ("momentum=0.9")."""
    rows = []
    for axis, other in (("batch_size", "momentum"), ("momentum", "batch_size")):
        for (p, fixed), group in optima.groupby(["parameterization", other]):
            x = np.log2(group[axis]) if axis == "batch_size" else np.log2(1 - group[axis])
            slope, intercept = np.polyfit(x, group.log2_lr_opt, 1)
            at = {a: (fixed if a == other else math.nan) for a in ("batch_size", "momentum")}
            rows.append((p, "momentum", axis, f"{other}={fixed:g}", at["batch_size"], at["momentum"], slope,
                         slope - 0.2, slope + 0.2, intercept, 0.0, -0.1, 0.1, 0.0, 0.0, len(group), 0))
    return pd.DataFrame(rows, columns=SHIFT_COLUMNS)


def test_optimum_shift_draws_one_fit_per_fixed_value_of_the_other_axis(frames):
    shifts = shifts_per_fixed_value(frames["optima"])
    figure = plots.optimum_shift(frames["optima"], shifts, META, axis="batch_size")
    fits = by_gid(figure, "fit")
    assert len(fits) == 2 * 2  # parameterizations × momentum values
    texts = legend_texts(figure)
    assert any(t.startswith("standard, β = 0.9: slope +1.00 [+0.80, +1.20]") for t in texts), texts
    line = next(f for f in fits if f.get_label().startswith("standard, β = 0.9"))
    assert list(line.get_xdata()) == pytest.approx([3.0, 7.0])
    assert list(line.get_ydata()) == pytest.approx([true_optimum("standard", 8, 0.9), true_optimum("standard", 128, 0.9)])
    figure = plots.optimum_shift(frames["optima"], shifts, META, axis="momentum")
    assert len(by_gid(figure, "fit")) == 2 * 3  # parameterizations × batch sizes
    assert any(t.startswith("conjugate, B = 32: slope") for t in legend_texts(figure))


# ------------------------------------------------------------------------------------------- heatmap


def test_metric_heatmap_shared_scale_path_and_diverged_cells(frames):
    figure = plots.metric_heatmap(frames["curves"], frames["optima"], META)
    axes = data_axes(figure)
    assert len(axes) == 2 * 2
    meshes = by_gid(figure, "heatmap")
    assert len(meshes) == 4 and len({id(m.norm) for m in meshes}) == 1  # one colour scale for all panels
    assert by_gid(figure, "heatmap-diverged")
    colorbars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and "val_loss" in colorbars[0].get_ylabel()
    assert "diverged (seed mean = ∞)" in legend_texts(figure)
    path = by_gid(figure, "optimum-path", axes[0])[0]  # standard, β = 0
    assert list(path.get_xdata()) == pytest.approx([-6.0, -4.0, -2.0])
    assert list(path.get_ydata()) == pytest.approx([3.0, 5.0, 7.0])
    # masked cells: finite metric where finite, the rest masked
    curves = frames["curves"]
    one = curves[(curves.parameterization == "standard") & (curves.momentum == 0.0)]
    assert meshes[0].get_array().count() == int(np.isfinite(one.metric_mean).sum())


# ---------------------------------------------------------------------------------- training curves


def test_training_curves_are_seed_means(frames):
    figure = plots.training_curves(frames["training"], META)
    axes = data_axes(figure)
    assert len(axes) == 2  # one per momentum value
    assert axes[0].get_yscale() == "log" and axes[0].get_xlabel() == "examples seen"
    lines = by_gid(figure, "training", axes[0])
    assert len(lines) == 2 * 3
    assert {line.get_linestyle() for line in lines} == {"-", "--"}
    first = lines[0]
    assert first.get_ydata()[0] == pytest.approx(2.3 + 0.05 * 1.5)  # mean over seeds 0 and 1
    assert {"standard", "conjugate", "B = 8"} <= set(legend_texts(figure))


# -------------------------------------------------------------------------------------------- writing


def test_write_figures_writes_png_and_svg(tmp_path: Path):
    # small frames: rendering costs ~0.5 s a file
    small = synthetic(parameterizations=("standard",), batch_sizes=(8, 32), log2_lrs=np.arange(-10.0, 1.0, 2.0))
    paths = plots.write_figures(small, META, tmp_path)
    names = ["loss_vs_lr_batch_size", "loss_vs_lr_momentum", "optimum_shift_batch_size", "optimum_shift_momentum",
             "metric_heatmap", "training_curves"]
    assert paths == [tmp_path / "plots" / f"{n}{s}" for n in names for s in (".png", ".svg")]
    for path in paths:
        assert path.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths[1].read_bytes()[:2000]


def test_write_figures_skips_what_has_no_data(tmp_path: Path):
    one_each = synthetic(parameterizations=("standard",), batch_sizes=(8,), momenta=(0.9,))
    one_each["training"] = one_each["training"].iloc[0:0]
    paths = plots.write_figures(one_each, META, tmp_path)
    assert [p.name for p in paths] == ["loss_vs_lr_batch_size.png", "loss_vs_lr_batch_size.svg",
                                       "metric_heatmap.png", "metric_heatmap.svg"]
    assert plots.write_figures({}, META, tmp_path / "empty") == []


# ----------------------------------------------------------------------------------------- edge cases

EDGE_CASES = {  # grouped so that each case exercises several edges at once (drawing costs ~0.5 s a figure)
    "a slice all diverged, one seed, momentum 0 and 0.99": dict(all_diverged=("standard", 32, 0.0), seeds=1,
                                                               momenta=(0.0, 0.99), batch_sizes=(8, 32),
                                                               log2_lrs=np.arange(-12.0, 1.0, 2.0)),
    "a single lr, one parameterization": dict(log2_lrs=[-6.0], parameterizations=("conjugate",)),
    "one of everything": dict(parameterizations=("standard",), batch_sizes=(8,), momenta=(0.0,), seeds=1,
                              log2_lrs=[-3.0]),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_draw_without_error(case: str):
    data = synthetic(**EDGE_CASES[case])
    figures = [
        plots.loss_vs_lr(data["curves"], data["optima"], META, by="batch_size"),
        plots.loss_vs_lr(data["curves"], data["optima"], META, by="momentum"),
        plots.optimum_shift(data["optima"], data["shifts"], META, axis="batch_size"),
        plots.optimum_shift(data["optima"], data["shifts"], META, axis="momentum"),
        plots.metric_heatmap(data["curves"], data["optima"], META),
        plots.training_curves(data["training"], META),
    ]
    for figure in figures:
        figure.draw_without_rendering()  # limits, ticks, layout and every artist's draw run; no pixels


def test_all_diverged_slice_has_crosses_and_no_optimum():
    data = synthetic(all_diverged=("standard", 32, 0.9))
    figure = plots.loss_vs_lr(data["curves"], data["optima"], META)
    ax = data_axes(figure)[2]  # standard, β = 0.9
    assert len(by_gid(figure, "optimum", ax)) == 2  # B = 8 and 128 only
    crosses = [x for line in by_gid(figure, "diverged", ax) for x in line.get_xdata()]
    assert len(crosses) >= 13  # every lr of B = 32


def test_no_pyplot_state_is_left_behind(frames):
    for module in Path(plots.__file__).parent.glob("*.py"):  # the package: one module per figure
        source = module.read_text()
        assert "import matplotlib.pyplot" not in source and "from matplotlib import pyplot" not in source, module
    figure = plots.training_curves(frames["training"], META)
    assert figure.canvas.manager is None  # not registered with pyplot: nothing to close, nothing leaks


def test_empty_frames_give_empty_figures_not_errors():
    empty = synthetic()
    empty = {k: v.iloc[0:0] for k, v in empty.items()}
    for figure in (plots.loss_vs_lr(empty["curves"], empty["optima"], META),
                   plots.optimum_shift(empty["optima"], empty["shifts"], META),
                   plots.metric_heatmap(empty["curves"], empty["optima"], META),
                   plots.training_curves(empty["training"], META)):
        figure.draw_without_rendering()


def test_figures_drawn_in_parallel_are_the_bytes_drawn_one_by_one(tmp_path, monkeypatch):
    """write_figures draws in forked processes, one per core: the files must not depend on it."""
    from hpconj.report import analyse, load_results

    folder = Path(__file__).resolve().parents[1] / "results" / "reference" / "quickstart_search"
    frames = analyse(load_results(folder))
    written = {}
    for processes in (1, 3):
        monkeypatch.setattr(plots, "renderers", lambda n=processes: n)
        paths = plots.write_figures(frames, frames.meta, tmp_path / str(processes))
        written[processes] = {p.name: p.read_bytes() for p in paths}
    assert len(written[1]) >= 10 and written[1] == written[3]
