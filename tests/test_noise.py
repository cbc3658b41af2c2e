"""The gradient noise scale B_simple: exact on the noisy quadratic, one answer from both gradient
paths, measured by `hpconj sweep`, reported by `hpconj plot`, and optional for old folders."""
from __future__ import annotations

import json
import logging
import math
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from conftest import TINY, merged, run_cli
from hpconj import plots
from hpconj.analysis import mean_noise_scale, noise_summary
from hpconj.config import QuadraticTask, config_from_dict, load_config
from hpconj.noise import exact_noise_scale, gradient_noise_scale, measure_noise_scale, noise_batch, noise_examples
from hpconj.report import analyse, load_results, write_tables
from hpconj.folder import sha256_file
from hpconj.store import NOISE_COLUMNS, Store
from hpconj.sweep import measure_noise
from hpconj.tasks import build_task
from hpconj.tasks.quadratic import curvatures

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------ the noisy quadratic


def relative_standard_error(spec: QuadraticTask, n: int) -> float:
    """Sampling standard deviation of B̂_simple / B_simple for n Gaussian per-example gradients.

    Coordinate i has gradient mean Gᵢ = hᵢθ₀ and variance vᵢ = hᵢσ². The sample mean Ḡᵢ ~
    N(Gᵢ, vᵢ/n) is independent of the sample variance sᵢ² ((n−1)sᵢ²/vᵢ ~ χ²ₙ₋₁), so with
    T = Σsᵢ² and N = Σ Ḡᵢ² − T/n:
        Var T = Σ 2vᵢ²/(n−1),   Var N = Σ (4Gᵢ²vᵢ/n + 2vᵢ²/n²) + Var T/n²,   Cov(T, N) = −Var T/n,
    and to first order (the delta method) Var(T/N)/(T/N)² = Var T/T² + Var N/N² − 2 Cov(T, N)/(T N).
    """
    h = curvatures(spec)
    g, v = h * spec.theta0, h * spec.sigma**2
    t, signal = v.sum(), (g * g).sum()
    var_t = np.sum(2 * v * v) / (n - 1)
    var_n = np.sum(4 * g * g * v / n + 2 * v * v / n**2) + var_t / n**2
    cov = -var_t / n
    return float(math.sqrt(var_t / t**2 + var_n / signal**2 - 2 * cov / (t * signal)))


QUADRATICS = {
    # B_simple ≈ 1.9: signal-dominated, curvatures over three decades
    "d=100, h∈[1e-3, 1], σ=1, θ₀=1": (dict(dim=100, h_min=1e-3, h_max=1.0, sigma=1.0, theta0=1.0), 1 << 15),
    # B_simple ≈ 46: noise-dominated, where |G|² is the hard part to estimate
    "d=10, h∈[0.1, 10], σ=2, θ₀=0.1": (dict(dim=10, h_min=0.1, h_max=10.0, sigma=2.0, theta0=0.1), 1 << 18),
}


@pytest.mark.parametrize("case", list(QUADRATICS))
def test_quadratic_estimate_matches_the_exact_noise_scale(case: str):
    fields, n = QUADRATICS[case]
    spec = QuadraticTask(model="quadratic", **fields)
    exact = exact_noise_scale(spec)
    h = curvatures(spec)
    assert exact == pytest.approx(spec.sigma**2 * h.sum() / (spec.theta0**2 * (h * h).sum()))
    estimate = measure_noise_scale(build_task(spec), seed=3, examples=n, device=CPU)
    assert estimate.examples == n and estimate.seed == 3
    # the estimate's own parts are unbiased: tr Σ = σ²Σh and |G|² = θ₀²Σh², within their errors
    se = relative_standard_error(spec, n)
    assert se < 0.02  # n is large enough for the comparison to mean something
    # Tolerance: 4 standard errors of the ratio (a seeded draw; a miss has probability ~6e-5),
    # plus 1e-3 for the first-order (delta method) bias of a ratio and float32 examples.
    assert estimate.b_simple == pytest.approx(exact, rel=4 * se + 1e-3)
    assert estimate.trace_sigma == pytest.approx(spec.sigma**2 * h.sum(), rel=4 * se + 1e-3)
    assert estimate.grad_norm_sq == pytest.approx(spec.theta0**2 * (h * h).sum(), rel=4 * se + 1e-3)
    assert estimate.b_simple == pytest.approx(estimate.trace_sigma / estimate.grad_norm_sq)


def test_quadratic_examples_are_not_the_training_stream():
    task = build_task(QuadraticTask(model="quadratic", dim=5))
    measured = noise_batch(task, 0, 16, CPU)
    trained = next(iter(task.batch_stream(0, 16, 1, CPU)))
    assert measured.shape == trained.shape and not torch.equal(measured, trained)
    assert torch.equal(measured, noise_batch(task, 0, 16, CPU))  # the same examples on every run


# ------------------------------------------------------------------------------ two gradient paths


def tiny_config(**changes: object):
    return config_from_dict(merged(TINY, changes))


def test_vmap_and_loop_agree_on_an_mlp():
    task = build_task(tiny_config(task={"depth": 2, "activation": "tanh"}).task)
    assert noise_examples(task, 10_000) == task.data.n_train  # capped at the training set
    by_vmap = measure_noise_scale(task, 1, 96, CPU, method="vmap")
    by_loop = measure_noise_scale(task, 1, 96, CPU, method="loop")
    assert by_vmap.examples == by_loop.examples == 96
    for name in ("trace_sigma", "grad_norm_sq", "b_simple"):
        # float32 per-example gradients from batched vs single matmuls: rounding only
        assert getattr(by_vmap, name) == pytest.approx(getattr(by_loop, name), rel=1e-5), name
    assert 0 < by_vmap.b_simple < math.inf
    # chunks that bound memory change nothing but rounding either
    model, batch = task.init_model(1), noise_batch(task, 1, 96, CPU)
    chunked = gradient_noise_scale(task, model, batch, method="vmap", max_floats=1000)
    assert chunked == pytest.approx((by_vmap.trace_sigma, by_vmap.grad_norm_sq, by_vmap.b_simple), rel=1e-6)


class Branchy(nn.Module):
    """Data-dependent Python control flow: vmap refuses it, a loop does not."""

    def __init__(self, i: int, o: int):
        super().__init__()
        self.layer = nn.Linear(i, o)
        self.unused = nn.Linear(1, 1)  # gets a zero gradient on both paths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) > 1e9:
            return self.layer(x) * 0
        return self.layer(x)


def test_a_model_vmap_cannot_take_falls_back_to_the_loop():
    task = build_task(tiny_config().task)
    torch.manual_seed(0)
    model = Branchy(task.data.input_dim, task.data.output_dim)
    batch = (task.data.x_train[:32], task.data.y_train[:32])
    with pytest.raises(Exception):
        gradient_noise_scale(task, model, batch, method="vmap")
    assert gradient_noise_scale(task, model, batch) == gradient_noise_scale(task, model, batch, method="loop")


# ------------------------------------------------------------------------------ the sweep's bookkeeping


def test_sweep_measures_each_seed_once_and_skips_a_failing_model(tmp_path, monkeypatch, caplog):
    config = tiny_config(seeds=[0, 2], noise_scale={"examples": 64})
    task = build_task(config.task)
    store = Store.open(tmp_path)
    try:
        assert measure_noise(config, task, store, CPU) == 2
        assert measure_noise(config, task, store, CPU) == 0  # resumed: nothing measured twice
        frame = store.noise_frame()
        assert list(frame.columns) == NOISE_COLUMNS and list(frame["seed"]) == [0, 2]
        assert (frame["examples"] == 64).all()
        more = tiny_config(seeds=[0, 2], noise_scale={"examples": 128})
        assert measure_noise(more, task, store, CPU) == 2  # another sample size: measured again
        assert measure_noise(tiny_config(noise_scale={"enabled": False}, seeds=[5]), task, store, CPU) == 0
    finally:
        store.close()

    (tmp_path / "broken_forward.py").write_text(textwrap.dedent("""
        from torch import nn

        class Broken(nn.Module):
            def __init__(self, i, o):
                super().__init__()
                self.layer = nn.Linear(i, o)

            def forward(self, x):
                raise RuntimeError("no forward today")

        def build(input_dim, output_dim):
            return Broken(input_dim, output_dim)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = tiny_config(task={"_replace": True, "model": "broken_forward:build", "data": "teacher"})
    (tmp_path / "broken").mkdir()
    store = Store.open(tmp_path / "broken")
    try:
        with caplog.at_level(logging.WARNING, logger="hpconj"):
            assert measure_noise(broken, build_task(broken.task), store, CPU) == 0
        assert "seed 0 not measured (RuntimeError: no forward today)" in caplog.text
        assert store.noise_frame().empty
    finally:
        store.close()


# ------------------------------------------------------------------------------ end to end

SMALL = {
    "parameterizations": ["standard", "conjugate"],
    "sweep": {"lr": {"values": [0.01, 0.1, 1.0]}, "batch_size": [8, 32], "momentum": [0.0]},
    "budget": {"epochs": 1},
    "noise_scale": {"examples": 128},
}


@pytest.fixture(scope="module")
def plotted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sweep (24 trials), plotted."""
    root = tmp_path_factory.mktemp("noise")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(merged(TINY, SMALL), sort_keys=False))
    folder = root / "res"
    proc = run_cli("sweep", str(config), "--out", str(folder), "--quiet")
    assert proc.returncode == 0, proc.stderr
    noise = pd.read_csv(folder / "noise_scale.csv")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["noise_scale.csv"] == sha256_file(folder / "noise_scale.csv")
    proc = run_cli("plot", str(folder))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((folder / "manifest.json").read_text())  # plot records every hash again
    assert manifest["files"]["noise_scale.csv"] == sha256_file(folder / "noise_scale.csv")
    pd.testing.assert_frame_equal(pd.read_csv(folder / "noise_scale.csv"), noise)  # plot leaves it alone
    return folder


def test_sweep_writes_one_finite_estimate_per_seed(plotted: Path):
    noise = pd.read_csv(plotted / "noise_scale.csv")
    assert list(noise.columns) == NOISE_COLUMNS
    assert list(noise["seed"]) == [0, 1] and (noise["examples"] == 128).all()
    for column in ("trace_sigma", "grad_norm_sq", "b_simple"):
        assert np.isfinite(noise[column]).all() and (noise[column] > 0).all(), column
    assert noise["b_simple"].to_numpy() == pytest.approx((noise["trace_sigma"] / noise["grad_norm_sq"]).to_numpy())
    # the same numbers as measuring in this process: the sweep's estimate is reproducible
    config = load_config(plotted / "config.yaml")
    again = measure_noise_scale(build_task(config.task), 1, 128, CPU)
    assert again.b_simple == pytest.approx(float(noise["b_simple"].iloc[1]), rel=1e-12)


def test_summary_has_the_noise_scale_section(plotted: Path):
    summary = (plotted / "summary.md").read_text()
    section = summary.split("## Gradient noise scale", 1)[1]
    assert "McCandlish et al. 2018" in section and "saturates" in section
    start, _, end = section.partition("At the end of training")  # then the same table on the trained models
    for part in (start, end):
        rows = [line for line in part.splitlines() if line.startswith("| ") and not line.startswith("| seed")]
        assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "mean"]


def test_optimum_shift_plot_data_has_the_noise_scale(plotted: Path):
    frames = analyse(load_results(plotted))
    b_simple = mean_noise_scale(frames.noise)
    noise = pd.read_csv(plotted / "noise_scale.csv")
    assert b_simple == pytest.approx(noise["trace_sigma"].mean() / noise["grad_norm_sq"].mean())
    figure = plots.optimum_shift(frames.optima, frames.shifts, frames.meta, axis="batch_size", noise=frames.noise)
    texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    lines = [a for a in figure.axes[0].get_children() if a.get_gid() == "noise-scale"]
    label = next(t for t in texts if t.startswith("B_simple ≈ "))
    assert "conjugacy expected below" in label
    if abs(math.log2(b_simple) - 5) <= 3:  # B = 8..32 → x = 3..5, drawn up to one octave beyond
        assert len(lines) == 1 and list(lines[0].get_xdata()) == pytest.approx([math.log2(b_simple)] * 2)
    else:
        assert not lines and "beyond the swept batch sizes" in label


def test_a_folder_without_noise_scale_still_plots(plotted: Path, tmp_path: Path):
    old = tmp_path / "old"
    shutil.copytree(plotted, old, ignore=shutil.ignore_patterns("plots", "noise_scale.csv", "summary.md"))
    # what `hpconj plot` does, in process (rendering every figure again would only cost time)
    frames = analyse(load_results(old))
    assert frames.noise.empty and math.isnan(mean_noise_scale(frames.noise))
    write_tables(frames, old)
    summary = (old / "summary.md").read_text()
    assert "## Shifts" in summary and "Gradient noise scale" not in summary
    figure = plots.optimum_shift(frames.optima, frames.shifts, frames.meta, noise=frames.noise)
    assert not [a for a in figure.axes[0].get_children() if a.get_gid() == "noise-scale"]
    assert not any("B_simple" in t.get_text() for legend in figure.legends for t in legend.get_texts())
    figure.draw_without_rendering()


# ------------------------------------------------------------------------------ drawing and wording


def optima_frame() -> pd.DataFrame:
    rows = [(p, "momentum", b, 0.0, 2.0**x, 2.0**(x - 0.3), 2.0**(x + 0.3), x, 0.1, False, 2)
            for p, offset in (("standard", 0.0), ("conjugate", -1.0)) for b, x in ((8, -6.0), (32, -4.5), (128, -4.0))
            for x in [x + offset]]
    return pd.DataFrame(rows, columns=["parameterization", "optimizer", "batch_size", "momentum", "lr_opt", "lr_lo",
                                       "lr_hi", "log2_lr_opt", "metric_opt", "at_edge", "n_seeds"])


def noise_frame(*b_simple: float) -> pd.DataFrame:
    return noise_summary(pd.DataFrame({"seed": range(len(b_simple)), "examples": 1024,
                                       "trace_sigma": [10.0 * b for b in b_simple], "grad_norm_sq": 10.0,
                                       "b_simple": list(b_simple)}))


def test_noise_line_is_drawn_at_the_mean_noise_scale():
    noise = noise_frame(30.0, 44.0)
    assert list(noise["row"]) == ["seed", "seed", "mean"] and mean_noise_scale(noise) == pytest.approx(37.0)
    figure = plots.optimum_shift(optima_frame(), pd.DataFrame(), {"metric": "val_loss"}, noise=noise)
    (line,) = [a for a in figure.axes[0].get_children() if a.get_gid() == "noise-scale"]
    assert list(line.get_xdata()) == pytest.approx([math.log2(37.0)] * 2)
    assert line.get_label() == "B_simple ≈ 37: conjugacy expected below"
    assert line.get_label() in [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    figure.draw_without_rendering()

    far = plots.optimum_shift(optima_frame(), pd.DataFrame(), None, noise=noise_frame(5000.0))
    assert not [a for a in far.axes[0].get_children() if a.get_gid() == "noise-scale"]
    assert "B_simple ≈ 5,000: conjugacy expected below (beyond the swept batch sizes)" in [
        t.get_text() for legend in far.legends for t in legend.get_texts()]
    momentum = plots.optimum_shift(optima_frame(), pd.DataFrame(), None, axis="momentum", noise=noise)
    assert not [a for a in momentum.axes[0].get_children() if a.get_gid() == "noise-scale"]


def test_mean_is_a_ratio_of_means_and_infinite_without_signal():
    summary = noise_summary(pd.DataFrame({"seed": [0, 1], "examples": [64, 64], "trace_sigma": [2.0, 4.0],
                                          "grad_norm_sq": [0.5, -0.1], "b_simple": [4.0, math.inf]}))
    mean = summary[summary["row"] == "mean"].iloc[0]
    assert mean["trace_sigma"] == 3.0 and mean["grad_norm_sq"] == pytest.approx(0.2)
    assert mean["b_simple"] == pytest.approx(15.0)
    none = noise_summary(pd.DataFrame({"seed": [0], "examples": [64], "trace_sigma": [1.0], "grad_norm_sq": [-1.0],
                                       "b_simple": [math.inf]}))
    assert math.isinf(mean_noise_scale(none))
    assert noise_summary(pd.DataFrame()).empty


def test_rerunning_a_finished_folder_adds_the_estimate_and_keeps_the_analysis(plotted: Path, tmp_path: Path):
    """A folder from before the noise scale existed: re-running its sweep trains nothing, measures
    B_simple, and leaves optima.csv, shifts.csv and summary.md in place (no trial changed)."""
    import sqlite3

    old = tmp_path / "old"
    shutil.copytree(plotted, old)
    with sqlite3.connect(old / "store.sqlite") as db:
        db.execute("DELETE FROM noise_scale")
    (old / "noise_scale.csv").unlink()
    summary = (old / "summary.md").read_text()
    proc = run_cli("sweep", str(plotted.parent / "tiny.yaml"), "--out", str(old), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (old / "summary.md").read_text() == summary and (old / "optima.csv").is_file()
    assert len(pd.read_csv(old / "noise_scale.csv")) == len(pd.read_csv(plotted / "noise_scale.csv"))
