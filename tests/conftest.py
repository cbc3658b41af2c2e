"""Shared helpers: tiny real configs (seconds to train) written to a temporary folder."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "name": "tiny",
    "task": {"model": "mlp", "width": 16, "depth": 1, "data": {"name": "teacher", "examples": 256, "input_dim": 8,
                                                                 "outputs": 4}},
    "optimizer": "momentum",
    "parameterizations": ["standard", "conjugate"],
    "reference_batch_size": 8,
    "budget": {"epochs": 2},
    "sweep": {"lr": {"values": [0.01, 0.1, 1000.0]}, "batch_size": [8, 32], "momentum": [0.0, 0.9]},
    "seeds": 2,
    "metric": {"name": "val_loss", "goal": "minimize"},
    "device": "cpu",
}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get("_replace"):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy({k: v for k, v in value.items() if k != "_replace"} if isinstance(value, dict) else value)
    return out


@pytest.fixture
def write_config(tmp_path: Path):
    """write_config(name="x", **changes) → path of a YAML config derived from TINY."""

    def write(filename: str = "tiny.yaml", base: dict[str, Any] | None = None, **changes: Any) -> Path:
        data = merged(base or TINY, changes)
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m hpconj ARGS` as a user would; return the completed process."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpconj", *args], cwd=cwd or ROOT, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )


# A user model that works on batches of 8 and raises on batches of 32 (failure tests).
FRAGILE_MODEL = """
from torch import nn


class Fragile(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.layer = nn.Linear(i, o)

    def forward(self, x):
        if x.shape[0] == 32:
            raise RuntimeError("cannot take 32 examples")
        return self.layer(x)


def build(input_dim, output_dim):
    return Fragile(input_dim, output_dim)
"""


def plotted_sweep(base: Path, config: dict[str, Any] | None = None, name: str = "tiny") -> Path:
    """Sweep and plot a tiny config into base/name (module fixtures make one, tests copy it)."""
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config or TINY, sort_keys=False))
    folder = base / name
    for args in (("sweep", str(path), "--out", str(folder), "--quiet"), ("plot", str(folder))):
        proc = run_here(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


def copied(folder: Path, tmp_path: Path) -> Path:
    """A copy of a results folder that a test may damage."""
    import shutil

    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def refusal(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The one line of a bad-input refusal (exit 2, no traceback), checked to contain every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the `hpconj` command in this process, as `run_cli` does in a new one: the same exit
    status, stdout and stderr, without a new interpreter's start-up (about 2 s a call). For
    commands whose environment need not differ from the tests' own."""
    import contextlib
    import io

    from hpconj import cli

    out, err = io.StringIO(), io.StringIO()
    argv, here = sys.argv, os.getcwd()
    sys.argv = ["hpconj", *args]
    code: int = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
    return subprocess.CompletedProcess(["hpconj", *args], code, out.getvalue(), err.getvalue())
