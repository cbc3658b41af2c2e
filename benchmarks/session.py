"""A user's session, end to end: the commands a user types, timed from process start to exit.

    make bench            # or: .venv/bin/python benchmarks/session.py [--repeat 2]

Part 1 — commands. Each row is one command as a user types it (a fresh process: interpreter
start-up, imports, the work, writing the files, exit), run `--repeat` times, the fastest kept: on a
shared machine the slowest runs measure the neighbours. Sweeps write to a temporary folder.

Part 2 — engines end to end. The same sweep with `--engine reference` and with the default cohort
engine, alternating, fastest of each: the built-in MLP (digits, 2 epochs, B ∈ {8, 32}, β ∈ {0, 0.9},
2 parameterizations, 2 seeds, 6 lrs = 96 trials; again with `noise_scale: {enabled: false}`, which
measures what B_simple at the start and at the end of training cost) and the two example user models of
hpconj.examples (conv_net, attention_net; 32 trials at each B).

Part 3 — engines' compute alone (in this process, one thread, after a warm-up): the trials of one
batch size trained by each engine, for the user models at B = 8, 32 and 128.

Targets (issue 19, 2 cores): --help ≤ 0.5 s; validate ≤ 1.5 s; quickstart sweep + plot ≤ 15 s;
end-to-end ratio ≥ 5× on the 96-trial built-in sweep; ≥ 4× on the user CNN's compute at B ≤ 32.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = {
    "name": "e2e", "task": {"model": "mlp", "width": 64, "depth": 2, "data": "digits"},
    "optimizer": "momentum", "parameterizations": ["standard", "conjugate"], "reference_batch_size": 8,
    "budget": {"epochs": 2},
    "sweep": {"lr": {"log2_range": [-7, -2], "num": 6}, "batch_size": [8, 32], "momentum": [0.0, 0.9]},
    "seeds": 2, "device": "cpu",
}


def user(model: str, batch_sizes: list[int]) -> dict:
    return {"name": model, "task": {"model": f"hpconj.examples:{model}", "data": "digits"},
            "optimizer": "momentum", "parameterizations": ["standard"], "budget": {"steps": 120},
            "sweep": {"lr": {"log2_range": [-6, -3], "num": 8}, "batch_size": batch_sizes, "momentum": [0.0, 0.9]},
            "seeds": 2, "device": "cpu"}


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hpconj", *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"hpconj {' '.join(args)} failed:\n{done.stderr}")
    return seconds


def fastest(runs: int, *commands: list[list[str]]) -> list[float]:
    """The fastest of `runs` runs of each command sequence, the sequences alternating."""
    best = [float("inf")] * len(commands)
    for _ in range(runs):
        for i, sequence in enumerate(commands):
            best[i] = min(best[i], sum(timed(args) for args in sequence))
    return best


def commands(tmp: Path, runs: int) -> None:
    quick = tmp / "quickstart"
    rows = [
        ("hpconj --help", [["--help"]], 0.5),
        ("hpconj validate configs/quickstart.yaml", [["validate", "configs/quickstart.yaml"]], 1.5),
        ("hpconj validate configs/quickstart.yaml --time", [["validate", "configs/quickstart.yaml", "--time"]], None),
        ("hpconj sweep configs/quickstart.yaml (552 trials)",
         [["sweep", "configs/quickstart.yaml", "--out", str(quick), "--fresh", "--quiet"]], None),
        ("hpconj plot results/quickstart", [["plot", str(quick)]], None),
        ("hpconj check results/quickstart --integrity", [["check", str(quick), "--integrity"]], None),
    ]
    print("commands (process start to exit, fastest of", runs, "runs)")
    seconds = {}
    for label, sequence, target in rows:
        (seconds[label],) = fastest(runs, sequence)
        goal = f"  (target ≤ {target:g} s)" if target else ""
        print(f"  {label:<52} {seconds[label]:6.2f} s{goal}")
    both = seconds["hpconj sweep configs/quickstart.yaml (552 trials)"] + seconds["hpconj plot results/quickstart"]
    print(f"  {'quickstart sweep + plot':<52} {both:6.2f} s  (target ≤ 15 s)")


def engines(tmp: Path, runs: int) -> None:
    print("engines end to end (hpconj sweep, process start to exit, fastest of", runs, "runs each, alternating)")
    quiet = {**BUILT_IN, "name": "e2e-no-noise", "noise_scale": {"enabled": False}}
    for label, config, target in (("built-in MLP, 96 trials", BUILT_IN, 5.0),
                                  ("the same without the noise scale", quiet, None),
                                  ("conv_net, B 8 and 32, 64 trials", user("conv_net", [8, 32]), None),
                                  ("attention_net, B 8 and 32, 64 trials", user("attention_net", [8, 32]), None)):
        path = tmp / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        runs_of = [[["sweep", str(path), "--out", str(tmp / f"{config['name']}-{e}"), "--fresh", "--quiet",
                     "--engine", e]] for e in ("reference", "cohort")]
        reference, cohort = fastest(runs, *runs_of)
        goal = f"  (target ≥ {target:g}×)" if target else ""
        print(f"  {label:<40} reference {reference:6.2f} s   cohort {cohort:6.2f} s   {reference / cohort:4.1f}×{goal}")


def compute(runs: int) -> None:
    import torch

    from hpconj.config import config_from_dict
    from hpconj.engine.cohort import train_cohort
    from hpconj.engine.reference import train_trial
    from hpconj.tasks import build_task
    from hpconj.trials import expand_trials

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    print("engines' compute alone (one thread, warm, fastest of", runs, "runs; 32 trials of 40 steps)")
    for model in ("conv_net", "attention_net"):
        for b in (8, 32, 128):
            data = user(model, [b])
            data["budget"] = {"steps": 40}
            config = config_from_dict(data)
            trials, task = expand_trials(config), build_task(config.first_task)
            list(train_cohort(task, trials[:2], cpu))
            train_trial(task, trials[0], cpu)
            cohort = reference = float("inf")
            for _ in range(runs):
                start = time.perf_counter()
                list(train_cohort(task, trials, cpu))
                cohort = min(cohort, time.perf_counter() - start)
                start = time.perf_counter()
                for trial in trials:
                    train_trial(task, trial, cpu)
                reference = min(reference, time.perf_counter() - start)
            goal = "  (target ≥ 4× at B ≤ 32)" if model == "conv_net" and b <= 32 else ""
            print(f"  {model:<14} B = {b:<4} reference {reference:6.2f} s   cohort {cohort:6.2f} s   "
                  f"{reference / cohort:4.1f}×{goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the fastest counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        commands(Path(tmp), args.repeat)
        engines(Path(tmp), args.repeat)
    compute(args.repeat)


if __name__ == "__main__":
    main()
