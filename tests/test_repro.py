"""`hpconj check`: a fresh sweep reproduces bit for bit; every kind of tampering is caught."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, copied, plotted_sweep, run_here
from hpconj.repro import (CheckReport, arithmetic_fingerprint, compare_ids, environment, environment_differences,
                          load_stored, system_family)

COMMITTED = ["quickstart", "nqm_batch", "mlp_momentum", "adam_batch", "mcallester", "width_mup", "depth_linear",
             "critical_batch", "quickstart_search"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny finished and plotted sweep, made once; tests copy it before tampering."""
    from conftest import TINY

    return plotted_sweep(tmp_path_factory.mktemp("repro"),
                         {**TINY, "sweep": {**TINY["sweep"], "lr": {"values": [0.01, 0.03, 0.1, 1000.0]}}})


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return copied(finished, tmp_path)


def _lines(proc) -> str:
    return " ".join(proc.stdout.split())


def test_fresh_sweep_reproduces_bit_for_bit(finished):
    proc = run_here("check", str(finished), "--trials", "all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "64 of 64 trials re-run (cohort engine, bit-equal)" in _lines(proc)
    assert run_here("check", str(finished), "--integrity").returncode == 0


def test_other_workers_and_chunking_still_reproduce(finished):
    proc = run_here("check", str(finished), "--trials", "25%", "--workers", "1", "--chunk-size", "3")
    assert proc.returncode == 0, proc.stdout
    assert "bit-equal" in proc.stdout


def test_edited_metric_is_caught(copy):
    trials = pd.read_csv(copy / "trials.csv")
    victim = trials[trials["status"] == "ok"].iloc[3]
    trials.loc[trials["trial_id"] == victim["trial_id"], ["val_loss", "metric"]] = 0.001
    trials.to_csv(copy / "trials.csv", index=False)
    integrity = run_here("check", str(copy), "--integrity")
    assert integrity.returncode == 1 and "trials.csv" in integrity.stdout and "edited" in integrity.stdout
    proc = run_here("check", str(copy), "--trials", "all")
    assert proc.returncode == 1
    assert victim["trial_id"] in proc.stdout and "val_loss" in proc.stdout and "does not reproduce" in proc.stdout


def test_deleted_trial_is_caught(copy):
    trials = pd.read_csv(copy / "trials.csv")
    victim = trials.iloc[10]["trial_id"]
    trials[trials["trial_id"] != victim].to_csv(copy / "trials.csv", index=False)
    proc = run_here("check", str(copy), "--trials", "5")
    assert proc.returncode == 1
    assert victim in proc.stdout and "missing" in proc.stdout and "trials.csv" in proc.stdout


def test_changed_optimum_is_caught(copy):
    optima = pd.read_csv(copy / "optima.csv")
    optima.loc[2, "lr_opt"] *= 1.5
    optima.to_csv(copy / "optima.csv", index=False)
    proc = run_here("check", str(copy), "--trials", "10%")
    assert proc.returncode == 1
    text = _lines(proc)
    assert "optima.csv" in text and "lr_opt" in text


def test_changed_config_value_is_caught(copy):
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["budget"]["epochs"] = 3.0
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_here("check", str(copy), "--trials", "5")
    assert proc.returncode == 1
    assert "first: config.yaml" in _lines(proc)
    # the trial ids no longer match: every stored trial is foreign to the edited config
    config, stored, _ = load_stored(copy)
    report = CheckReport()
    compare_ids(config, stored, report, copy)
    assert any("not produced by the stored config" in d[3] and d[0] == "config.yaml" for d in report.differences)


def test_bad_input_is_exit_2(tmp_path, copy):
    assert run_here("check", str(tmp_path / "nothing")).returncode == 2
    (copy / "config.yaml").write_text("optimizer: adam\n")
    proc = run_here("check", str(copy), "--trials", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    bad_sample = run_here("check", str(copy), "--trials", "lots")
    assert bad_sample.returncode == 2 and "--trials" in bad_sample.stderr


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_reference_results_are_intact(name):
    folder = ROOT / "results" / "reference" / name
    proc = run_here("check", str(folder), "--integrity")
    assert proc.returncode == 0, proc.stdout
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "summary.md" in manifest["files"]


def test_committed_mlp_momentum_reproduces_on_a_sample():
    proc = run_here("check", str(ROOT / "results" / "reference" / "mlp_momentum"), "--trials", "10%")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reproduces" in proc.stdout


def test_committed_adaptive_results_reproduce_on_a_sample():
    """torch.optim rules, the sqrt rule and the per-example rules re-run bit-equal in the same engine
    (within check's tolerance on a machine whose arithmetic differs from the recording one's)."""
    for name, share in (("adam_batch", "2%"), ("mcallester", "5%")):
        folder = ROOT / "results" / "reference" / name
        proc = run_here("check", str(folder), "--trials", share)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "reproduces" in proc.stdout
        manifest = json.loads((folder / "manifest.json").read_text())
        if not environment_differences(manifest, environment(1, torch.device("cpu"))):
            assert "bit-equal" in proc.stdout


def test_committed_architecture_results_reproduce_on_a_sample():
    """Swept widths under μP and swept depths and inits re-run per architecture, each trial in its own
    architecture's cohort (bit-equal on the recording machine class, conclusions elsewhere)."""
    for name, share in (("width_mup", "3%"), ("depth_linear", "5%")):
        proc = run_here("check", str(ROOT / "results" / "reference" / name), "--trials", share)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "reproduces" in proc.stdout


def test_committed_search_results_reproduce_on_a_sample():
    """A bracket search's path is re-derived from its stored results (every trial explained), and a
    sample of its trials re-runs."""
    proc = run_here("check", str(ROOT / "results" / "reference" / "quickstart_search"), "--trials", "5%")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reproduces" in proc.stdout


def test_only_what_decides_the_bits_makes_environments_differ():
    """A kernel update keeps bit-equality; another architecture, C library or vector width does not."""
    assert system_family("Linux-6.18.44-fc-v669-x86_64-with-glibc2.36") == "Linux x86_64 glibc2.36"
    assert system_family("Linux-6.1.0-13-amd64-x86_64-with-glibc2.36") == "Linux x86_64 glibc2.36"
    assert system_family("macOS-14.2-arm64-arm-64bit") == "macOS-14.2-arm64-arm-64bit"  # kept whole
    current = {**environment(1, torch.device("cpu")), "platform": "Linux x86_64 glibc2.36", "cpu_capability": "AVX512"}
    recorded = {"hpconj": current["hpconj"], "torch": current["torch"], "device": "cpu", "threads_per_worker": 1,
                "platform": "Linux-6.18.44-fc-v669-x86_64-with-glibc2.36", "cpu_capability": "AVX512",
                "arithmetic": current["arithmetic"]}
    assert environment_differences(recorded, current) == []
    assert environment_differences({**recorded, "platform": "Linux-6.18.44-fc-v769-x86_64-with-glibc2.36"}, current) == []
    for change in ({"platform": "Linux-6.18.44-fc-v669-aarch64-with-glibc2.36"},
                   {"platform": "Linux-6.18.44-fc-v669-x86_64-with-glibc2.31"}, {"cpu_capability": "AVX2"},
                   {"cpu_capability": None}, {"arithmetic": "0" * 16}, {"arithmetic": None},
                   {"threads_per_worker": 2}):
        (difference,) = environment_differences({**recorded, **change}, current)
        assert difference.startswith(next(iter(change)))


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="needs a machine whose kernels can be "
                    "pinned to narrower ones")
def test_the_arithmetic_fingerprint_sees_which_kernels_compute():
    """Same machine, same versions: MKL held to its AVX2 kernels, or torch's own kernels held to
    AVX2, compute other bits, and the fingerprint says so."""
    script = "from hpconj.repro import arithmetic_fingerprint as f; print(f('cpu'))"

    def fingerprint(**env: str) -> str:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              env={**os.environ, **env})
        return proc.stdout.strip()

    here = fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", here) and here == arithmetic_fingerprint("cpu")
    assert fingerprint(MKL_CBWR="AVX2") != here
    assert fingerprint(ATEN_CPU_CAPABILITY="avx2") != here


def test_folder_rerun_with_a_smaller_grid_still_checks(copy, tmp_path):
    """Trials of lr values no longer in the stored config are still this experiment's."""
    from conftest import TINY

    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump({**TINY, "sweep": {**TINY["sweep"], "lr": {"values": [0.01, 0.1]}}}))
    assert run_here("sweep", str(smaller), "--out", str(copy), "--quiet").returncode == 0
    proc = run_here("check", str(copy), "--trials", "10%")
    assert proc.returncode == 0, proc.stdout
