"""Hand-written stacked forward and backward for the built-in networks (mlp, deep_linear).

torch.func's vmap(grad(...)) works for any model but costs milliseconds of Python per step,
which dominates small models. For the built-in networks this module computes the same
gradients with a handful of batched kernels, op for op as autograd does for one trial, so the
weights stay bit-identical to torch.optim.SGD on a single model (tested):

    forward, layer l:   z_l = b_l + h_{l−1}·W_lᵀ          (baddbmm; addmm in the reference)
                        (h_{l−1} / m first where μP's WidthScale precedes the layer)
                        h_l = act(z_l)
    loss:               cross-entropy: log_softmax over rows, mean over the batch of −log p[y]
                        regression:    mean over batch and outputs of (z − y)²
    backward:           G = ∂loss/∂z_L  (aten's own log_softmax / mse backward formulas)
                        ∂W_l = Gᵀ·h_{l−1}   ∂b_l = Σ_batch G   G ← act'(z_{l−1}) ⊙ (G·W_l)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpconj.softmax import transposed_agrees, transposed_log_softmax, transposed_log_softmax_backward
from hpconj.tasks.supervised import WidthScale

aten = torch.ops.aten

_ACTIVATIONS: dict[type, str] = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.GELU: "gelu"}


@dataclass(frozen=True)
class Layer:
    weight: str  # parameter name, e.g. "model.0.weight"
    bias: str | None
    activation: str | None  # applied after this layer
    divisor: float | None = None  # the layer's input is divided by it first (μP's readout, WidthScale)


def layer_plan(model: nn.Module, prefix: str = "model.") -> list[Layer] | None:
    """The layers of a plain Sequential of Linear and ReLU/Tanh/GELU (and μP's WidthScale before a
    Linear), or None if it is anything else."""
    if type(model) is not nn.Sequential:
        return None
    layers: list[Layer] = []
    divisor: float | None = None
    for index, module in enumerate(model):
        if type(module) is WidthScale and divisor is None:
            divisor = module.width_mult
        elif type(module) is nn.Linear:
            bias = f"{prefix}{index}.bias" if module.bias is not None else None
            layers.append(Layer(f"{prefix}{index}.weight", bias, None, divisor))
            divisor = None
        elif type(module) in _ACTIVATIONS and layers and layers[-1].activation is None and divisor is None:
            if type(module) is nn.GELU and module.approximate != "none":
                return None
            last = layers[-1]
            layers[-1] = Layer(last.weight, last.bias, _ACTIVATIONS[type(module)], last.divisor)
        else:
            return None
    if not layers or layers[-1].activation is not None or divisor is not None:
        return None
    return layers


def _act_(name: str, z: torch.Tensor) -> torch.Tensor:
    """The activation of z, in place where the backward needs only the output (relu, tanh): one
    pass over memory instead of a fresh tensor, which on small layers costs as much as the GEMM."""
    if name == "relu":
        return z.relu_()
    if name == "tanh":
        return z.tanh_()
    return F.gelu(z)


def _act_backward_(name: str, grad: torch.Tensor, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """∂loss/∂pre from ∂loss/∂post, written over `grad`: the formulas autograd uses for each
    (relu and tanh from the output, gelu from the input), with their out= forms."""
    if name == "relu":
        return aten.threshold_backward.grad_input(grad, post, 0, grad_input=grad)
    if name == "tanh":
        return aten.tanh_backward.grad_input(grad, post, grad_input=grad)
    return aten.gelu_backward.grad_input(grad, pre, grad_input=grad)


@functools.lru_cache(maxsize=64)
def _per_target(batch: int, device: torch.device) -> torch.Tensor:
    """nll_loss's gradient at each target for a batch mean: −1/B, computed in float32 as torch does."""
    return (torch.tensor(-1.0, device=device) / torch.tensor(float(batch), device=device)).reshape(1, 1)


def _cross_entropy_and_grad(logits: torch.Tensor, targets: torch.Tensor, k: int, batch: int
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-trial batch-mean cross-entropy [K] of logits [K·B, C], and its gradient [K·B, C].

    log_softmax, nll_loss's gradient (mean: −1/B at each target, B as float32 like its
    total_weight) and log_softmax's backward, as autograd does for one trial; through the
    transposed kernels of hpconj/softmax.py where they give the same bits (several times faster
    with few classes)."""
    n, classes = logits.shape
    per_target = _per_target(batch, logits.device)
    if transposed_agrees(classes, logits.device, logits.dtype):
        logp_t = transposed_log_softmax(logits)  # [C, N′]
        picked = logp_t[:, :n].gather(0, targets.view(1, -1))
        seed_t = torch.zeros_like(logp_t)
        seed_t[:, :n].scatter_(0, targets.view(1, -1), per_target.expand(1, n))
        grad = transposed_log_softmax_backward(seed_t, logp_t)[:, :n].t().contiguous()
    else:
        logp = torch.log_softmax(logits, 1)
        picked = logp.gather(1, targets.view(-1, 1))
        seed = torch.zeros_like(logp)
        seed.scatter_(1, targets.view(-1, 1), per_target.expand(n, 1))
        grad = aten._log_softmax_backward_data(seed, logp, 1, torch.float32)
    return -picked.reshape(k, batch).mean(1), grad


_SUB_STACK_BYTES = 4 << 20  # one layer's activations of a sub-stack, on the CPU


def sub_stacks(trials: int, rows: int, width: int, device: torch.device) -> list[slice]:
    """Consecutive ranges of a stack's trials, each small enough that one layer's activations
    [trials, rows, width] (float32) fit in _SUB_STACK_BYTES; the whole stack on a GPU.

    Every product and reduction is per trial, so with one thread per worker (hpconj's default on
    the CPU) a trial's bits do not depend on which of its stack's trials it is computed with
    (tested). Measured on one thread, whole stacks whose
    layers outgrow the caches run well below the kernels' speed (a unit of 64 trials, B = 512,
    width 256: 88 GFLOP/s, against 114–123 in sub-stacks of 1–8 MiB); below the budget,
    splitting only adds kernel calls."""
    if device.type != "cpu":
        return [slice(0, trials)]  # one launch per layer is what counts on a GPU
    size = max(1, _SUB_STACK_BYTES // (4 * rows * width))
    if trials <= size:
        return [slice(0, trials)]
    return [slice(start, min(trials, start + size)) for start in range(0, trials, size)]


def _rows(tensors: dict[str, torch.Tensor], part: slice) -> dict[str, torch.Tensor]:
    return {name: value[part] for name, value in tensors.items()}


def _widest(layers: list[Layer], params: dict[str, torch.Tensor], inputs: int) -> int:
    return max([inputs] + [params[layer.weight].shape[1] for layer in layers])


def stacked_loss_and_grads(
    layers: list[Layer], params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, classes: int,
    out: dict[str, torch.Tensor], second: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Batch-mean losses [K] for stacked inputs x [K, B, d]; the gradients go into `out` [K, ...].

    Computed a sub-stack of trials at a time (`sub_stacks`), so that on the CPU each one's
    activations stay in cache; see `_loss_and_grads` for the arithmetic."""
    parts = sub_stacks(x.shape[0], x.shape[1], _widest(layers, params, x.shape[-1]), x.device)
    if len(parts) == 1:
        return _loss_and_grads(layers, params, x, y, classes, out, second)
    return torch.cat([
        _loss_and_grads(layers, _rows(params, part), x[part], y[part], classes, _rows(out, part),
                        None if second is None else _rows(second, part))
        for part in parts
    ])


def _loss_and_grads(
    layers: list[Layer], params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, classes: int,
    out: dict[str, torch.Tensor], second: dict[str, torch.Tensor] | None,
) -> torch.Tensor:
    """Batch-mean losses [K] for stacked inputs x [K, B, d]; the gradients go into `out` [K, ...].

    With `second`, also q = (1/B)·Σᵢ gᵢ², the mean squared per-example gradient: example i's own
    loss has gradient B·Gᵢ at the layer's output (G is that of the batch mean), so
    q_W[o, j] = (1/B)·Σᵢ (B·Gᵢ[o]·hᵢ[j])² = B·((G∘G)ᵀ·(h∘h))[o, j] and q_b = B·Σᵢ Gᵢ∘Gᵢ.

    Every product is per trial (bmm). Trials of one seed share their inputs, so the first
    layer could be one wide GEMM per seed; measured, it gave the same bits but no speed once the
    next layer had to read its strided output. The activations are applied in place and the
    cross-entropy goes through hpconj.softmax's transposed kernels: on small layers these
    memory-bound passes cost as much as the products, and both give autograd's bits (tested).
    """
    k, batch = x.shape[0], x.shape[1]
    inputs, pres, posts = [], [], []
    h = x
    for layer in layers:
        weight = params[layer.weight]
        if layer.divisor is not None:
            h = h / layer.divisor
        inputs.append(h)
        if layer.bias is not None:
            z = torch.baddbmm(params[layer.bias].unsqueeze(1), h, weight.transpose(1, 2))
        else:
            z = torch.bmm(h, weight.transpose(1, 2))
        pres.append(z)  # (the same tensor as posts[-1] when the activation ran in place)
        h = _act_(layer.activation, z) if layer.activation else z
        posts.append(h)
    logits = h
    outputs = logits.shape[-1]
    if classes:
        losses, grad = _cross_entropy_and_grad(logits.reshape(k * batch, outputs), y.reshape(-1), k, batch)
        grad = grad.view(k, batch, outputs)
    else:
        diff = logits - y
        losses = (diff * diff).mean((1, 2))
        # mse_loss backward (mean): 2/numel · (z − y) · 1, numel of one trial's batch
        grad = diff.mul(2.0 / (batch * outputs)).mul_(1.0)
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        torch.bmm(grad.transpose(1, 2), inputs[index], out=out[layer.weight])
        if layer.bias is not None:
            torch.sum(grad, 1, out=out[layer.bias])
        if second is not None:
            squared = grad * grad
            torch.bmm(squared.transpose(1, 2), inputs[index] * inputs[index], out=second[layer.weight])
            second[layer.weight].mul_(batch)
            if layer.bias is not None:
                torch.sum(squared, 1, out=second[layer.bias]).mul_(batch)
        if index > 0:
            grad = torch.bmm(grad, params[layer.weight])
            if layer.divisor is not None:  # DivBackward: the gradient divided as the input was
                grad = grad / layer.divisor
            below = layers[index - 1]
            if below.activation:
                grad = _act_backward_(below.activation, grad, pres[index - 1], posts[index - 1])
    return losses


_LOGIT_ROWS = 256  # inputs per block of the stacked forward pass


def stacked_logits(layers: list[Layer], params: dict[str, torch.Tensor], x: torch.Tensor,
                   rows: int = _LOGIT_ROWS) -> torch.Tensor:
    """Outputs [K, N, C] of every trial on the same inputs x [N, d] (forward only).

    On the CPU, blocks of `rows` inputs go through all layers one after the other, so that each
    layer's [K, rows, width] activations stay in cache instead of a whole data set's (tens of MB)
    streaming through memory. A row's outputs do not depend on how many rows share its product
    as long as there are enough of them (MKL takes other code paths for a handful of rows), so
    every block has at least `rows` rows: the last one absorbs the remainder (tested against one
    product over all rows for every remainder). Wide layers also go a sub-stack of trials at a
    time (`sub_stacks`, for blocks of up to 2·rows rows)."""
    k = next(iter(params.values())).shape[0]
    n = len(x)
    if x.device.type != "cpu" or n < 2 * rows:  # on a GPU, one launch per layer is what counts
        return _block_logits(layers, params, x.unsqueeze(0).expand(k, -1, -1))
    bounds = list(range(0, n - n % rows - rows, rows)) + [n - n % rows - rows, n]
    out: torch.Tensor | None = None
    for part in sub_stacks(k, 2 * rows, _widest(layers, params, x.shape[-1]), x.device):
        trials, count = _rows(params, part), part.stop - part.start
        for start, stop in zip(bounds[:-1], bounds[1:]):
            block = _block_logits(layers, trials, x[start:stop].unsqueeze(0).expand(count, -1, -1))
            if out is None:
                out = block.new_empty(k, n, block.shape[-1])
            out[part, start:stop] = block
    return out


def _block_logits(layers: list[Layer], params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        weight = params[layer.weight]
        if layer.divisor is not None:
            h = h / layer.divisor
        if layer.bias is not None:
            h = torch.baddbmm(params[layer.bias].unsqueeze(1), h, weight.transpose(1, 2))
        else:
            h = torch.bmm(h, weight.transpose(1, 2))
        if layer.activation:
            h = _act_(layer.activation, h)
    return h
