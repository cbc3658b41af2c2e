"""Axes beyond batch size and momentum: width, depth, init_scale and init (hpconj.axes).

A config that sweeps an architecture axis gets one cohort per architecture, a column per swept
axis in trials.csv, slices keyed by every axis, shifts along every numeric axis at each value of
the others, and a figure per axis. Initialisations keep their stated properties, the linear
teacher has the spectrum it was given, and the cohort engine reproduces the reference for every
architecture option.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hpconj.analysis import optima, shifts, slice_keys
from hpconj.config import ConfigError, LinearTeacherData, load_config
from hpconj.engine.cohort import train_cohort
from hpconj.engine.reference import train_trial
from hpconj.folder import read_trials
from hpconj.tasks import build_task
from hpconj.tasks.data import linear_teacher_map
from hpconj.tasks.supervised import build_deep_linear, build_mlp
from hpconj.trials import expand_trials, group_cohorts
from conftest import run_here

CPU = torch.device("cpu")
THREE_AXES = {"sweep": {"lr": {"values": [0.01, 0.05, 0.2, 1000.0]}, "batch_size": [8, 32], "momentum": [0.0, 0.9],
                        "width": [8, 32]},
              "task": {"_replace": True, "model": "mlp", "depth": 1,
                       "data": {"name": "teacher", "examples": 256, "input_dim": 8, "outputs": 4}},
              "budget": {"_replace": True, "steps": 12}}


def test_a_swept_width_expands_into_one_cohort_per_architecture_and_batch_size(write_config):
    config = load_config(write_config(**THREE_AXES))
    trials = expand_trials(config)
    assert len(trials) == 2 * 2 * 2 * 2 * 2 * 4  # widths × B × parameterizations × β × seeds × lrs
    assert sorted({t.task.width for t in trials}) == [8, 32]
    cohorts = group_cohorts(trials)
    assert [(c.batch_size, c.task.width) for c in cohorts] == [(8, 8), (8, 32), (32, 8), (32, 32)]
    assert all(len({t.task.width for t in c.trials}) == 1 for c in cohorts)
    assert len({t.trial_id for t in trials}) == len(trials)


def test_an_unswept_config_keeps_its_trial_ids_and_config_bytes(write_config):
    """Fields added for the new axes are left out of dumps at their default: old ids stay valid."""
    config = load_config(write_config())
    assert "init" not in config.task.model_dump() and "init_scale" not in config.task.model_dump()
    assert "width" not in config.canonical()["sweep"]
    swept = load_config(write_config(sweep={"width": [16]}, task={"_replace": True, "model": "mlp", "depth": 1,
                                                                  "data": {"name": "teacher", "examples": 256,
                                                                           "input_dim": 8, "outputs": 4}}))
    assert {t.trial_id for t in expand_trials(swept)} == {t.trial_id for t in expand_trials(config)}


def test_three_axes_give_slices_shifts_tables_and_figures(write_config, tmp_path):
    out = tmp_path / "three"
    assert run_here("sweep", str(write_config(**THREE_AXES)), "--out", str(out), "--quiet").returncode == 0
    trials = read_trials(out)
    assert list(trials.columns[:8]) == ["trial_id", "status", "parameterization", "optimizer", "lr", "batch_size",
                                        "momentum", "width"]
    assert sorted(trials["width"].unique()) == [8, 32]
    assert slice_keys(trials) == ["parameterization", "optimizer", "batch_size", "momentum", "width"]
    best = optima(trials)
    assert len(best) == 2 * 2 * 2 * 2
    shift = shifts(trials, best)
    assert set(shift["axis"]) == {"batch_size", "momentum", "width"}
    along_width = shift[shift["axis"] == "width"]
    assert len(along_width) == 2 * 2 * 2  # parameterizations × B × β
    assert along_width["fixed_width"].isna().all() and along_width["fixed_batch_size"].notna().all()
    assert set(along_width["fixed"]) == {"batch_size=8, momentum=0", "batch_size=8, momentum=0.9",
                                         "batch_size=32, momentum=0", "batch_size=32, momentum=0.9"}
    assert run_here("plot", str(out)).returncode == 0
    names = {p.name for p in (out / "plots").iterdir()}
    assert {"optimum_shift_width.svg", "loss_vs_lr_width.png", "optimum_shift_batch_size.png"} <= names
    summary = (out / "summary.md").read_text()
    assert "| parameterization | B | β | width | lr* |" in summary and "width (width = 8 → 32" in summary
    table = run_here("table", str(out))
    assert table.returncode == 0 and "width" in table.stdout
    check = run_here("check", str(out), "--trials", "10%")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_check_rebuilds_trials_of_every_architecture(write_config, tmp_path):
    """A trial of another lr than the grid's is still the experiment's: rebuilt from its row,
    architecture included."""
    out = tmp_path / "rebuilt"
    assert run_here("sweep", str(write_config(**THREE_AXES)), "--out", str(out), "--quiet").returncode == 0
    smaller = {**THREE_AXES, "sweep": {**THREE_AXES["sweep"], "lr": {"values": [0.01, 0.05]}}}
    config = load_config(write_config("smaller.yaml", **smaller))
    from hpconj.folder import trial_set

    planned, foreign, missing = trial_set(config, read_trials(out))
    assert foreign == [] and missing == [] and len(planned) == 2 * 2 * 2 * 2 * 2 * 4


@pytest.mark.parametrize("changes, words", [
    ({"task": {"_replace": True, "model": "quadratic"}, "budget": {"_replace": True, "steps": 5},
      "sweep": {"width": [4, 8]}}, ("sweep.width", "quadratic model has no width")),
    ({"task": {"width": 8}, "sweep": {"width": [4, 8]}}, ("task.width", "give its values there only")),
    ({"task": {"_replace": True, "model": "deep_linear", "data": "teacher"}, "sweep": {"depth": [0, 2]}},
     ("sweep.depth", "deep_linear")),
    ({"sweep": {"init": ["orthogonal", "orthogonal"]}}, ("sweep.init", "distinct")),
])
def test_bad_axes_are_one_line_naming_the_key(write_config, changes, words):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(**changes))
    text = str(info.value)
    assert len(text.splitlines()) == 1 and all(w in text for w in words), text


# ----------------------------------------------------------------------------- initialisation
def _mlp(**fields):
    from hpconj.config import MlpTask

    spec = MlpTask(model="mlp", data={"name": "teacher"}, width=64, depth=2, **fields)
    torch.manual_seed(0)
    return build_mlp(spec, 32, 10)


def test_default_init_at_scale_one_is_pytorchs_and_scale_multiplies_only_the_weights():
    plain = _mlp()
    torch.manual_seed(0)
    layers = [nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)]
    for ours, theirs in zip([m for m in plain if isinstance(m, nn.Linear)], layers):
        assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    doubled = _mlp(init_scale=2.0)
    for a, b in zip([m for m in plain if isinstance(m, nn.Linear)], [m for m in doubled if isinstance(m, nn.Linear)]):
        assert torch.equal(b.weight, 2.0 * a.weight) and torch.equal(a.bias, b.bias)


def test_orthogonal_init_is_orthogonal_times_the_scale_with_zero_bias():
    model = _mlp(init="orthogonal", init_scale=0.5)
    for layer in (m for m in model if isinstance(m, nn.Linear)):
        w = layer.weight.double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, 0.25 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5)
        assert torch.count_nonzero(layer.bias) == 0


def test_gaussian_init_has_the_stated_standard_deviation():
    from hpconj.config import MlpTask

    spec = MlpTask(model="mlp", data={"name": "teacher"}, width=1024, depth=1, init="gaussian", init_scale=3.0)
    torch.manual_seed(1)
    first = build_mlp(spec, 512, 4)[0]
    weight = first.weight.detach()
    assert float(weight.std()) == pytest.approx(3.0 / math.sqrt(512), rel=0.01)
    assert float(weight.mean()) == pytest.approx(0.0, abs=1e-3)


def test_a_width_one_orthogonal_chain_carries_the_scale_to_the_power_of_depth():
    from hpconj.config import DeepLinearTask

    spec = DeepLinearTask(model="deep_linear", data={"name": "teacher"}, width=1, depth=10, init="orthogonal",
                          init_scale=0.9)
    torch.manual_seed(0)
    chain = build_deep_linear(spec, 1, 1)
    product = torch.ones(1, 1)
    for layer in chain:
        weight = layer.weight.detach()
        assert abs(float(weight)) == pytest.approx(0.9)
        product = weight @ product
    assert abs(float(product)) == pytest.approx(0.9**10, rel=1e-5)  # Saxe: 0.9^depth, vanishing with depth


def test_the_linear_teacher_has_the_singular_values_it_was_given():
    spec = LinearTeacherData(input_dim=12, outputs=6, singular_values=[0.5, 3.0, 1.0])
    w = linear_teacher_map(spec)
    assert w.shape == (6, 12)
    assert np.allclose(np.linalg.svd(w, compute_uv=False)[:3], [3.0, 1.0, 0.5])
    assert np.linalg.matrix_rank(w, tol=1e-9) == 3
    with pytest.raises(ValueError):
        LinearTeacherData(input_dim=2, outputs=6, singular_values=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("task", [
    {"model": "mlp", "width": 16, "depth": 2, "init": "orthogonal", "init_scale": 0.7},
    {"model": "mlp", "width": 16, "depth": 1, "init": "gaussian", "init_scale": 2.0, "activation": "tanh"},
    {"model": "mlp", "width": 16, "depth": 1, "init_scale": 0.5},
    {"model": "deep_linear", "width": 1, "depth": 6, "init": "orthogonal"},
    {"model": "deep_linear", "width": 16, "depth": 4, "init": "orthogonal", "init_scale": 1.2},
])
def test_the_cohort_engine_reproduces_the_reference_for_every_architecture_option(write_config, task):
    data = ({"name": "linear_teacher", "examples": 200, "input_dim": 16, "outputs": 8, "singular_values": [3.0, 1.0]}
            if task["model"] == "deep_linear" else {"name": "teacher", "examples": 200, "input_dim": 8, "outputs": 4})
    config = load_config(write_config(task={**task, "_replace": True, "data": data},
                                      sweep={"lr": {"values": [0.01, 0.2, 1000.0]}, "batch_size": [8]}))
    built = build_task(config.task)
    trials = expand_trials(config)
    cohort = {r.trial_id: r for r in train_cohort(built, trials, CPU)}
    # a width-1 chain multiplies B·1·1 < 400 numbers per product: torch's bmm then sums in another
    # order than mm (README, "Engines and their guarantees"); a chain of scalars multiplies those
    # last-bit differences through its depth, so there the results agree to 1e-3 relative
    tiny = task.get("width") == 1
    for trial in trials:
        ref, got = train_trial(built, trial, CPU), cohort[trial.trial_id]
        assert got.status == ref.status
        if tiny:
            assert got.val_loss == pytest.approx(ref.val_loss, rel=1e-3)
        else:
            assert (got.params_sha256, got.val_loss) == (ref.params_sha256, ref.val_loss)
    assert "ok" in {r.status for r in cohort.values()}


# ----------------------------------------------------------------------------- the stability edge
@pytest.mark.parametrize("parameterization, optimizer, momentum, batch, grid, expected", [
    # plain SGD on a quadratic diverges iff η·h_max > 2: the threshold is 2 for h_max = 1
    ("standard", "sgd", 0.0, 4, [1.0, 1.8, 2.6, 4.0], 2.6),
    # heavy ball: stable iff η·h < 2(1 + β) (the characteristic roots of v ← βv + g leave the unit disc)
    ("standard", "momentum", 0.5, 4, [1.0, 2.6, 3.4, 5.0], 3.4),
    # conjugate runs SGD with η·κ·(1 − β): the threshold is 2(1 + β)/(κ(1 − β)h_max) = 1.5 at κ = 4, β = ½
    ("conjugate", "momentum", 0.5, 4, [1.0, 1.4, 1.6, 3.0], 1.6),
])
def test_lr_div_sits_on_the_quadratics_exact_divergence_threshold(write_config, tmp_path, parameterization,
                                                                   optimizer, momentum, batch, grid, expected):
    """The quadratic's noise is additive, so E[θ] and Var[θ] follow the noise-free recursion's
    factor: divergence starts exactly where the recursion's spectral radius reaches 1."""
    out = tmp_path / "edge"
    config = write_config(task={"_replace": True, "model": "quadratic", "dim": 8, "h_min": 0.1, "h_max": 1.0,
                                "sigma": 0.1},
                          optimizer=optimizer, parameterizations=[parameterization], reference_batch_size=1,
                          budget={"_replace": True, "steps": 150}, metric={"name": "train_loss"},
                          sweep={"lr": {"values": grid}, "batch_size": [batch], "momentum": [momentum]})
    assert run_here("sweep", str(config), "--out", str(out), "--quiet").returncode == 0
    (row,) = optima(read_trials(out)).itertuples(index=False)
    assert row.lr_div == pytest.approx(expected)
    assert row.div_gap == pytest.approx(math.log2(expected) - row.log2_lr_opt)
    assert row.log2_lr_opt < math.log2(expected)


def test_a_categorical_axis_is_compared_pairwise(write_config, tmp_path):
    """init is categorical: no slope, one row per pair of values with the move between them."""
    out = tmp_path / "inits"
    config = write_config(task={"_replace": True, "model": "deep_linear", "width": 16, "depth": 3,
                                "data": {"name": "linear_teacher", "examples": 256, "input_dim": 16, "outputs": 8}},
                          optimizer="sgd", parameterizations=["standard"], budget={"_replace": True, "steps": 40},
                          metric={"name": "train_loss"},
                          sweep={"lr": {"_replace": True, "log2_range": [-8, 0], "step": 1}, "batch_size": [16], "momentum": [0.0],
                                 "init": ["gaussian", "orthogonal", "default"]})
    assert run_here("sweep", str(config), "--out", str(out), "--quiet").returncode == 0
    trials = read_trials(out)
    assert set(trials["init"]) == {"gaussian", "orthogonal", "default"}
    shift = shifts(trials)
    pairs = shift[shift["axis"] == "init"]
    assert sorted(pairs["fixed"]) == ["batch_size=16, momentum=0: default → gaussian",
                                      "batch_size=16, momentum=0: default → orthogonal",
                                      "batch_size=16, momentum=0: gaussian → orthogonal"]
    assert pairs["slope"].isna().all()
    best = optima(trials).set_index("init")["log2_lr_opt"]
    row = pairs[pairs["fixed"].str.endswith("gaussian → orthogonal")].iloc[0]
    if np.isfinite(row["shift_octaves"]):
        assert row["shift_octaves"] == pytest.approx(best["orthogonal"] - best["gaussian"])
        assert row["shift_lo"] <= row["shift_octaves"] <= row["shift_hi"]
    assert run_here("plot", str(out)).returncode == 0
    assert "initialisation (init = default → orthogonal, against each pair of values)" in (out / "summary.md").read_text()
    assert run_here("check", str(out), "--trials", "20%").returncode == 0
