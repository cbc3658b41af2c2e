"""How fast can the cohort engine's step be at all? Its matrix products alone, nothing else.

    .venv/bin/python benchmarks/gemm_ceiling.py [--trials 64] [--repeat 30]

Runs, in one thread, exactly the batched products of one stacked training step of
`benchmarks/engine.py`'s network (MLP 64-64-64-10; K trials; batch B), in the step's order and
on buffers of the step's sizes, but without any of its elementwise work (bias, activation,
loss, optimizer update): forward z_l = b_l + h·W_lᵀ for each layer, then ∂W_l = Gᵀ·h and
G·W_l going down. Prints their GFLOP/s and the share of a float32 matmul peak measured in the
same run. Whatever the step does besides these products only adds time, so this share bounds
the share of peak the whole step (and a fortiori the whole sweep, evaluation and bookkeeping
included) can reach with these kernels.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from engine import matmul_peak

WIDTHS = [64, 64, 64, 10]


def step_products(k: int, batch: int) -> tuple[Callable[[], None], float]:
    """The step's products as one callable, and their FLOPs."""
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(k, b, a, generator=gen) * 0.1 for a, b in zip(WIDTHS[:-1], WIDTHS[1:])]
    biases = [torch.randn(k, b, generator=gen) for b in WIDTHS[1:]]
    x = torch.randn(k, batch, WIDTHS[0], generator=gen)
    grads_out = [torch.randn(k, batch, b, generator=gen) for b in WIDTHS[1:]]
    weight_grads = [torch.empty_like(w) for w in weights]

    def run() -> None:
        inputs, h = [], x
        for w, b in zip(weights, biases):
            inputs.append(h)
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        for layer in range(len(weights) - 1, -1, -1):
            g = grads_out[layer]
            torch.bmm(g.transpose(1, 2), inputs[layer], out=weight_grads[layer])
            if layer > 0:
                torch.bmm(g, weights[layer])

    macs = sum(a * b for a, b in zip(WIDTHS[:-1], WIDTHS[1:]))
    flops = k * (6 * batch * macs - 2 * batch * WIDTHS[0] * WIDTHS[1])
    return run, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    peak = matmul_peak(1)
    print(f"float32 matmul peak on 1 thread: {peak:.0f} GFLOP/s; K = {args.trials} trials")
    print(f"{'B':>5} {'products ms/step':>17} {'GFLOP/s':>8} {'% peak':>7}")
    for batch in (8, 32, 128, 512):
        run, flops = step_products(args.trials, batch)
        for _ in range(3):
            run()
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        rate = flops / best / 1e9
        print(f"{batch:>5} {best * 1e3:>17.2f} {rate:>8.1f} {100 * rate / peak:>6.1f}%")
    print(f"peak again: {matmul_peak(1):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
