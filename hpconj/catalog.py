"""The built-in models and data sets in one line each, for `hpconj tasks`: torch-free, so that
listing them does not import what builds them (hpconj.tasks, which tests that both agree)."""
from __future__ import annotations

from typing import Any

MODELS = {
    "mlp": "input → `depth` × (Linear(width) → activation) → Linear(output); init per `init` × `init_scale`.",
    "deep_linear": "Saxe's deep linear network: `depth` bias-free layers, W ~ N(0, init_scale² / fan_in), or "
                   "init_scale × a (semi-)orthogonal matrix.",
    "package.module:function": "A user's `package.module:function(input_dim, output_dim, **kwargs)` returning an "
                               "nn.Module.",
    "quadratic": "noisy quadratic: ½ Σ h_i (θ_i − x_i)², x_i ~ N(0, σ²/h_i); exact theory available",
}

# keyed as a config names them; `file` and `callable` are how hpconj.tasks.data.LOADERS knows the last two
DATASETS = {
    "teacher": "x ~ N(0, I_d); logits = tanh(x·W1)·W2 with W ~ N(0, 1/fan_in); y = argmax or the logits, + noise.",
    "linear_teacher": "x ~ N(0, I_d); y = W·x + noise, W with the given singular values (Saxe et al. 2014); "
                      "regression.",
    "digits": "scikit-learn's bundled 8×8 digits: 1,797 examples, 64 features, 10 classes.",
    "mnist1d": "mnist1d generated offline with its default arguments (seed 42): 5,000 examples, 40 features.",
    "path.npz | path.csv": "`.npz` with arrays `x` and `y` (or `X`, `Y`); `.csv` with a header, target "
                           "`y`/`target`/last.",
    "package.module:function": "A user's function returning (x, y) or {'x': ..., 'y': ...}.",
}

# examples in the named data sets (hpconj.tasks.data loads them; tests/test_startup.py checks these)
EXAMPLES = {"digits": 1797, "mnist1d": 5000}
FEATURES = {"digits": 64, "mnist1d": 40}


def example_count(data: Any) -> int | None:
    """Examples in a config's data set without loading it; None for a user's file or function."""
    if data.name in EXAMPLES:
        return EXAMPLES[data.name]
    return getattr(data, "examples", None) if data.name in ("teacher", "linear_teacher") else None


def train_examples(task: Any) -> int | None:
    """Training examples of a supervised task's split (hpconj.tasks.data.build_dataset's), without
    loading the data; None when only loading tells (a user's file or function)."""
    n = example_count(task.data)
    return None if n is None else n - max(1, int(round(task.val_fraction * n)))


def described(task: Any) -> str:
    """The task in words as hpconj.tasks.build_task describes it ('mlp 64-64-64-10 on digits (1438
    train, 10 classes)'), without loading the data; the widths alone where the output size is only
    known once the data is (a teacher's classes are the labels its draw produced)."""
    if task.model == "quadratic":
        return f"quadratic d={task.dim} h∈[{task.h_min:g}, {task.h_max:g}] σ={task.sigma:g}"
    data, n_train = task.data, train_examples(task)
    if data.name in FEATURES:
        shape, kind = (FEATURES[data.name], 10), "10 classes"
    elif data.name == "linear_teacher" or (data.name == "teacher" and data.kind == "regression"):
        shape, kind = (data.input_dim, data.outputs), f"regression ({data.outputs} outputs)"
    else:
        return f"{task.model} width {task.width} depth {task.depth} on {data.name} ({n_train} train)"
    hidden = task.depth if task.model == "mlp" else max(task.depth - 1, 0)
    widths = "-".join(str(w) for w in [shape[0], *[task.width] * hidden, shape[1]])
    return f"{task.model} {widths} on {data.name} ({n_train} train, {kind})"


def has_classes(data: Any) -> bool:
    """Whether a built-in data set's targets are classes (val_error is defined)."""
    if data.name == "teacher":
        return data.kind == "classification"
    return data.name in EXAMPLES
