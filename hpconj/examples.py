"""The commented example config that `hpconj init` writes."""
from __future__ import annotations

import functools
import math
import types
from typing import Any

EXAMPLE_CONFIG = """\
# hpconj sweep config. Check it with `hpconj validate hpconj.yaml`, run it with `hpconj sweep hpconj.yaml`.
name: example                     # results go to results/<name>/ unless --out is given
task:
  model: mlp                      # mlp | deep_linear | quadratic | "package.module:function"
  width: 64                       # hidden units per layer (mlp, deep_linear)
  depth: 2                        # hidden layers (mlp); linear layers (deep_linear)
  activation: relu                # relu | tanh | gelu (mlp)
  data: digits                    # teacher | digits | mnist1d | path/to/file.npz|.csv | "pkg.mod:fn"
  val_fraction: 0.2               # held out with a fixed seed (data_seed: 0)
optimizer: momentum               # sgd | momentum | nesterov | adam | rmsprop | adagrad | mcallester
# adam: {beta2: 0.999, eps: 1.0e-8}   # settings of an adaptive optimizer (adam's β1 is sweep.momentum)
parameterizations: [standard, conjugate]   # standard | conjugate | sqrt (adaptive optimizers only)
reference_batch_size: 8           # B_ref of conjugate and sqrt (conjugate's lr is per B_ref examples)
budget: {epochs: 4}               # exactly one of: epochs | examples | steps
sweep:
  lr: {log2_range: [-10, 1], step: 0.5}   # or {log2_range: [a, b], num: N}, {values: [...]}, {log_range: [1e-4, 1], num: N}
  batch_size: [8, 32, 128]
  momentum: [0.0, 0.9]
seeds: 2                          # a count (0..n-1) or an explicit list
metric: {name: val_loss, goal: minimize}  # train_loss | val_loss | val_error
device: auto                      # auto | cpu | cuda | cuda:N
"""


# ----------------------------------------------------------------------------- user models
# Two models a user might bring (`task.model: "hpconj.examples:conv_net"`), used by the tests and
# benchmarks of both engines on models that are not the built-in MLP. Each is a plain nn.Module
# built from (input_dim, output_dim, **kwargs), as every user model is; torch is imported when one
# is built, so that `hpconj init` (which reads EXAMPLE_CONFIG) stays torch-free.


def conv_net(input_dim: int, output_dim: int, channels: int = 16, kernel: int = 3) -> Any:
    """Two convolutions (`channels`, `kernel`, 'same' padding, ReLU) → global average → Linear: a
    2-D image when input_dim is a square (digits: 8×8), else a 1-D signal (mnist1d: 40)."""
    from torch import nn

    side = math.isqrt(input_dim)
    conv, shape = (nn.Conv2d, (1, side, side)) if side * side == input_dim else (nn.Conv1d, (1, input_dim))
    return nn.Sequential(
        nn.Unflatten(1, shape),
        conv(1, channels, kernel, padding=kernel // 2), nn.ReLU(),
        conv(channels, channels, kernel, padding=kernel // 2), nn.ReLU(),
        nn.Flatten(2), _layers().Mean(), nn.Linear(channels, output_dim),
    )


def attention_net(input_dim: int, output_dim: int, dim: int = 16, heads: int = 2, layers: int = 2,
                  patch: int = 4) -> Any:
    """A small transformer over the input cut into tokens of `patch` features (digits: 16 tokens of
    4): a linear embedding plus learned positions, `layers` pre-norm blocks (multi-head
    self-attention with `heads` heads, then a ReLU MLP of width 2·dim), the mean over tokens →
    LayerNorm → Linear."""
    return _layers().Transformer(input_dim, output_dim, dim, heads, layers, patch)


@functools.cache
def _layers() -> Any:
    """The example models' torch classes, defined on first use (so that importing this module, for
    `hpconj init`, imports no torch); a model is built where it trains, never pickled."""
    import torch
    from torch import nn

    class Mean(nn.Module):
        """The mean over the last dimension (global average pooling of a flattened feature map)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=-1)

    class Attention(nn.Module):
        """softmax(q·kᵀ/√d_head)·v per head, written out (no fused kernel: the same in both engines)."""

        def __init__(self, dim: int, heads: int):
            super().__init__()
            self.heads = heads
            self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, t, dim = x.shape
            q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
            weights = (q @ k.transpose(-1, -2) * (dim // self.heads) ** -0.5).softmax(dim=-1)
            return self.out((weights @ v).transpose(1, 2).reshape(n, t, dim))

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int):
            super().__init__()
            self.norm1, self.attention = nn.LayerNorm(dim), Attention(dim, heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attention(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class Transformer(nn.Module):
        def __init__(self, input_dim: int, output_dim: int, dim: int, heads: int, layers: int, patch: int):
            super().__init__()
            self.patch, self.tokens = patch, -(-input_dim // patch)
            self.embed = nn.Linear(patch, dim)
            self.position = nn.Parameter(0.02 * torch.randn(self.tokens, dim))  # the seeded global RNG
            self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, output_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pad = self.tokens * self.patch - x.shape[1]
            if pad:
                x = nn.functional.pad(x, (0, pad))
            h = self.embed(x.reshape(x.shape[0], self.tokens, self.patch)) + self.position
            return self.head(self.norm(self.blocks(h).mean(dim=1)))

    return types.SimpleNamespace(Mean=Mean, Transformer=Transformer)
