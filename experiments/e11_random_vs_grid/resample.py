"""E11: random search against grid search at equal trial counts, by resampling a dense sweep.

The dense sweep (dense.yaml, results/dense/) trains every cell of a 9 × 45 (momentum × lr) table.
For a budget of N = k² trials:
  grid    the k × k grid a user would lay out over the same ranges: k momenta and k lrs evenly
          spaced (in log2(1 − β) and log2 lr) from end to end of the dense axes;
  random  N distinct cells drawn uniformly from the table (DRAWS draws, numpy PCG64, seed 0).
A search's regret is its best cell's seed-mean metric over the table's best, minus 1 (a diverged
seed makes a cell +inf). The estimate is the share of random searches whose regret is below the
grid's (ties count half); its 95% interval is Wilson's for DRAWS draws, so it covers the randomness
of the search, not the seed noise of the dense table (2 seeds). Claim: random search beats grid
search, i.e. the share is above 1/2 (band [0.5, 1]).

Writes random_vs_grid.csv (the claims' columns of hpconj.claims plus the regrets) and
random_vs_grid.png next to this file, or into the folder given as `--out DIR`.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hpconj.claims import CLAIM_COLUMNS, verdict

HERE = Path(__file__).resolve().parent
DENSE = HERE / "results" / "dense"
DRAWS = 4000
SIDES = (3, 4, 5)  # grids of 9, 16 and 25 trials
SOURCE = ("CMU 11-785 recitation and SYSU week 2, 'hyperparameter tuning' (random search 'has been shown to be "
          "more effective than grid search'); Bergstra & Bengio 2012")
CSV_NAME, PNG_NAME = "random_vs_grid.csv", "random_vs_grid.png"


def table(trials: pd.DataFrame, parameterization: str) -> np.ndarray:
    """Seed-mean metric [momentum, lr] of one parameterization; a diverged seed makes a cell +inf."""
    done = trials[(trials["parameterization"] == parameterization) & trials["status"].isin(["ok", "diverged"])]
    metric = done["metric"].where(done["status"] == "ok", np.inf).astype(float)
    mean = done.assign(metric=metric).groupby(["momentum", "lr"])["metric"].mean().unstack("lr")
    return mean.sort_index().sort_index(axis=1).to_numpy()


def regrets(cells: np.ndarray, best: float) -> np.ndarray:
    return cells / best - 1.0


def compare(matrix: np.ndarray, side: int, rng: np.random.Generator) -> dict[str, float]:
    """Grid and random regrets at N = side² trials, and the share of random draws beating the grid."""
    best = float(np.min(matrix))
    rows = np.round(np.linspace(0, matrix.shape[0] - 1, side)).astype(int)
    cols = np.round(np.linspace(0, matrix.shape[1] - 1, side)).astype(int)
    grid = float(regrets(np.min(matrix[np.ix_(rows, cols)]), best))
    flat = matrix.ravel()
    n = side * side
    picks = np.argsort(rng.random((DRAWS, flat.size)), axis=1)[:, :n]  # N distinct cells per draw
    random = regrets(np.min(flat[picks], axis=1), best)
    share = float(np.mean(random < grid) + 0.5 * np.mean(random == grid))
    lo, hi = wilson(share, DRAWS)
    return {"trials": n, "grid_regret": grid, "random_regret_median": float(np.median(random)),
            "random_regret_p90": float(np.percentile(random, 90)), "share": share, "lo": lo, "hi": hi,
            "random": random}


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(argv: list[str]) -> int:
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else HERE
    trials = pd.read_csv(DENSE / "trials.csv")
    rows, curves = [], []
    for parameterization in ("standard", "conjugate"):
        matrix = table(trials, parameterization)
        rng = np.random.Generator(np.random.PCG64(0))
        for side in SIDES:
            r = compare(matrix, side, rng)
            judged, _ = verdict(r["share"], r["lo"], r["hi"], (0.5, 1.0), 0)
            rows.append({"id": f"E11.random-beats-grid-{parameterization}-{r['trials']}", "kind": "resample",
                         "parameterization": parameterization, "where": f"N = {r['trials']} trials (lr × momentum)",
                         "band_lo": 0.5, "band_hi": 1.0, "estimate": r["share"], "lo": r["lo"], "hi": r["hi"],
                         "verdict": judged, "seeds_needed": math.nan,
                         "claim": f"a random search of {r['trials']} trials beats the {side} × {side} grid "
                                  "(share of random searches with lower regret > 1/2)",
                         "source": SOURCE, "grid_regret": r["grid_regret"],
                         "random_regret_median": r["random_regret_median"], "random_regret_p90": r["random_regret_p90"]})
            curves.append((parameterization, side, r["grid_regret"], np.sort(r["random"])))
    frame = pd.DataFrame(rows, columns=[*CLAIM_COLUMNS, "grid_regret", "random_regret_median", "random_regret_p90"])
    frame.to_csv(out / CSV_NAME, index=False, float_format="%.6g")
    draw(curves, out / PNG_NAME)
    print(frame[["id", "estimate", "lo", "hi", "verdict", "grid_regret", "random_regret_median"]].to_string(index=False))
    return 0


def draw(curves: list[tuple[str, int, float, np.ndarray]], path: Path) -> None:
    """The distribution of random searches' regret (a CDF per N) against the grid's (a vertical line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True, constrained_layout=True)
    colours = dict(zip(SIDES, ("tab:blue", "tab:orange", "tab:green")))
    for ax, parameterization in zip(axes, ("standard", "conjugate")):
        for name, side, grid, random in curves:
            if name != parameterization:
                continue
            shown = np.clip(random, 1e-4, None)
            ax.step(shown, np.arange(1, shown.size + 1) / shown.size, where="post", color=colours[side],
                    label=f"random, N = {side * side}")
            ax.axvline(max(grid, 1e-4), color=colours[side], linestyle="--", label=f"{side} × {side} grid")
        ax.set_xscale("log")
        ax.set_xlabel("regret (best found / best of the table − 1)")
        ax.set_title(f"{parameterization}")
    axes[0].set_ylabel("share of random searches")
    axes[1].legend(fontsize=8, loc="lower right")
    figure.savefig(path, dpi=120, metadata={"Software": None})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
