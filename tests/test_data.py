"""Data sets: shipped, generated, and read from a user's file or function."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from hpconj.config import load_config
from hpconj.tasks import TaskError, build_task
from hpconj.tasks.data import load_mnist1d


def _task(write_config, data, **task):
    spec = {"_replace": True, "model": "mlp", "width": 8, "depth": 1, "data": data, **task}
    return build_task(load_config(write_config(task=spec)).task)


def test_digits_split_and_standardization(write_config):
    task = _task(write_config, "digits", val_fraction=0.25)
    data = task.data
    assert data.n_train + len(data.x_val) == 1797 and len(data.x_val) == round(0.25 * 1797)
    assert data.input_dim == 64 and data.classes == 10
    # standardized with the training split's statistics only
    assert torch.allclose(data.x_train.mean(0), torch.zeros(64), atol=1e-5)
    assert not torch.allclose(data.x_val.mean(0), torch.zeros(64), atol=1e-3)
    again = _task(write_config, "digits", val_fraction=0.25).data
    assert torch.equal(again.x_val, data.x_val)  # fixed split seed
    other = _task(write_config, "digits", val_fraction=0.25, data_seed=1).data
    assert not torch.equal(other.x_val, data.x_val)


def test_mnist1d_is_generated_offline():
    x, y = load_mnist1d()
    assert x.shape == (5000, 40) and set(np.unique(y)) == set(range(10))


def test_teacher_regression_and_classes(write_config):
    cls = _task(write_config, {"name": "teacher", "examples": 300, "input_dim": 5, "outputs": 3})
    assert cls.data.classes == 3 and cls.data.input_dim == 5
    reg = _task(write_config, {"name": "teacher", "examples": 300, "kind": "regression", "outputs": 2})
    assert reg.data.classes == 0 and reg.data.output_dim == 2 and reg.data.y_train.dtype == torch.float32
    assert torch.isnan(torch.tensor(reg.evaluate(reg.init_model(0)).val_error))


def test_user_files_npz_and_csv(write_config, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 4)), rng.integers(0, 3, size=120)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    task = _task(write_config, "d.npz")
    assert task.data.classes == 3 and task.data.input_dim == 4
    lines = ["a,b,target"] + [f"{r[0]},{r[1]},{r[0] * 2 + 0.5}" for r in x[:, :2]]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    reg = _task(write_config, "d.csv")
    assert reg.data.classes == 0 and reg.data.input_dim == 2
    np.savez(tmp_path / "bad.npz", features=x)
    with pytest.raises(TaskError, match="needs arrays 'x' and 'y'"):
        _task(write_config, "bad.npz")


def test_user_data_function(write_config, tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(textwrap.dedent("""
        import numpy as np

        def make(n=50):
            rng = np.random.default_rng(1)
            return rng.normal(size=(n, 3)), rng.integers(0, 2, size=n)

        def broken():
            raise ValueError("no data today")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    task = _task(write_config, {"name": "mydata:make", "kwargs": {"n": 80}})
    assert task.data.n_train + len(task.data.x_val) == 80
    with pytest.raises(TaskError, match="raised ValueError: no data today"):
        _task(write_config, "mydata:broken")


def test_digits_are_scikit_learns_read_without_importing_it():
    """hpconj reads scikit-learn's digits file itself (its import costs a second per process): the
    arrays must be the ones sklearn.datasets.load_digits returns, and scikit-learn stay unimported."""
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits as scikit_learns

    from hpconj.tasks.data import load_digits

    x, y = load_digits()
    theirs = scikit_learns()
    assert x.dtype == theirs.data.dtype and np.array_equal(x, theirs.data)
    assert y.dtype == theirs.target.dtype and np.array_equal(y, theirs.target)
    script = "import sys; from hpconj.tasks.data import load_digits; load_digits(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.strip() == "False"
