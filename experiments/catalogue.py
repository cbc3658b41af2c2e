"""The experiments' verdicts in one table: every claim of every experiment, read from the committed
claims.csv files (and E11's random_vs_grid.csv), written into experiments/README.md and into each
experiment's README.md between the markers below, so the prose around them can never disagree with
the results.

    python experiments/catalogue.py --write   # rewrite the tables
    python experiments/catalogue.py --check   # exit 1 when a README's table is not what the results say
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from hpconj.claims import band_text, estimate_text, verdict_text

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- verdicts: written by experiments/catalogue.py from the results; do not edit -->", "<!-- end of verdicts -->"
# each experiment's folder, its question, and the figure that best shows its answer
EXPERIMENTS = {
    "e01_batch_lr": ("lr and batch size: conjugate under summed gradients?", "results/nqm_batch/plots/optimum_shift_batch_size.png"),
    "e02_momentum": ("lr and momentum: conjugate as a running average?", "results/momentum_long/plots/optimum_shift_momentum.png"),
    "e03_adam_momentum": ("does momentum do nothing in Adam?", "results/adam_beta1/plots/optimum_shift_momentum.png"),
    "e04_adam_batch": ("Adam and batch size: square-root rule, per-example patch", "results/adam_batch/plots/optimum_shift_batch_size.png"),
    "e05_lr_over_time": ("does the best lr fall over training, and does Adagrad change that?", "results/sgd_time/plots/optimum_over_time.png"),
    "e06_critical_batch": ("critical batch size, noise scale, and when momentum helps", "results/critical_batch/plots/steps_to_target.png"),
    "e07_depth_lr": ("do deeper networks need smaller learning rates?", "results/depth_lr/plots/optimum_shift_depth.png"),
    "e08_depth_init": ("with lr tuned per depth, are deep networks slower?", "results/depth_init/plots/training_curves.png"),
    "e09_width_mup": ("retune per width, or transfer under μP?", "results/width_mup_adam/plots/optimum_shift_width.png"),
    "e10_stability_edge": ("is the best lr the largest stable one?", "results/stability_edge/plots/loss_vs_lr_batch_size.png"),
    "e11_random_vs_grid": ("does random search beat grid search?", "random_vs_grid.png"),
    "e12_mcallester": ("McAllester's noise-adaptive SGD: batch-conjugate in λ_η?", "results/mcallester/plots/optimum_shift_batch_size.png"),
}


def claims(folder: Path) -> pd.DataFrame:
    """Every claim of one experiment: its results folders' claims.csv, and E11's resampling table."""
    files = sorted(folder.glob("results/*/claims.csv")) + sorted(folder.glob("random_vs_grid.csv"))
    frames = [pd.read_csv(f, keep_default_na=False, na_values=["", "nan", "NaN"]) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def rows(table: pd.DataFrame, link: str | None = None) -> list[str]:
    out = []
    for _, r in table.iterrows():
        where = f"{r['parameterization']}, {r['where']}"
        first = [f"[{link}]({link}/README.md)"] if link else []
        out.append("| " + " | ".join([*first, f"{r['claim']}", str(r["source"]), where, band_text(r),
                                      estimate_text(r), f"**{verdict_text(r)}**"]) + " |")
    return out


def overall_table() -> list[str]:
    lines = ["| experiment | claim | source | where | band | estimate [95% interval] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for name in EXPERIMENTS:
        lines += rows(claims(HERE / name), name)
    counts = pd.concat([claims(HERE / n) for n in EXPERIMENTS], ignore_index=True)["verdict"].value_counts()
    tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("holds", "fails", "inconclusive", "missing"))
    lines += ["", f"{int(counts.sum())} claims: {tally}.", "", "| experiment | question | figure |", "|---|---|---|"]
    for name, (question, figure) in EXPERIMENTS.items():
        lines.append(f"| [{name}]({name}/README.md) | {question} | [{Path(figure).name}]({name}/{figure}) |")
    return lines


def experiment_table(name: str) -> list[str]:
    question, figure = EXPERIMENTS[name]
    return ["| claim | source | where | band | estimate [95% interval] | verdict |", "|---|---|---|---|---|---|",
            *rows(claims(HERE / name)), "", f"![{question}]({figure})"]


def rewritten(path: Path, table: list[str]) -> str:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: lacks the markers {BEGIN!r} … {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n" + "\n".join(table) + "\n" + END + tail


def targets() -> list[tuple[Path, list[str]]]:
    return [(HERE / "README.md", overall_table())] + [(HERE / n / "README.md", experiment_table(n)) for n in EXPERIMENTS]


def main(argv: list[str]) -> int:
    stale = []
    for path, table in targets():
        text = rewritten(path, table)
        if "--write" in argv:
            path.write_text(text)
        elif text != path.read_text():
            stale.append(str(path.relative_to(HERE.parent)))
    if stale:
        print("not what the results say (python experiments/catalogue.py --write): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
