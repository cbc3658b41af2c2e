"""Data sets: every one is generated, shipped inside a package, or read from a user's file.

All return a `Dataset`: float32 features standardized with the train split's statistics, a
fixed-seed train/validation split, and integer classes or float regression targets.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hpconj.config import CallableData, DataSpec, FileData, LinearTeacherData, TeacherData, resolve_callable
from hpconj.tasks.base import TaskError


@dataclass(frozen=True)
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: int  # 0 for regression

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def output_dim(self) -> int:
        return self.classes if self.classes else int(self.y_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def to(self, device: torch.device) -> Dataset:
        return Dataset(*(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val)), self.classes)


def load_teacher(spec: TeacherData) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, I_d); logits = tanh(x·W1)·W2 with W ~ N(0, 1/fan_in); y = argmax or the logits, + noise."""
    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((spec.examples, spec.input_dim))
    w1 = rng.standard_normal((spec.input_dim, spec.hidden)) / np.sqrt(spec.input_dim)
    w2 = rng.standard_normal((spec.hidden, spec.outputs)) / np.sqrt(spec.hidden)
    out = np.tanh(x @ w1) @ w2 + spec.noise * rng.standard_normal((spec.examples, spec.outputs))
    if spec.kind == "classification":
        return x, out.argmax(axis=1)
    return x, out


def linear_teacher_map(spec: LinearTeacherData) -> np.ndarray:
    """W [outputs, input_dim] = U·diag(s)·Vᵀ, U and V with orthonormal columns from the QR of
    Gaussian matrices (RNG `seed`), s = singular_values in the order given."""
    rng = np.random.default_rng([spec.seed, 1])
    rank = len(spec.singular_values)
    u, _ = np.linalg.qr(rng.standard_normal((spec.outputs, rank)))
    v, _ = np.linalg.qr(rng.standard_normal((spec.input_dim, rank)))
    return u @ np.diag(spec.singular_values) @ v.T


def load_linear_teacher(spec: LinearTeacherData) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, I_d); y = W·x + noise, W with the given singular values (Saxe et al. 2014); regression."""
    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((spec.examples, spec.input_dim))
    y = x @ linear_teacher_map(spec).T + spec.noise * rng.standard_normal((spec.examples, spec.outputs))
    return x, y


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits: 1,797 examples, 64 features, 10 classes.

    Read from the file scikit-learn ships (sklearn/datasets/data/digits.csv.gz) as its
    `load_digits` reads it (np.loadtxt, the last column the class), without importing scikit-learn:
    its import takes over a second, in the main process and again in every worker."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise TaskError("data: digits ships with scikit-learn, which is not installed (pip install scikit-learn)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, mode="rt", encoding="utf-8") as text:
        data = np.loadtxt(text, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int, copy=False)


@lru_cache(maxsize=1)
def load_mnist1d() -> tuple[np.ndarray, np.ndarray]:
    """mnist1d generated offline with its default arguments (seed 42): 5,000 examples, 40 features."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return np.concatenate([data["x"], data["x_test"]]), np.concatenate([data["y"], data["y_test"]])


def load_file(spec: FileData) -> tuple[np.ndarray, np.ndarray]:
    """`.npz` with arrays `x` and `y` (or `X`, `Y`); `.csv` with a header, target `y`/`target`/last."""
    path = Path(spec.path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                keys = set(archive.files)
                xk = next((k for k in ("x", "X") if k in keys), None)
                yk = next((k for k in ("y", "Y") if k in keys), None)
                if xk is None or yk is None:
                    raise TaskError(f"{path.name}: an .npz needs arrays 'x' and 'y', found {sorted(keys)}")
                return archive[xk], archive[yk]
        import pandas as pd

        frame = pd.read_csv(path)
        target = next((c for c in ("y", "target") if c in frame.columns), frame.columns[-1])
        features = frame.drop(columns=[target])
        non_numeric = [c for c in features.columns if not np.issubdtype(features[c].dtype, np.number)]
        if non_numeric:
            raise TaskError(f"{path.name}: feature columns must be numeric, not {non_numeric[:3]}")
        return features.to_numpy(), frame[target].to_numpy()
    except TaskError:
        raise
    except Exception as exc:
        raise TaskError(f"{path.name}: cannot read data ({type(exc).__name__}: {exc})") from None


def load_callable(spec: CallableData) -> tuple[np.ndarray, np.ndarray]:
    """A user's function returning (x, y) or {'x': ..., 'y': ...}."""
    try:
        out = resolve_callable(spec.target)(**spec.kwargs)
    except Exception as exc:
        raise TaskError(f"data function {spec.target} raised {type(exc).__name__}: {exc}") from None
    if isinstance(out, dict):
        out = (out.get("x"), out.get("y"))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TaskError(f"data function {spec.target} must return (x, y), got {type(out).__name__}")
    return np.asarray(out[0]), np.asarray(out[1])


LOADERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "teacher": load_teacher,
    "linear_teacher": load_linear_teacher,
    "digits": lambda spec: load_digits(),
    "mnist1d": lambda spec: load_mnist1d(),
    "file": load_file,
    "callable": load_callable,
}
LOADERS["digits"].__doc__ = load_digits.__doc__
LOADERS["mnist1d"].__doc__ = load_mnist1d.__doc__


def build_dataset(spec: DataSpec, val_fraction: float, split_seed: int) -> Dataset:
    """Load, check, split (fixed seed) and standardize on the train split only."""
    x, y = LOADERS[spec.name](spec)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise TaskError(f"data {_label(spec)}: need x of shape [n, d] and y of length n, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise TaskError(f"data {_label(spec)}: features contain NaN or inf")
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_val = max(1, int(round(val_fraction * len(x))))
    if n_val >= len(x):
        raise TaskError(f"data {_label(spec)}: val_fraction leaves no training examples")
    train, val = order[n_val:], order[:n_val]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    classification = np.issubdtype(y.dtype, np.integer) or (y.dtype.kind == "f" and y.ndim == 1 and np.all(y == np.round(y)))
    if classification and y.ndim == 1:
        labels, codes = np.unique(y, return_inverse=True)
        y_t = torch.as_tensor(codes, dtype=torch.int64)
        classes = len(labels)
    else:
        y2 = y.astype(np.float32).reshape(len(y), -1)
        y_t = torch.as_tensor(y2)
        classes = 0
    x_t = torch.as_tensor(x, dtype=torch.float32)
    return Dataset(x_t[train], y_t[train], x_t[val], y_t[val], classes)


def _label(spec: DataSpec) -> str:
    return getattr(spec, "path", None) or getattr(spec, "target", None) or spec.name

