"""`--executor ray`: the same results as the local executor, resume, failures, and one-line errors.

Real Ray on this machine. The first tests let the CLI start and stop its own local instance (the
default path users take); the later ones share one instance per module (`ray_instance`), which
the CLI, run in this process, uses without stopping it: its workers stay warm between tests.
"""
from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from pathlib import Path

import pandas as pd
import torch
import pytest
import yaml
from typer.testing import CliRunner

from conftest import TINY, merged, run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'hpconj[ray]' (make test installs it)")

# A user model equal to TINY's mlp, with a hook that misbehaves only inside a Ray worker process.
USER_MODEL = """
import os
import sys

from torch import nn


def on_ray_worker():
    return "default_worker" in sys.argv[0]


def build(input_dim, output_dim):
    return nn.Sequential(nn.Linear(input_dim, 16), nn.ReLU(), nn.Linear(16, output_dim))


def fails_on_workers(input_dim, output_dim):
    if on_ray_worker():
        raise ValueError("no such device on this node")
    return build(input_dim, output_dim)


def kills_one_worker(input_dim, output_dim):
    '''The first Ray worker that builds the model dies, as if its node were lost.'''
    if on_ray_worker():
        try:
            fd = os.open(os.path.join(os.path.dirname(__file__), "died.marker"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os._exit(1)
    return build(input_dim, output_dim)
"""


def _table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "trials.csv").drop(columns=["wall_s"])


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write(folder: Path, name: str, data: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ray_config(tmp_path_factory) -> Path:
    """TINY with `executor: ray` in the YAML."""
    return _write(tmp_path_factory.mktemp("cfg"), "tiny.yaml", merged(TINY, {"executor": "ray"}))


@pytest.fixture(scope="module")
def local_run(ray_config, tmp_path_factory) -> Path:
    """The reference: the same config through the local executor (--executor overrides the YAML)."""
    out = tmp_path_factory.mktemp("local") / "res"
    proc = run_cli("sweep", str(ray_config), "--out", str(out), "--quiet", "--executor", "local")
    assert proc.returncode == 0, proc.stderr
    return out


# ----------------------------------------------------------------------------- one-line errors
def cli(*args: str) -> tuple[int, str, str]:
    """`hpconj ARGS` in this process (fast; and it finds ray_instance below): (exit code, stdout, stderr)."""
    from hpconj.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_without_ray_the_executor_is_one_line(ray_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    code, _, err = cli("sweep", str(ray_config), "--out", str(tmp_path / "r"))
    assert code == 2, err
    assert err.strip().splitlines() == ["error: --executor ray needs Ray: pip install 'hpconj[ray]'"]
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


def test_an_address_where_nothing_listens_is_one_line(ray_config, tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = cli("sweep", str(ray_config), "--out", str(tmp_path / "r"), "--address", f"127.0.0.1:{port}")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"--address 127.0.0.1:{port}: nothing answers there" in lines[0], lines
    assert "ray start --head" in lines[0] and not ray.is_initialized()


def test_an_address_that_is_not_ray_fails_at_once():
    """Ray would retry for minutes against a server that is not a Ray GCS: the gRPC probe does not."""
    from hpconj.executor import ExecutorError
    from hpconj.ray_executor import _check_reachable

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer_like_http() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer_like_http, daemon=True)
    thread.start()
    with pytest.raises(ExecutorError, match="something answers there, but not Ray"):
        _check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
    thread.join(5)
    server.close()


def test_address_without_ray_executor_is_refused(tmp_path):
    code, _, err = cli("sweep", str(_write(tmp_path, "tiny.yaml", TINY)), "--out", str(tmp_path / "r"),
                       "--address", "127.0.0.1:6379")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --address is the address of a Ray cluster: it needs --executor ray (or executor: ray)"]


# ----------------------------------------------------------------------------- same results
def test_yaml_executor_ray_gives_the_local_table(ray_config, local_run, tmp_path):
    """`executor: ray` in the YAML runs on a local Ray instance the CLI starts and stops; the
    trials are bit-identical to the local executor's (weights' digests included)."""
    out = tmp_path / "ray"
    proc = run_cli("sweep", str(ray_config), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(_table(local_run), _table(out))
    pd.testing.assert_frame_equal(pd.read_csv(local_run / "curves.csv"), pd.read_csv(out / "curves.csv"))
    manifest, local = _manifest(out), _manifest(local_run)
    assert manifest["executor"] == "ray" and manifest["status"] == "complete"
    assert manifest["ray"]["version"] == ray.__version__ and manifest["ray"]["local_instance"] is True
    assert manifest["ray"]["address"] and manifest["ray"]["max_retries"] == 3
    assert manifest["workers"] == 2 and manifest["threads_per_worker"] == 1
    # the CLI flag overrode the YAML for the reference run, and config.yaml says where trials ran
    assert local["executor"] == "local" and "ray" not in local
    assert yaml.safe_load((local_run / "config.yaml").read_text())["executor"] == "local"
    assert yaml.safe_load((out / "config.yaml").read_text())["executor"] == "ray"
    assert local["experiment_key"] == manifest["experiment_key"]  # the executor is not part of the experiment


# ----------------------------------------------------------------------------- on a shared instance
@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the tests below; the CLI in this process uses it and leaves it up."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_resume_with_ray_and_check_locally(ray_instance, ray_config, local_run, tmp_path):
    out = tmp_path / "res"
    code, _, err = cli("sweep", str(ray_config), "--out", str(out), "--quiet", "--max-trials", "20")
    assert code == 0, err
    assert len(pd.read_csv(out / "trials.csv")) == 20 and _manifest(out)["status"] == "partial"
    assert ray_instance.is_initialized()  # not ours to stop
    code, stdout, err = cli("sweep", str(ray_config), "--out", str(out), "--executor", "ray")
    assert code == 0, err
    assert "28 trials run, 20 already done" in " ".join(stdout.split())
    assert _manifest(out)["ray"]["local_instance"] is False
    pd.testing.assert_frame_equal(_table(local_run), _table(out))
    # a folder made on Ray is checked (re-run locally) like any other: bit-equal
    code, stdout, err = cli("check", str(out), "--trials", "25%")
    assert code == 0, stdout + err
    assert "reproduces" in stdout and "bit-equal" in stdout


def test_an_exception_escaping_a_task_is_one_line(ray_instance, tmp_path):
    (tmp_path / "failing_model.py").write_text(USER_MODEL)  # a module name of its own: workers cache imports
    config = _write(tmp_path, "fails.yaml", merged(TINY, {"task": {"model": "failing_model:fails_on_workers",
                                                                    "_replace": True, "data": TINY["task"]["data"]}}))
    out = tmp_path / "res"
    code, _, err = cli("sweep", str(config), "--out", str(out), "--quiet", "--executor", "ray")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: a Ray task (") and "at batch size" in lines[0]
    assert "raised TaskError: task.model failing_model:fails_on_workers raised ValueError: no such device on this node" \
        in lines[0]
    assert _manifest(out)["status"] == "partial"  # the folder is left consistent: resumable


def test_a_task_whose_worker_dies_is_retried(ray_instance, tmp_path):
    (tmp_path / "dying_model.py").write_text(USER_MODEL)
    config = _write(tmp_path, "dies.yaml", merged(TINY, {"task": {"model": "dying_model:kills_one_worker",
                                                                   "_replace": True, "data": TINY["task"]["data"]}}))
    out = tmp_path / "res"
    code, _, err = cli("sweep", str(config), "--out", str(out), "--quiet", "--executor", "ray")
    assert code == 0, err
    assert (tmp_path / "died.marker").exists()  # a worker did die mid-task
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 48 and set(trials["status"]) == {"ok", "diverged"}
    assert _manifest(out)["status"] == "complete"


def test_workers_caps_the_tasks_in_flight(ray_instance):
    """--workers N: at most N units are submitted at a time (Ray would otherwise run one per CPU)."""
    from hpconj.config import config_from_dict
    from hpconj.workers import split_units
    from hpconj.ray_executor import RayExecutor
    from hpconj.tasks import build_task
    from hpconj.trials import expand_trials, group_cohorts

    config = config_from_dict(merged(TINY, {"budget": {"_replace": True, "steps": 5}}))
    trials = expand_trials(config)
    units = split_units(group_cohorts(trials), {t.trial_id for t in trials}, chunk_size=4, workers=2)
    assert len(units) > 2
    executor = RayExecutor("cohort", 4, device=torch.device("cpu"), workers=1, units=len(units))
    in_flight = []
    with executor:
        for _ in executor.run(build_task(config.task), config.task, units, torch.device("cpu")):
            in_flight.append(len(executor._pending))
    assert executor.resources.workers == 1 and max(in_flight) <= 1
