"""How fast can the cohort engine's step be at all? Its matrix products alone, nothing else.

    .venv/bin/python benchmarks/gemm_ceiling.py [--trials 64] [--repeat 30] [--width 64]

Runs, in one thread, exactly the batched products of one stacked training step of
`benchmarks/engine.py`'s network (MLP 64-64-64-10, or 64-W-W-10 with --width W; K trials;
batch B), in the step's order, on buffers of the step's sizes and in the engine's sub-stacks,
but without any of its elementwise work (bias, activation, loss, optimizer update): forward
z_l = b_l + h·W_lᵀ for each layer, then ∂W_l = Gᵀ·h and G·W_l going down. Prints their GFLOP/s
and the share of a float32 matmul peak measured in the same run. Whatever the step does besides
these products only adds time, so this share bounds the share of peak the whole step (and a
fortiori the whole sweep, evaluation and bookkeeping included) can reach with these kernels.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from engine import matmul_peak
from hpconj.engine.stacked import sub_stacks


def step_products(k: int, batch: int, width: int = 64) -> tuple[Callable[[], None], float]:
    """The step's products as one callable, and their FLOPs (MLP 64-width-width-10)."""
    widths = [64, width, width, 10]
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(k, b, a, generator=gen) * 0.1 for a, b in zip(widths[:-1], widths[1:])]
    biases = [torch.randn(k, b, generator=gen) for b in widths[1:]]
    x = torch.randn(k, batch, widths[0], generator=gen)
    grads_out = [torch.randn(k, batch, b, generator=gen) for b in widths[1:]]
    weight_grads = [torch.empty_like(w) for w in weights]

    parts = sub_stacks(k, batch, max(widths), torch.device("cpu"))  # as the engine splits the stack

    def run() -> None:
        for part in parts:
            inputs, h = [], x[part]
            for w, b in zip(weights, biases):
                inputs.append(h)
                h = torch.baddbmm(b[part].unsqueeze(1), h, w[part].transpose(1, 2))
            for layer in range(len(weights) - 1, -1, -1):
                g = grads_out[layer][part]
                torch.bmm(g.transpose(1, 2), inputs[layer], out=weight_grads[layer][part])
                if layer > 0:
                    torch.bmm(g, weights[layer][part])

    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    flops = k * (6 * batch * macs - 2 * batch * widths[0] * widths[1])
    return run, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--width", type=int, default=64, help="hidden width of the MLP (64: the quickstart's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    peak = matmul_peak(1)
    width = args.width
    print(f"float32 matmul peak on 1 thread: {peak:.0f} GFLOP/s; K = {args.trials} trials; MLP 64-{width}-{width}-10")
    print(f"{'B':>5} {'products ms/step':>17} {'GFLOP/s':>8} {'% peak':>7}")
    for batch in (8, 32, 128, 512):
        run, flops = step_products(args.trials, batch, args.width)
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
