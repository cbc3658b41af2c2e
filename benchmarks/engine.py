"""Cohort engine vs reference engine on the same sweep, side by side in one run.

    make bench            # or: .venv/bin/python benchmarks/engine.py [--workers 2] [--repeat 3]

Sweep: MLP 64-64-64-10 on digits, 2 epochs, B ∈ {8, 32, 128, 512}, 16 learning rates × β ∈ {0, 0.9}
× 2 parameterizations × 2 seeds = 128 trials per batch size, 512 in all. Both engines run through
the same executor with the same workers × threads (the whole machine each), so the ratio is
the engine's alone. Each batch size is run `--repeat` times per engine, the two engines
alternating, and the fastest run of each counts: on a shared machine the slowest runs measure
the neighbours. Prints trials/s per batch size and overall, their ratio, and achieved GFLOP/s
against a float32 matmul peak measured on this machine in the same run. The FLOPs are the
useful matmul FLOPs, counted analytically from the work each trial did (`matmul_flops`): forward
and backward per step taken, without the first layer's input gradient, plus the final
evaluation for the trials that finished.
"""
from __future__ import annotations

import argparse
import time

import torch

from hpconj.config import Config, load_config
from hpconj.engine.base import TrialResult
from hpconj.executor import LocalExecutor
from hpconj.workers import Resources, split_units, usable_cores
from hpconj.tasks import build_task
from hpconj.trials import expand_trials, group_cohorts

BATCH_SIZES = [8, 32, 128, 512]
CONFIG = {
    "name": "bench",
    "task": {"model": "mlp", "width": 64, "depth": 2, "data": "digits"},
    "optimizer": "momentum",
    "parameterizations": ["standard", "conjugate"],
    "reference_batch_size": 8,
    "budget": {"epochs": 2},
    "sweep": {"lr": {"log2_range": [-8, -0.5], "num": 16}, "batch_size": BATCH_SIZES, "momentum": [0.0, 0.9]},
    "seeds": 2,
    "device": "cpu",
}


def matmul_peak(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """Best float32 GFLOP/s of an n×n matmul with `threads` torch threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def matmul_flops(config: Config, input_dim: int, classes: int, results: list[TrialResult], batch_size: int,
                 n_eval: int) -> float:
    """Useful matmul FLOPs of the trials: per step taken, 2·B·Σ fan_in·fan_out for the forward pass
    and twice that for the backward, less the input gradient of the first layer, which no one
    needs and neither engine computes; plus the evaluation's forward pass (2·Σ fan_in·fan_out per
    example) for the trials that finished. (A diverged trial's steps between its first
    non-finite loss and the next curve point are computed but not counted.)"""
    dims = [input_dim] + [config.task.width] * config.task.depth + [classes]
    macs = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    per_step = 6 * batch_size * macs - 2 * batch_size * dims[0] * dims[1]
    return sum(per_step * r.steps + (2 * macs * n_eval if r.status == "ok" else 0) for r in results)


def run(executor: LocalExecutor, config: Config, task, batch_size: int) -> tuple[float, list[TrialResult]]:
    trials = [t for t in expand_trials(config) if t.batch_size == batch_size]
    units = split_units(group_cohorts(trials), {t.trial_id for t in trials}, 256, executor.resources.workers)
    start = time.perf_counter()
    results = list(executor.run(task, config.task, units, torch.device("cpu")))
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine and batch size; the fastest counts")
    parser.add_argument("--width", type=int, default=64, help="hidden width of the MLP (64: the quickstart's)")
    args = parser.parse_args()
    if args.repeat < 1 or args.workers < 1 or args.width < 1:
        parser.error("--repeat, --workers and --width must be at least 1")
    import tempfile
    from pathlib import Path

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump({**CONFIG, "task": {**CONFIG["task"], "width": args.width}}))
        config = load_config(path)
    task = build_task(config.task)
    cores = usable_cores()
    resources = Resources(workers=args.workers, threads=max(1, cores // args.workers))
    peak_all, peak_one = matmul_peak(cores), matmul_peak(1)
    print(f"executor: {resources.workers} worker(s) × {resources.threads} thread(s), same for both engines")
    n_eval = task.data.n_train + len(task.data.x_val)
    totals = {"reference": [0.0, 0], "cohort": [0.0, 0]}
    rows: list[tuple[int, int, float, float, float]] = []
    executors = {name: LocalExecutor(name, resources, chunk_size=256) for name in ("reference", "cohort")}
    for executor in executors.values():  # worker start-up is paid once per sweep: not timed here
        executor.warm_up(config.task, torch.device("cpu"))
    for b in BATCH_SIZES:
        ref_s = coh_s = float("inf")
        for _ in range(args.repeat):
            seconds, ref_results = run(executors["reference"], config, task, b)
            ref_s = min(ref_s, seconds)
            seconds, results = run(executors["cohort"], config, task, b)
            coh_s = min(coh_s, seconds)
        n = len(results)
        assert n == len(ref_results)
        totals["reference"][0] += ref_s
        totals["cohort"][0] += coh_s
        totals["reference"][1] += n
        totals["cohort"][1] += n
        flops = matmul_flops(config, task.data.input_dim, task.data.output_dim, results, b, n_eval)
        rows.append((b, n, ref_s, coh_s, flops / coh_s / 1e9))
    # the peak again after the runs: the better of the two counts (a neighbour lowers either)
    peak_all, peak_one = max(peak_all, matmul_peak(cores)), max(peak_one, matmul_peak(1))
    print(f"machine: {cores} cores; float32 matmul peak {peak_one:.0f} GFLOP/s on 1 thread, {peak_all:.0f} on {cores} "
          "(best of before and after)")
    print(f"{'B':>5} {'trials':>6} {'reference t/s':>14} {'cohort t/s':>11} {'ratio':>6} {'cohort GFLOP/s':>15} {'% peak':>7}")
    for b, n, ref_s, coh_s, gflops in rows:
        print(f"{b:>5} {n:>6} {n / ref_s:>14.1f} {n / coh_s:>11.1f} {ref_s / coh_s:>5.1f}× {gflops:>15.1f} "
              f"{100 * gflops / peak_all:>6.1f}%")
    ref_s, n = totals["reference"]
    coh_s, _ = totals["cohort"]
    print(f"{'all':>5} {n:>6} {n / ref_s:>14.1f} {n / coh_s:>11.1f} {ref_s / coh_s:>5.1f}×")
    print(f"whole sweep: reference {ref_s:.1f} s, cohort {coh_s:.1f} s, cohort/reference speed-up {ref_s / coh_s:.1f}×")
    for executor in executors.values():
        executor.close()


if __name__ == "__main__":
    main()
