"""The GPU path: memory per chunk, and (on a CUDA machine only) the cohort engine on CUDA.

The sizing arithmetic runs everywhere. The CUDA tests are skipped without a CUDA device; on one
they check that the cohort engine agrees with the reference engine, that a sweep repeats bit for
bit, and that the determinism settings are recorded.

Why not bit-for-bit cohort vs reference on a GPU (as on the CPU): cuBLAS chooses its GEMM kernel
(tile shape, split-K) from the problem's shape, so a stacked `bmm` over K trials and one trial's
`mm` sum their products in different orders; deterministic algorithms make each run repeatable,
not shape-independent. The differences start at float32 rounding (~1e-7) and stay below 1e-5
relative over these short trainings.
"""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from conftest import TINY, merged, run_cli
from hpconj.config import config_from_dict
from hpconj.executor import CUDA_MEMORY_FRACTION, Footprint, chunk_size_for_memory, fit_chunk_size, measure_footprint
from hpconj.sweep import load_task

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (this machine has none)")


def _tiny_task():
    return load_task(config_from_dict(TINY))


# ----------------------------------------------------------------------------- sizing (everywhere)
def test_footprint_of_the_tiny_mlp():
    task = _tiny_task()
    footprint = measure_footprint(task)
    assert footprint.params == (8 * 16 + 16) + (16 * 4 + 4)
    # one example's layer outputs: Linear(16), ReLU(16), Linear(4)
    assert footprint.activations == 16 + 16 + 4 and footprint.widest == 16
    assert footprint.eval_rows == task.data.n_train == 205 and footprint.float_bytes == 4
    assert footprint.trial_bytes(32) == 4 * (5 * footprint.params + 3 * 32 * 36 + 2 * 205 * 16)


def test_chunk_size_uses_at_most_the_memory_fraction():
    footprint = Footprint(params=1_000_000, activations=3000, widest=1000, eval_rows=8192, fixed_bytes=2**26)
    free = 8 * 2**30
    chunk = chunk_size_for_memory(free, footprint, 128, cap=10_000)
    assert 1 < chunk < 10_000
    used = footprint.fixed_bytes + chunk * footprint.trial_bytes(128)
    assert used <= CUDA_MEMORY_FRACTION * free < used + footprint.trial_bytes(128)  # the most that fits
    assert chunk_size_for_memory(free, footprint, 128, cap=7) == 7  # --chunk-size caps it
    assert chunk_size_for_memory(free, footprint, 128, cap=10_000, fraction=0.25) < chunk  # shared device
    assert chunk_size_for_memory(2**20, footprint, 128, cap=256) == 1  # never 0: one trial at a time


def test_the_cpu_keeps_the_requested_chunk_size():
    assert fit_chunk_size(_tiny_task(), 32, torch.device("cpu"), 256) == 256


# ----------------------------------------------------------------------------- on CUDA
CUDA_TINY = merged(TINY, {"device": "cuda", "sweep": {"lr": {"values": [0.01, 0.1, 1000.0]}}})


@pytest.fixture(scope="module")
def cuda_runs(tmp_path_factory):
    """The tiny sweep on CUDA: cohort engine twice, reference engine once."""
    import yaml

    folder = tmp_path_factory.mktemp("cuda")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(CUDA_TINY, sort_keys=False))
    runs = {}
    for name, engine in (("cohort", "cohort"), ("again", "cohort"), ("reference", "reference")):
        proc = run_cli("sweep", str(config), "--out", str(folder / name), "--engine", engine, "--quiet")
        assert proc.returncode == 0, proc.stderr
        runs[name] = folder / name
    return runs


@cuda
def test_cohort_agrees_with_reference_on_cuda(cuda_runs):
    cohort = pd.read_csv(cuda_runs["cohort"] / "trials.csv").set_index("trial_id")
    reference = pd.read_csv(cuda_runs["reference"] / "trials.csv").set_index("trial_id").loc[cohort.index]
    assert (cohort["status"] == reference["status"]).all()
    assert set(cohort["status"]) == {"ok", "diverged"}  # no trial failed (e.g. a non-deterministic kernel)
    assert (cohort["steps"] == reference["steps"]).all()
    ok = cohort["status"] == "ok"
    for column in ("train_loss", "val_loss", "metric"):
        a, b = cohort.loc[ok, column].to_numpy(), reference.loc[ok, column].to_numpy()
        assert ((abs(a - b) / abs(b)) <= 1e-5).all(), column
    n_val = 256 - 205  # one example's worth: a prediction may flip on a 1e-7 change
    assert (abs(cohort.loc[ok, "val_error"] - reference.loc[ok, "val_error"]) <= 1 / n_val + 1e-12).all()


@cuda
def test_a_cuda_sweep_repeats_bit_for_bit(cuda_runs):
    first = pd.read_csv(cuda_runs["cohort"] / "trials.csv").drop(columns=["wall_s"])
    again = pd.read_csv(cuda_runs["again"] / "trials.csv").drop(columns=["wall_s"])
    pd.testing.assert_frame_equal(first, again)  # params_sha256 included: the same weights
    pd.testing.assert_frame_equal(pd.read_csv(cuda_runs["cohort"] / "curves.csv"),
                                  pd.read_csv(cuda_runs["again"] / "curves.csv"))


@cuda
def test_cuda_manifest_records_device_and_determinism(cuda_runs):
    manifest = json.loads((cuda_runs["cohort"] / "manifest.json").read_text())
    assert manifest["device"].startswith("cuda") and manifest["device_name"] == torch.cuda.get_device_name(0)
    determinism = manifest["determinism"]
    assert determinism["use_deterministic_algorithms"] is True and determinism["cudnn_benchmark"] is False
    assert determinism["cudnn_deterministic"] is True and determinism["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert manifest["workers"] == 1 and manifest["executor"] == "local"
    assert 1 <= manifest["chunk_size"] <= 256


@cuda
def test_chunk_size_fits_the_free_cuda_memory():
    task = _tiny_task()
    device = torch.device("cuda")
    free, _ = torch.cuda.mem_get_info(device)
    footprint = measure_footprint(task)
    chunk = fit_chunk_size(task, 32, device, cap=10**12)
    assert chunk >= 1
    assert footprint.fixed_bytes + chunk * footprint.trial_bytes(32) <= CUDA_MEMORY_FRACTION * free * 1.01
    assert fit_chunk_size(task, 32, device, cap=5) == min(5, chunk)
    assert fit_chunk_size(task, 32, device, cap=10**12, share=0.5) <= math.ceil(chunk / 2) + 1


@cuda
def test_ray_on_cuda_agrees_with_local(cuda_runs, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed")
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CUDA_TINY, sort_keys=False))
    proc = run_cli("sweep", str(config), "--out", str(tmp_path / "ray"), "--executor", "ray", "--quiet")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["executor"] == "ray" and manifest["ray"]["gpus_per_task"] == 0.5
    local = pd.read_csv(cuda_runs["cohort"] / "trials.csv").set_index("trial_id")
    on_ray = pd.read_csv(tmp_path / "ray" / "trials.csv").set_index("trial_id").loc[local.index]
    assert (local["status"] == on_ray["status"]).all()
    ok = local["status"] == "ok"  # chunks differ (2 tasks per GPU): same kernels up to cuBLAS's shape choices
    a, b = on_ray.loc[ok, "val_loss"].to_numpy(), local.loc[ok, "val_loss"].to_numpy()
    assert ((abs(a - b) / abs(b)) <= 1e-5).all()
