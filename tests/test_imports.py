"""The import graph points one way: what reads and writes results never needs torch or the engine.

cli → sweep/analysis → engine/store → tasks/config. The modules below are everything `hpconj
plot`, `table` and the store need; importing torch there would cost every such command a second
of start-up and tie the record of a result to the code that computes it.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

TORCH_FREE = ["hpconj.records", "hpconj.trials", "hpconj.config", "hpconj.parameterizations", "hpconj.folder",
              "hpconj.store", "hpconj.analysis", "hpconj.report", "hpconj.plots"]


def test_results_side_modules_import_neither_torch_nor_the_engine():
    script = ("import importlib, sys\n"
              f"for name in {TORCH_FREE!r}:\n"
              "    importlib.import_module(name)\n"
              "    bad = sorted(m for m in ('torch', 'hpconj.engine', 'hpconj.executor') if m in sys.modules)\n"
              "    if bad:\n"
              "        sys.exit(f'{name} imports {bad}')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", TORCH_FREE)
def test_each_is_torch_free_on_its_own(name):
    proc = subprocess.run([sys.executable, "-c", f"import sys, {name}; sys.exit('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{name} imports torch"
