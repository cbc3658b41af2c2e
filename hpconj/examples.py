"""The commented example config that `hpconj init` writes."""
from __future__ import annotations

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
