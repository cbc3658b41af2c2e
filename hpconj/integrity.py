"""`hpconj check --integrity`: are a results folder's files as hpconj recorded them? Torch-free,
so that the check a CI runs on every commit starts in a fraction of a second; and the report
every `hpconj check` prints (hpconj.checking re-runs trials on top of this)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hpconj.folder import FolderError, refuse_if_busy, sha256_file
from hpconj.folder import read_manifest as folder_manifest


class CheckError(ValueError):
    """The folder cannot be checked at all (bad input: exit status 2)."""


# ----------------------------------------------------------------------------- hashes
def read_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise CheckError(f"{folder}: no such results folder")
    try:
        return folder_manifest(folder)
    except FolderError as exc:
        raise CheckError(str(exc)) from None


def integrity_problems(folder: Path) -> list[str]:
    """Files edited or deleted since hpconj recorded them, one line each."""
    manifest = read_manifest(folder)
    recorded: dict[str, str] = manifest.get("files") or {}
    if not recorded:
        raise CheckError("manifest.json: records no file hashes (made by an older hpconj?)")
    problems = []
    for name, digest in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: edited since it was recorded (sha256 differs)")
    return problems


@dataclass
class CheckReport:
    differences: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # where, field, stored, now, rel
    warnings: list[str] = field(default_factory=list)
    rerun: int = 0
    exact: bool = True

    def add(self, where: str, name: str, stored: Any, now: Any) -> None:
        self.differences.append((where, name, _fmt(stored), _fmt(now), _relative(stored, now)))


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # not np.float64(...)
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _relative(a: Any, b: Any) -> str:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(a) and math.isfinite(b)):
        return ""
    return f"{abs(a - b) / max(abs(a), abs(b), 1e-300):.2e}"


def integrity_report(folder: Path) -> tuple[dict[str, Any], CheckReport]:
    """(the manifest, a report of every recorded file that is missing or hashes otherwise): the
    first step of every `hpconj check`; refused while a sweep writes the folder."""
    manifest = read_manifest(folder)
    refuse_if_busy(folder)
    report = CheckReport()
    for problem in integrity_problems(folder):
        path, _, what = problem.partition(": ")
        report.add(path, "file", "as recorded in manifest.json", what)
    return manifest, report


def check_integrity(folder: Path, console: Console) -> CheckReport:
    """Every file the manifest records must exist and hash as recorded."""
    manifest, report = integrity_report(folder)
    print_report(console, report, f"integrity of {len(manifest.get('files', {}))} files", folder, verdict="intact")
    return report


def print_report(console: Console, report: CheckReport, what: str, folder: Path, verdict: str = "reproduces") -> None:
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    if report.differences:
        table = Table(title="differences")
        for column in ("where", "field", "stored", "re-run / now", "rel. diff"):
            table.add_column(column, overflow="fold")
        for row in report.differences[:200]:
            table.add_row(*(escape(str(c)) for c in row))
        console.print(table)
        more = f" ({len(report.differences) - 200} more not shown)" if len(report.differences) > 200 else ""
        where, name, stored, now, _ = report.differences[0]
        failed = "damaged" if verdict == "intact" else "does not reproduce"
        console.print(f"[red]{failed}:[/red] {folder}: {len(report.differences)} difference(s){more}; {what}",
                      highlight=False, soft_wrap=True)
        console.print(f"first: {escape(where)} {escape(name)}: {escape(stored)} → {escape(now)}", highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"[green]{verdict}:[/green] {folder}: {what}", highlight=False, soft_wrap=True)
