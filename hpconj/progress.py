"""Terminal output of a sweep: a rich progress bar and the closing summary table."""
from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hpconj.analysis import best_grid_lr
from hpconj.axes import AXES, axes_of
from hpconj.config import Config
from hpconj.engine import TrialResult
from hpconj.folder import read_trials
from hpconj.records import DIVERGED, FAILED
from hpconj.sweep import SweepOutcome
from hpconj.trials import Trial


class SweepProgress:
    """Trials done / total, diverged and failed counts, elapsed time and ETA."""

    def __init__(self, console: Console, enabled: bool = True):
        self.enabled = enabled
        self.diverged = 0
        self.failed = 0
        self.progress = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials · [yellow]{task.fields[diverged]} diverged[/] · [red]{task.fields[failed]} failed[/]"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task_id = None

    def __enter__(self) -> SweepProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.__exit__(kind, exc, tb)

    def start(self, total: int, already_done: int) -> None:
        """Called again by a search after each round, with the total it plans by then."""
        if self.task_id is None:
            self.task_id = self.progress.add_task("sweep", total=total, completed=already_done, diverged=0, failed=0)
        else:
            self.progress.update(self.task_id, total=total)

    def advance(self, trial: Trial, result: TrialResult) -> None:
        self.diverged += result.status == DIVERGED
        self.failed += result.status == FAILED
        self.progress.update(self.task_id, advance=1, diverged=self.diverged, failed=self.failed)


def _power(lr: float, at_edge: bool, index: int, n: int) -> str:
    if not math.isfinite(lr):
        return "all diverged"
    text = f"2^{math.log2(lr):.1f}"
    if at_edge:
        text = ("≤ " if index == 0 else "≥ ") + text
    return text


def print_summary(console: Console, folder: Path, config: Config, outcome: SweepOutcome) -> None:
    """Best grid lr per parameterization, momentum and batch size (seed-mean metric)."""
    trials = read_trials(folder)
    if trials.empty:
        console.print(f"no trials recorded in {folder}")
        return
    best = best_grid_lr(trials)
    lrs = sorted(trials["lr"].unique())
    table = Table(title=f"best grid lr by seed-mean {config.metric.name} ({config.name})")
    table.add_column("parameterization")
    others = [a for a in axes_of(best) if a != "batch_size"]
    for axis in others:
        table.add_column(AXES[axis].symbol, justify="right")
    batch_sizes = sorted(best["batch_size"].unique())
    for b in batch_sizes:
        table.add_column(f"B={b}", justify="right")
    for (param, *at), rows in best.groupby(["parameterization", *others], sort=True):
        cells = []
        for b in batch_sizes:
            row = rows[rows["batch_size"] == b]
            if row.empty:
                cells.append("–")
                continue
            r = row.iloc[0]
            index = lrs.index(r["lr_best"]) if math.isfinite(r["lr_best"]) else -1
            cells.append(_power(r["lr_best"], bool(r["at_edge"]), index, len(lrs)))
        table.add_row(param, *(AXES[a].text(v) for a, v in zip(others, at)), *cells)
    console.print(table)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
    console.print(
        f"{outcome.ran} trials run, {outcome.skipped} already done ({counts}) → {folder}/ "
        "(trials.csv, curves.csv, store.sqlite, manifest.json)",
        highlight=False,
    )
