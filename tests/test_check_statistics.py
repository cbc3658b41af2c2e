"""`hpconj check` on another machine: no false alarm on honest results, no pass for a wrong program.

"Another machine" is made two ways: the manifest says the results were recorded under other
arithmetic (its fingerprint changed: the check then compares conclusions, re-running here), and
this machine's kernels are pinned to narrower vector instructions (ATEN_CPU_CAPABILITY and
MKL_ENABLE_INSTRUCTIONS), so the re-run really computes other bits.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, run_cli, run_here

COMMITTED = ["quickstart", "nqm_batch", "mlp_momentum", "adam_batch", "mcallester"]
FORGE = Path(__file__).with_name("forge.py")
CONFIG = {
    "name": "forged",
    "task": {"model": "mlp", "width": 16, "depth": 1,
             "data": {"name": "teacher", "examples": 256, "input_dim": 8, "outputs": 4}},
    "optimizer": "momentum",
    "parameterizations": ["standard", "conjugate"],
    "reference_batch_size": 8,
    "budget": {"epochs": 2},
    "sweep": {"lr": {"log2_range": [-8, 2], "step": 0.5}, "batch_size": [8, 32], "momentum": [0.0, 0.9]},
    "seeds": 2,
    "metric": {"name": "val_loss"},
    "device": "cpu",
}


def narrower_kernels() -> dict[str, str]:
    """Environment variables that make this machine compute with other kernels than it would."""
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        return {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    return {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}


def recorded_elsewhere(folder: Path) -> None:
    """Make the manifest say the results were recorded under other arithmetic (it is not hashed)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["arithmetic"] = "0" * 16
    path.write_text(json.dumps(manifest, indent=2))


def _check(folder: Path, **env: str) -> subprocess.CompletedProcess:
    """check --trials 10%; in a new process where the environment must differ (kernels pinned)."""
    if env:
        return run_cli("check", str(folder), "--trials", "10%", env=env)
    return run_here("check", str(folder), "--trials", "10%")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    """An honest sweep and one made by an hpconj whose conjugate lr is silently ×1.3, both plotted."""
    base = tmp_path_factory.mktemp("forgery")
    config = base / "forged.yaml"
    config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    honest, forged = base / "honest", base / "forged"
    assert run_here("sweep", str(config), "--out", str(honest), "--quiet").returncode == 0
    proc = subprocess.run([sys.executable, str(FORGE), "lr-scale", str(config), str(forged)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for folder in (honest, forged):
        assert run_here("plot", str(folder)).returncode == 0
    return {"honest": honest, "forged": forged}


@pytest.fixture
def copies(sweeps, tmp_path) -> dict[str, Path]:
    out = {}
    for name, folder in sweeps.items():
        out[name] = tmp_path / name
        shutil.copytree(folder, out[name])
    return out


def test_honest_results_reproduce_on_another_machine(copies):
    folder = copies["honest"]
    recorded_elsewhere(folder)
    proc = _check(folder)
    assert proc.returncode == 0, proc.stdout
    assert "reproduces" in proc.stdout and "same conclusions" in proc.stdout
    proc = _check(folder, **narrower_kernels())
    assert proc.returncode == 0, proc.stdout


def test_a_scaled_conjugate_lr_is_caught_on_this_and_another_machine(copies):
    folder = copies["forged"]
    assert run_here("check", str(folder), "--integrity").returncode == 0  # the hashes match: only a re-run tells
    same = _check(folder)
    assert same.returncode == 1 and "bit-equal" in same.stdout and "does not reproduce" in same.stdout
    recorded_elsewhere(folder)
    for env in ({}, narrower_kernels()):
        proc = _check(folder, **env)
        assert proc.returncode == 1, proc.stdout
        assert "same conclusions" in proc.stdout and "does not reproduce" in proc.stdout


def test_one_slice_twenty_percent_worse_is_caught_on_this_and_another_machine(copies):
    folder = copies["honest"]
    proc = subprocess.run([sys.executable, str(FORGE), "worse-slice", str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert run_here("check", str(folder), "--integrity").returncode == 0
    assert _check(folder).returncode == 1
    recorded_elsewhere(folder)
    for env in ({}, narrower_kernels()):
        proc = _check(folder, **env)
        assert proc.returncode == 1, proc.stdout
        assert "metric" in proc.stdout


def test_a_slice_better_than_it_was_at_and_above_its_optimum_is_caught(copies):
    """Above the optimum a re-run may come out worse by any amount (chaos), never better: a
    forger who makes those trials look better, at the optimum included, is caught."""
    folder = copies["honest"]
    proc = subprocess.run([sys.executable, str(FORGE), "better-above", str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    recorded_elsewhere(folder)
    proc = _check(folder)
    assert proc.returncode == 1, proc.stdout
    assert "same conclusions" in proc.stdout


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_references_reproduce_under_other_arithmetic(name):
    """Recorded on one machine, re-run with other vector kernels on this one: same conclusions."""
    proc = _check(ROOT / "results" / "reference" / name, **narrower_kernels())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reproduces" in proc.stdout and "same conclusions" in proc.stdout
