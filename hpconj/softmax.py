"""Log-softmax over a few classes, bit for bit as torch computes it, at a fraction of the cost.

torch's CPU kernel for log_softmax over the last dimension handles one row at a time; with 10
classes that is ~250 ns a row, as much as a quarter of a small network's training step. For
each row it computes, with classes fewer than the vector width (16 floats with AVX-512):

    m = max_j z_j;   s = ((e_0 + e_1) + e_2) + … + e_{C−1},  e_j = exp(z_j − m);
    log p_j = (z_j − m) − log s

in exactly that order (one vector lane accumulates the classes one by one). torch's kernel for
any other dimension does the same per column — the same max, the same running sum over the
classes in the same order, the same vectorized exp and log — but for a whole row of columns
at once. So the logits are laid out transposed, [C, N] with N padded to a multiple of the
vector width (no scalar tail, whose std::exp may round differently), and reduced over dim 0.
The backward, ∂/∂z_j = g_j − exp(log p_j)·Σ_i g_i, is the same arithmetic in both kernels.

Whether the two layouts agree depends on the vector width of the machine's kernels (with
AVX2's 8 lanes, 10 classes no longer fit one vector and the row kernel sums in another
order), so `transposed_agrees` checks them against each other on random logits once per
process and class count, and callers fall back to the row kernel where they differ.
"""
from __future__ import annotations

import functools

import torch

aten = torch.ops.aten
_PAD = 64  # columns padded to a multiple of every vector width torch uses on the CPU


def transposed_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax of the rows of logits [N, C], returned transposed and padded: [C, N′ ≥ N]."""
    n, classes = logits.shape
    padded = logits.new_zeros(classes, n + (-n) % _PAD)
    padded[:, :n].copy_(logits.t())
    return torch.log_softmax(padded, 0)


def transposed_log_softmax_backward(grad_t: torch.Tensor, logp_t: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to the logits, [C, N′], of the loss whose gradient with respect to
    the log-probabilities is grad_t [C, N′] (zero in the padding)."""
    return aten._log_softmax_backward_data(grad_t, logp_t, 0, logp_t.dtype)


def log_softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """torch.log_softmax(logits, 1) for logits [N, C], the same bits, through the transposed
    kernel where it agrees with the row kernel."""
    if not transposed_agrees(logits.shape[1], logits.device, logits.dtype):
        return torch.log_softmax(logits, 1)
    return transposed_log_softmax(logits)[:, : logits.shape[0]].t().contiguous()


@functools.cache
def transposed_agrees(classes: int, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether the transposed kernels give the row kernels' bits here: CPU float32 only, checked
    on 4,096 rows of random logits at several scales (forward and backward)."""
    if device.type != "cpu" or dtype != torch.float32 or classes < 2:
        return False
    generator = torch.Generator().manual_seed(0)
    rows = 4096
    scale = torch.tensor([0.01, 1.0, 10.0, 100.0], dtype=dtype).repeat_interleave(rows // 4).unsqueeze(1)
    logits = torch.randn(rows, classes, generator=generator, dtype=dtype) * scale
    targets = torch.randint(classes, (rows,), generator=generator)
    expected = torch.log_softmax(logits, 1)
    logp_t = transposed_log_softmax(logits)
    if not torch.equal(logp_t[:, :rows].t(), expected):
        return False
    seed = torch.zeros_like(expected)
    seed.scatter_(1, targets.unsqueeze(1), -1.0 / rows)
    seed_t = torch.zeros_like(logp_t)
    seed_t[:, :rows].copy_(seed.t())
    grad = transposed_log_softmax_backward(seed_t, logp_t)[:, :rows].t()
    return torch.equal(grad, aten._log_softmax_backward_data(seed, expected, 1, torch.float32))
