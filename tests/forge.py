"""Results made by a subtly wrong hpconj, for tests of `hpconj check`: run as a script.

    python tests/forge.py lr-scale CONFIG OUT   # the conjugate lr silently ×1.3
    python tests/forge.py worse-slice OUT       # every metric of one slice 20% worse, hashes redone
    python tests/forge.py better-above OUT      # one slice's trials at and above its optimum twice as good

Both leave a folder whose manifest hashes match its files, as a forger who knows the format would.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd


def scaled_conjugate(config: str, out: str) -> int:
    from hpconj import parameterizations
    from hpconj.cli import main

    honest = parameterizations.conjugate

    def wrong(hp):  # the bug: the conjugate lr ×1.3
        return honest(dataclasses.replace(hp, lr=hp.lr * 1.3))

    parameterizations.PARAMETERIZATIONS["conjugate"] = wrong
    sys.argv = ["hpconj", "sweep", config, "--out", out, "--workers", "1", "--quiet"]
    return main()


def edited_slice(out: str, factor: float, from_best: bool) -> None:
    """Multiply the metric of one conjugate slice's finished trials (all, or those at and above
    its best grid lr) by `factor`, then recompute the manifest's hashes."""
    from hpconj.analysis import best_grid_lr
    from hpconj.folder import sha256_file

    folder = Path(out)
    trials = pd.read_csv(folder / "trials.csv")
    first = trials[trials["parameterization"] == "conjugate"].iloc[0]
    keys = ["parameterization", "optimizer", "batch_size", "momentum"]
    mask = (trials[keys] == first[keys]).all(axis=1) & (trials["status"] == "ok")
    if from_best:
        best = best_grid_lr(trials).set_index(keys)["lr_best"][tuple(first[keys])]
        mask &= trials["lr"] >= best
    for column in ("metric", "val_loss"):
        trials.loc[mask, column] *= factor
    trials.to_csv(folder / "trials.csv", index=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(folder / name) for name in manifest["files"] if (folder / name).is_file()}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    if sys.argv[1] == "lr-scale":
        sys.exit(scaled_conjugate(sys.argv[2], sys.argv[3]))
    if sys.argv[1] == "worse-slice":
        edited_slice(sys.argv[2], 1.2, from_best=False)
    else:  # better-above: claimed twice as good at and above the optimum, where chaos hides "worse"
        edited_slice(sys.argv[2], 0.5, from_best=True)
