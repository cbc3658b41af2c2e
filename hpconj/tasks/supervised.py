"""Networks trained on a finite data set: `mlp`, `deep_linear`, or a user's `module:function`.

Loss: cross-entropy for classes, mean squared error for regression targets; both are means over
the batch. Example order: batches are consecutive chunks of one permutation per epoch (the
last partial chunk is dropped, so every step sees exactly B examples).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpconj.config import Budget, DeepLinearTask, MlpTask, UserModelTask, resolve_callable
from hpconj.softmax import log_softmax_rows
from hpconj.tasks.base import Metrics, TaskError, order_generator, seeded_init
from hpconj.tasks.data import Dataset

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
_EVAL_CHUNK = 8192


def build_mlp(spec: MlpTask, input_dim: int, output_dim: int) -> nn.Module:
    """input → `depth` × (Linear(width) → activation) → Linear(output); init per `init` × `init_scale`."""
    layers: list[nn.Module] = []
    fan_in = input_dim
    for _ in range(spec.depth):
        layers += [nn.Linear(fan_in, spec.width), ACTIVATIONS[spec.activation]()]
        fan_in = spec.width
    layers.append(nn.Linear(fan_in, output_dim))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            initialise(layer, spec.init, spec.init_scale)
    if spec.mup_base_width is not None:
        return mup_mlp(layers, spec.width / spec.mup_base_width)
    return nn.Sequential(*layers)


class WidthScale(nn.Module):
    """x / m before μP's readout (the mup package's MuReadout with output_mult 1)."""

    def __init__(self, width_mult: float):
        super().__init__()
        self.width_mult = width_mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.width_mult


def mup_mlp(layers: list[nn.Module], width_mult: float) -> nn.Sequential:
    """μP (Yang et al. 2022, Table 3; the mup package's `set_base_shapes` with a MuReadout) of an MLP
    built with the standard init, at width multiplier m = width / base_width:
        hidden layers (fan-in grows with width): bias ×√m
        readout: weight and bias ×√m, input divided by m (so its effective weight is W/√m·1/√m)
    and every parameter marked `mup = (kind, m)` for the optimizer's per-layer lr (hpconj.optim.
    lr_scales): vector-like (one dimension grows: input weight and bias, hidden biases, readout
    weight), matrix-like (both: hidden weights), fixed (neither: readout bias). At m = 1 this is
    the standard model, bit for bit (no division layer, no multiplication)."""
    linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
    root = math.sqrt(width_mult)
    with torch.no_grad():
        for layer in linears[1:]:
            if width_mult != 1.0:
                layer.bias.mul_(root)
        if width_mult != 1.0:
            linears[-1].weight.mul_(root)
    for i, layer in enumerate(linears):
        first, last = i == 0, i == len(linears) - 1
        layer.weight.mup = ("vector" if first or last else "matrix", width_mult)
        layer.bias.mup = ("fixed" if last else "vector", width_mult)
    if width_mult != 1.0:
        layers = layers[:-1] + [WidthScale(width_mult), layers[-1]]
    return nn.Sequential(*layers)


def initialise(layer: nn.Linear, init: str, scale: float) -> None:
    """The layer's weight W [fan_out, fan_in] (its bias zeroed except under `default`):
        default     PyTorch's U(±1/√fan_in) for W and b, then W ×= scale (untouched at scale 1)
        gaussian    W ~ N(0, scale²/fan_in)
        orthogonal  W = scale × a (semi-)orthogonal matrix (torch.nn.init.orthogonal_)"""
    with torch.no_grad():
        if init == "default":
            if scale != 1.0:
                layer.weight.mul_(scale)
            return
        if init == "gaussian":
            nn.init.normal_(layer.weight, std=scale / math.sqrt(layer.in_features))
        else:
            nn.init.orthogonal_(layer.weight, gain=scale)
        if layer.bias is not None:
            layer.bias.zero_()


def build_deep_linear(spec: DeepLinearTask, input_dim: int, output_dim: int) -> nn.Module:
    """Saxe's deep linear network: `depth` bias-free layers, W ~ N(0, init_scale² / fan_in), or
    init_scale × a (semi-)orthogonal matrix with `init: orthogonal`."""
    dims = [input_dim] + [spec.width] * (spec.depth - 1) + [output_dim]
    layers = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        layer = nn.Linear(fan_in, fan_out, bias=False)
        if spec.init == "orthogonal":
            initialise(layer, "orthogonal", spec.init_scale)
        else:
            nn.init.normal_(layer.weight, std=spec.init_scale / math.sqrt(fan_in))
        layers.append(layer)
    return nn.Sequential(*layers)


def build_user_model(spec: UserModelTask, input_dim: int, output_dim: int) -> nn.Module:
    """A user's `package.module:function(input_dim, output_dim, **kwargs)` returning an nn.Module."""
    module = resolve_callable(spec.model)(input_dim, output_dim, **spec.kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{spec.model} must return a torch.nn.Module, got {type(module).__name__}")
    return module


MODEL_BUILDERS: dict[str, Callable[[Any, int, int], nn.Module]] = {
    "mlp": build_mlp,
    "deep_linear": build_deep_linear,
    "package.module:function": build_user_model,
}


def model_builder(spec: MlpTask | DeepLinearTask | UserModelTask) -> Callable[[Any, int, int], nn.Module]:
    if isinstance(spec, MlpTask):
        return build_mlp
    if isinstance(spec, DeepLinearTask):
        return build_deep_linear
    return build_user_model


@dataclass(frozen=True)
class SupervisedTask:
    spec: MlpTask | DeepLinearTask | UserModelTask
    data: Dataset
    description: str

    def steps(self, budget: Budget, batch_size: int) -> int:
        return budget.steps_for(batch_size, self.data.n_train)

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size > self.data.n_train:
            raise TaskError(f"batch size {batch_size} exceeds the {self.data.n_train} training examples")

    def init_model(self, seed: int) -> nn.Module:
        builder = model_builder(self.spec)
        return seeded_init(lambda: builder(self.spec, self.data.input_dim, self.data.output_dim), seed)

    def batch_indices(self, seed: int, batch_size: int, steps: int) -> Iterator[torch.Tensor]:
        """Consecutive chunks of one fresh permutation per epoch, from the seed's order RNG."""
        gen = order_generator(seed)
        per_epoch = self.data.n_train // batch_size
        done = 0
        while done < steps:
            perm = torch.randperm(self.data.n_train, generator=gen)
            for k in range(min(per_epoch, steps - done)):
                yield perm[k * batch_size : (k + 1) * batch_size]
            done += per_epoch

    def batch_stream(self, seed: int, batch_size: int, steps: int, device: torch.device) -> Iterator[Any]:
        for idx in self.batch_indices(seed, batch_size, steps):
            idx = idx.to(device)
            yield self.data.x_train[idx], self.data.y_train[idx]

    def loss_of(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.data.classes:
            return F.cross_entropy(output, target)
        return F.mse_loss(output, target)

    def batch_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return self.loss_of(model(x), y)

    @torch.no_grad()
    def _dataset_losses(self, outputs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                        trials: int) -> list[tuple[float, float]]:
        """Mean loss and error rate of each of `trials` models over a whole data set.

        outputs(chunk) → [trials, len(chunk), C]; chunks of _EVAL_CHUNK examples bound memory.
        One reduction for both engines, so their metrics agree to the bit.
        """
        totals, wrong = [0.0] * trials, [0] * trials
        for start in range(0, len(x), _EVAL_CHUNK):
            out = outputs(x[start : start + _EVAL_CHUNK])
            tgt = y[start : start + _EVAL_CHUNK]
            if self.data.classes:
                # cross_entropy is nll_loss of log_softmax: the latter for all trials at once
                logp = log_softmax_rows(out.reshape(-1, out.shape[-1])).view(out.shape)
                for k in range(trials):
                    totals[k] += float(F.nll_loss(logp[k], tgt)) * len(tgt)
            else:
                for k in range(trials):
                    totals[k] += float(self.loss_of(out[k], tgt)) * len(tgt)
            if self.data.classes:  # integer counts: one call for all trials gives the same numbers
                for k, count in enumerate((out.argmax(dim=2) != tgt).sum(1).tolist()):
                    wrong[k] += count
        return [(totals[k] / len(x), wrong[k] / len(x) if self.data.classes else math.nan) for k in range(trials)]

    def reference_loss(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        ((loss, _),) = self._dataset_losses(lambda b: model(b).unsqueeze(0), self.data.x_train, self.data.y_train, 1)
        model.train(was_training)
        return loss

    curve_needs_model = False

    def curve_loss(self, model: nn.Module, mean_batch_loss: float) -> float:
        return mean_batch_loss

    def evaluate(self, model: nn.Module) -> Metrics:
        model.eval()
        (metrics,) = self.evaluate_outputs(lambda b: model(b).unsqueeze(0), 1)
        model.train()
        return metrics

    def evaluate_outputs(self, outputs: Callable[[torch.Tensor], torch.Tensor], trials: int) -> list[Metrics]:
        """Final metrics of `trials` models at once, given outputs(x) → [trials, len(x), C]."""
        train = self._dataset_losses(outputs, self.data.x_train, self.data.y_train, trials)
        val = self._dataset_losses(outputs, self.data.x_val, self.data.y_val, trials)
        return [Metrics(t[0], v[0], v[1]) for t, v in zip(train, val)]

    def to(self, device: torch.device) -> SupervisedTask:
        return replace(self, data=self.data.to(device))
