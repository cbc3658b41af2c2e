"""The import graph points one way: what reads and writes results never needs torch or the engine.

cli → sweep/analysis → engine/store → tasks/config. The modules below are everything `hpconj
plot`, `table` and the store need; importing torch there would cost every such command a second
of start-up and tie the record of a result to the code that computes it.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

TORCH_FREE = ["hpconj.records", "hpconj.axes", "hpconj.optim", "hpconj.trials", "hpconj.config", "hpconj.parameterizations",
              "hpconj.folder", "hpconj.store", "hpconj.analysis", "hpconj.training_time", "hpconj.report", "hpconj.plots",
              "hpconj.search"]


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


def _import_graph() -> dict[str, set[str]]:
    """hpconj module → the hpconj modules it imports anywhere in its file (lazy imports too)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "hpconj"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                # a package and its own submodules importing each other is how packages work
                loop = path[path.index(nxt):] + [nxt]
                package = min(loop, key=len)
                if not all(m == package or m.startswith(package + ".") for m in loop):
                    raise AssertionError(f"import cycle: {' → '.join(loop)}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
