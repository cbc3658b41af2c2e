"""μP (`parameterizations: [mup]`) against its authors' code, the mup package (Yang et al. 2022).

The oracle: the same network written with mup (hidden `nn.Linear`s, a `MuReadout`), given
hpconj's standard initial weights, then `set_base_shapes` against the base width and trained
with `MuSGD` / `MuAdam` on the same batches, must end where hpconj's μP trials end, in both
engines, at three widths. At the base width μP is the standard parameterization, bit for bit.
"""
from __future__ import annotations

import mup  # installed by `make` (Makefile: --no-deps, see there)
import pytest
import torch
from torch import nn

from hpconj.config import load_config
from hpconj.engine.cohort import train_cohort
from hpconj.engine.reference import train_trial
from hpconj.tasks import build_task
from hpconj.trials import expand_trials

CPU = torch.device("cpu")
BASE_WIDTH = 16
STEPS = 60


def _config(write_config, optimizer: str, widths: list[int], lr: float, momentum: float):
    return load_config(write_config(
        task={"_replace": True, "model": "mlp", "depth": 2,
              "data": {"name": "teacher", "examples": 512, "input_dim": 12, "outputs": 5}},
        optimizer=optimizer, parameterizations=["standard", "mup"], base_width=BASE_WIDTH,
        budget={"_replace": True, "steps": STEPS},
        sweep={"lr": {"values": [lr]}, "batch_size": [16], "momentum": [momentum], "width": widths},
        seeds=[3],
    ))


def _mup_oracle(task, standard_task, trial, optimizer: str):
    """The trial trained by the mup package from hpconj's standard initial weights."""
    width, d, o = trial.task.width, task.data.input_dim, task.data.output_dim

    def network(n: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(d, n), nn.ReLU(), nn.Linear(n, n), nn.ReLU(), mup.MuReadout(n, o))

    model = network(width)
    model.load_state_dict(standard_task.init_model(trial.seed).state_dict())
    mup.set_base_shapes(model, network(BASE_WIDTH))
    native = trial.native
    if optimizer == "adam":
        opt = mup.MuAdam(model.parameters(), lr=trial.lr, betas=(native.beta1, native.beta2), eps=native.eps)
    else:
        opt = mup.MuSGD(model.parameters(), lr=trial.lr, momentum=trial.momentum)
    initial = [p.detach().clone() for p in model.parameters()]
    for batch in task.batch_stream(trial.seed, trial.batch_size, STEPS, CPU):
        opt.zero_grad(set_to_none=True)
        task.batch_loss(model, batch).backward()
        opt.step()
    return initial, task.evaluate(model)


@pytest.mark.parametrize("optimizer, lr, momentum", [("momentum", 0.05, 0.9), ("adam", 0.003, 0.9)])
def test_mup_trials_match_the_mup_package_at_three_widths(write_config, optimizer, lr, momentum):
    config = _config(write_config, optimizer, [16, 64, 256], lr, momentum)
    trials = expand_trials(config)
    mup_trials = [t for t in trials if t.parameterization == "mup"]
    assert sorted(t.task.width for t in mup_trials) == [16, 64, 256]
    for trial in mup_trials:
        task = build_task(trial.task)
        standard_task = build_task(trial.task.model_copy(update={"mup_base_width": None}))
        ours = [p.detach() for p in task.init_model(trial.seed).parameters()]
        initial, theirs = _mup_oracle(task, standard_task, trial, optimizer)
        for a, b in zip(ours, initial):  # μP's initial variances: the same rescaling as set_base_shapes
            assert torch.equal(a, b)
        reference = train_trial(task, trial, CPU)
        (cohort,) = train_cohort(task, [trial], CPU)
        assert reference.status == cohort.status == "ok"
        assert (cohort.params_sha256, cohort.val_loss) == (reference.params_sha256, reference.val_loss)
        assert reference.val_loss == pytest.approx(theirs.val_loss, rel=1e-5), trial.task.width
        assert reference.train_loss == pytest.approx(theirs.train_loss, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_mup_at_the_base_width_is_the_standard_parameterization_bit_for_bit(write_config, optimizer):
    config = _config(write_config, optimizer, [BASE_WIDTH], 0.02, 0.9)
    by_param = {t.parameterization: t for t in expand_trials(config)}
    assert by_param["mup"].trial_id != by_param["standard"].trial_id
    runs = {name: train_trial(build_task(t.task), t, CPU) for name, t in by_param.items()}
    assert runs["mup"].params_sha256 == runs["standard"].params_sha256
    assert runs["mup"].val_loss == runs["standard"].val_loss


def test_mup_is_refused_where_it_is_not_defined(write_config):
    from hpconj.config import ConfigError

    for changes, words in (
        ({"parameterizations": ["mup"], "task": {"_replace": True, "model": "deep_linear", "data": "teacher"}},
         "defined for the built-in mlp"),
        ({"parameterizations": ["mup"], "optimizer": "adagrad", "sweep": {"momentum": [0.0]}}, "not for adagrad"),
        ({"parameterizations": ["mup"], "task": {"depth": 0}}, "depth ≥ 1"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_config(write_config(**changes))
