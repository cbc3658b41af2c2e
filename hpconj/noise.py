"""The gradient noise scale B_simple (McCandlish et al. 2018, "An empirical model of large-batch training").

With ℓᵢ the loss of example i and gᵢ = ∇ℓᵢ(θ) its gradient, the true gradient is G = E[gᵢ] and the
per-example covariance Σ = E[(gᵢ − G)(gᵢ − G)ᵀ]. The gradient of a batch of B examples (a mean,
as `Task.batch_loss` is) then has E|g_B|² = |G|² + tr(Σ)/B, and

    B_simple = tr(Σ) / |G|²

is the batch size at which the noise term equals the signal term. Far below it a step's
progress grows ~linearly with B (so the optimal lr grows with B: lr and B are conjugate); far
above it the gradient is nearly exact and the optimal lr saturates.

Estimate, from n per-example gradients gᵢ at initialisation, accumulated in float64:

    S1 = Σᵢ gᵢ,   S2 = Σᵢ |gᵢ|²,   Ḡ = S1 / n,
    tr Σ̂  = (S2 − n·|Ḡ|²) / (n − 1)          (unbiased: the sample covariance's trace),
    |G|²̂  = |Ḡ|² − tr Σ̂ / n                  (unbiased, since E|Ḡ|² = |G|² + tr Σ / n),
    B̂_simple = tr Σ̂ / |G|²̂                   (+inf when |G|²̂ ≤ 0: no signal is resolved).

The ratio itself is biased (a ratio of unbiased estimates); its sampling error shrinks like 1/√n.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_leaves, tree_map

from hpconj.config import QuadraticTask
from hpconj.engine.base import EXAMPLE_GRADIENT_FLOATS
from hpconj.records import NoiseEstimate
from hpconj.tasks.base import LossOf, Task, example_gradients
from hpconj.tasks.quadratic import curvatures
from hpconj.tasks.supervised import SupervisedTask

log = logging.getLogger("hpconj")

MAX_FLOATS = EXAMPLE_GRADIENT_FLOATS
"""At most this many per-example gradient floats at once (chunk × n_params): 64 MiB in float32."""

NOISE_STREAM_OFFSET = 7_777_777
"""Streamed tasks (the quadratic) draw their examples from the stream of seed + this offset: fresh
examples of the same distribution, never the ones a trial of the seed trains on."""

Method = Literal["auto", "vmap", "loop"]

LOOP_PARAMS = 32_768
"""`method="auto"` takes per-example gradients in a plain loop for a built-in model (mlp,
deep_linear, the quadratic) of at most this many parameters on the CPU: torch.func's first
vmap(grad) imports torch._dynamo (over a second), while the loop takes ~0.2 ms per example at this
size (0.2 s for 1,024). A user's model may take many small operations per example (a transformer:
~1 ms), so it keeps vmap. A fixed rule of the config, not of what happens to be imported, so that
an estimate's bits do not depend on the process."""


def built_in(task: Task) -> bool:
    """Whether the task's model is one of hpconj's (not a user's `package.module:function`)."""
    from hpconj.config import BUILTIN_MODELS

    return getattr(getattr(task, "spec", None), "model", None) in BUILTIN_MODELS


def batch_device(batch: Any) -> torch.device:
    """The device of a batch's first tensor."""
    return next(t.device for t in tree_leaves(batch) if isinstance(t, torch.Tensor))


def _length(batch: Any) -> int:
    sizes = {int(t.shape[0]) for t in tree_leaves(batch) if isinstance(t, torch.Tensor)}
    if len(sizes) != 1:
        raise ValueError(f"batch leaves must share their first dimension, got sizes {sorted(sizes)}")
    return sizes.pop()


def _rows(batch: Any, start: int, stop: int) -> Any:
    return tree_map(lambda t: t[start:stop], batch)


def noise_statistics(n: int, mean_norm_sq: float, sum_norm_sq: float) -> tuple[float, float, float]:
    """(tr Σ̂, |G|²̂, B̂_simple) from n, |Ḡ|² and S2 = Σᵢ|gᵢ|² (the module docstring's formulas)."""
    if n < 2:
        raise ValueError(f"the noise scale needs at least 2 examples, got {n}")
    trace = (sum_norm_sq - n * mean_norm_sq) / (n - 1)
    signal = mean_norm_sq - trace / n
    b_simple = trace / signal if signal > 0 else math.inf
    return float(trace), float(signal), float(b_simple)


def _vmap_gradients(task: Task, model: nn.Module, batch: Any, n: int, chunk: int) -> Iterator[list[torch.Tensor]]:
    """Per-example gradients, `chunk` examples at a time: one [chunk, *shape] tensor per parameter."""
    wrapper = LossOf(task, model)
    names = [f"model.{name}" for name, p in model.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in wrapper.named_parameters() if name in names}

    def one_loss(values: dict[str, torch.Tensor], example: Any) -> torch.Tensor:
        # vmap strips the example dimension; the task's loss expects a batch of one
        return functional_call(wrapper, values, (tree_map(lambda t: t.unsqueeze(0), example),))

    # "different": a model with dropout draws its own mask per example, as in a batch
    per_example = vmap(grad(one_loss), in_dims=(None, 0), randomness="different")
    for start in range(0, n, chunk):
        grads = per_example(params, _rows(batch, start, min(start + chunk, n)))
        yield [grads[name] for name in names]


def _loop_gradients(task: Task, model: nn.Module, batch: Any, n: int,
                    chunk: int = 1) -> Iterator[list[torch.Tensor]]:
    """The same gradients one example at a time with torch.autograd.grad (for small models, and
    those vmap rejects), handed on `chunk` examples at a time as vmap's are."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows: list[list[torch.Tensor]] = []
    for grads in example_gradients(task, model, _rows(batch, 0, n), params):
        rows.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])
        if len(rows) == chunk:
            yield [torch.stack(column) for column in zip(*rows)]
            rows = []
    if rows:
        yield [torch.stack(column) for column in zip(*rows)]


def _accumulate(chunks: Iterator[list[torch.Tensor]]) -> tuple[int, float, float]:
    """n, |Ḡ|² and S2 over every chunk, in float64."""
    s1: list[torch.Tensor] | None = None
    s2 = 0.0
    n = 0
    for grads in chunks:
        n += int(grads[0].shape[0])
        sums = [g.sum(dim=0, dtype=torch.float64) for g in grads]
        s1 = sums if s1 is None else [a + b for a, b in zip(s1, sums)]
        s2 += sum(float(g.double().pow(2).sum()) for g in grads)
    if s1 is None or n == 0:
        raise ValueError("no examples")
    mean_norm_sq = sum(float((s / n).pow(2).sum()) for s in s1)
    return n, mean_norm_sq, s2


def gradient_noise_scale(task: Task, model: nn.Module, batch: Any, *, method: Method = "auto",
                         max_floats: int = MAX_FLOATS) -> tuple[float, float, float]:
    """(tr Σ̂, |G|²̂, B̂_simple) of `model` from the per-example gradients of `task.batch_loss` on `batch`.

    `batch` is what the task's batch_stream yields (a tensor [n, d], or a tuple (x, y) of tensors
    sharing their first dimension); example i is every leaf sliced to [i:i+1]. Gradients come from
    `vmap(grad(...))` over examples in chunks of at most `max_floats` gradient floats; `method="auto"`
    loops over examples with torch.autograd.grad for a model of at most LOOP_PARAMS parameters on the
    CPU, and falls back to that loop when vmap raises (a model it cannot transform); "vmap" and
    "loop" force one path. Parameters that do not require grad are left out.
    The model is used in its current mode (train mode at initialisation, as in training).
    """
    n = _length(batch)
    if n < 2:
        raise ValueError(f"the noise scale needs at least 2 examples, got {n}")
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_params == 0:
        raise ValueError("the model has no parameters that require grad")
    chunk = max(1, min(n, max_floats // n_params))
    if method == "auto" and n_params <= LOOP_PARAMS and batch_device(batch).type == "cpu" and built_in(task):
        method = "loop"  # a small built-in model on the CPU: faster than vmap's first call (see LOOP_PARAMS)
    if method in ("auto", "vmap"):
        try:
            return noise_statistics(*_accumulate(_vmap_gradients(task, model, batch, n, chunk)))
        except Exception as exc:
            if method == "vmap":
                raise
            log.info("noise scale: vmap over examples failed (%s: %s); computing per-example gradients in a loop",
                     type(exc).__name__, exc)
    return noise_statistics(*_accumulate(_loop_gradients(task, model, batch, n, chunk)))


def noise_examples(task: Task, examples: int) -> int:
    """How many examples `measure_noise_scale` uses: `examples`, capped at a finite training set."""
    if isinstance(task, SupervisedTask):
        return min(examples, task.data.n_train)
    return examples


def noise_batch(task: Task, seed: int, examples: int, device: torch.device) -> Any:
    """The examples B_simple of `seed` is measured on (task already on `device`).

    A finite training set: all of it when `examples` ≥ n_train, else the first `examples` of the
    seed's first epoch permutation (the training distribution is the training set). A streamed
    task (the quadratic): `examples` fresh draws from the stream of seed + NOISE_STREAM_OFFSET,
    which is not the stream any trial of the seed trains on.
    """
    if isinstance(task, SupervisedTask):
        if examples >= task.data.n_train:
            return task.data.x_train, task.data.y_train
        return next(iter(task.batch_stream(seed, examples, 1, device)))
    return next(iter(task.batch_stream(seed + NOISE_STREAM_OFFSET, examples, 1, device)))


def measure_noise_scale(task: Task, seed: int, examples: int, device: torch.device, *,
                        method: Method = "auto", model: nn.Module | None = None) -> NoiseEstimate:
    """B_simple of seed's initial model (task.init_model(seed)), or of `model` (a trained one), on
    `noise_batch(task, seed, examples)`.

    Touches no RNG that trials use: init_model forks the global RNG, streams own their generators,
    and whatever the model draws itself (dropout) comes from a fork of the global RNG seeded with
    `seed`, so the estimate is the same on every run.
    """
    task = task.to(device)
    model = (task.init_model(seed) if model is None else model).to(device)
    batch = noise_batch(task, seed, examples, device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        trace, signal, b_simple = gradient_noise_scale(task, model, batch, method=method)
    return NoiseEstimate(seed, _length(batch), trace, signal, b_simple)


def exact_noise_scale(spec: QuadraticTask) -> float:
    """B_simple of the noisy quadratic at θ = θ₀, exactly.

    Per-example loss ½ Σᵢ hᵢ(θᵢ − xᵢ)² with xᵢ ~ N(0, σ²/hᵢ), so gᵢ = hᵢ(θᵢ − xᵢ): G = h·θ₀ and
    Σ = diag(hᵢ²·σ²/hᵢ) = diag(hᵢσ²), hence B_simple = σ²·Σhᵢ / (θ₀²·Σhᵢ²) (+inf when θ₀ = 0).
    """
    h = curvatures(spec)
    signal = spec.theta0**2 * float(np.sum(h * h))
    noise = spec.sigma**2 * float(np.sum(h))
    return noise / signal if signal > 0 else math.inf
