"""What a user waits for before anything trains: the commands that do not train import no torch,
and what they say without it is what the built task says."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, TINY, merged, run_cli
from hpconj.catalog import DATASETS, MODELS, described, train_examples
from hpconj.config import config_from_dict

NO_TORCH = """
import sys
sys.argv = ["hpconj", *{args!r}]
from hpconj.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "sklearn", "matplotlib", "hpconj.engine.cohort") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("args", [
    ["--help"], ["tasks"], ["init", "-"], ["validate", "configs/quickstart.yaml"],
    ["validate", "configs/nqm_batch.yaml"], ["validate", "configs/width_mup.yaml"],
    ["check", "results/reference/quickstart", "--integrity"],
])
def test_commands_that_do_not_train_import_no_torch(args):
    proc = subprocess.run([sys.executable, "-c", NO_TORCH.format(args=args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("data", [
    "digits", "mnist1d", {"name": "linear_teacher", "examples": 300},
    {"name": "teacher", "examples": 256, "kind": "regression", "outputs": 3},
    {"name": "teacher", "examples": 256, "input_dim": 8, "outputs": 4},
])
def test_the_catalog_knows_what_loading_the_data_tells(data):
    from hpconj.tasks import build_task

    model = "deep_linear" if isinstance(data, dict) and data["name"] == "linear_teacher" else "mlp"
    config = config_from_dict(merged(TINY, {"task": {"_replace": True, "model": model, "data": data,
                                                     "val_fraction": 0.3}}))
    task = build_task(config.first_task)
    assert train_examples(config.first_task) == task.data.n_train
    if not (isinstance(data, dict) and data.get("kind", "classification") == "classification"
            and data["name"] == "teacher"):
        assert described(config.first_task) == task.description


def test_the_catalog_lists_every_builder():
    from hpconj.tasks.data import LOADERS
    from hpconj.tasks.supervised import MODEL_BUILDERS

    assert set(MODELS) == set(MODEL_BUILDERS) | {"quadratic"}
    assert len(DATASETS) == len(LOADERS)


def test_validate_without_torch_refuses_what_the_sweep_refuses(write_config, tmp_path):
    path = write_config(sweep={"batch_size": [8, 4096]})
    quick = run_cli("validate", str(path))
    sweep = run_cli("sweep", str(path), "--out", str(tmp_path / "r"))
    assert quick.returncode == sweep.returncode == 2
    assert quick.stderr == sweep.stderr == "error: sweep.batch_size: batch size 4096 exceeds the 205 training examples\n"


def test_validate_times_the_model_only_when_asked(write_config):
    quick = " ".join(run_cli("validate", str(write_config())).stdout.split())
    assert "time not estimated (hpconj validate --time times the model)" in quick
    timed = " ".join(run_cli("validate", str(write_config()), "--time").stdout.split())
    assert "on this machine (plain-loop estimate" in timed
    plan = lambda text: text.split(" optimizer ")[1].split(" cost ")[0]  # noqa: E731
    assert plan(quick) == plan(timed)  # the same plan either way (a teacher's classes need the data)


def test_user_code_is_built_by_validate(write_config, tmp_path):
    """A user's model cannot be judged without building it: validate does (and imports torch)."""
    (tmp_path / "tiny_model.py").write_text("from torch import nn\n\ndef build(i, o):\n    return nn.Linear(i, o)\n")
    config = write_config(task={"_replace": True, "model": "tiny_model:build", "data": "teacher"})
    proc = run_cli("validate", str(config), cwd=tmp_path)
    assert proc.returncode == 0 and "tiny_model:build on teacher" in proc.stdout, proc.stderr
