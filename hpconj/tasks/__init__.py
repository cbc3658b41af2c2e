"""Tasks: a validated TaskSpec → a runtime Task (data loaded, model builder chosen)."""
from __future__ import annotations

import functools

from hpconj.config import DataSpec, QuadraticTask, TaskSpec, UserModelTask
from hpconj.tasks.base import Metrics, Task, TaskError
from hpconj.tasks.data import Dataset, build_dataset
from hpconj.tasks.quadratic import NoisyQuadraticTask
from hpconj.tasks.supervised import SupervisedTask

__all__ = ["Metrics", "Task", "TaskError", "build_task"]


def build_task(spec: TaskSpec) -> Task:
    """Load the data and check that a model can be built (seed 0), on the CPU."""
    if isinstance(spec, QuadraticTask):
        return NoisyQuadraticTask.build(spec)
    data = _dataset(spec.data.model_dump_json(), spec.val_fraction, spec.data_seed)
    kind = f"{data.classes} classes" if data.classes else f"regression ({data.output_dim} outputs)"
    data_name = getattr(spec.data, "path", None) or getattr(spec.data, "target", None) or spec.data.name
    model_name = spec.model
    if not isinstance(spec, UserModelTask):
        model_name = f"{spec.model} {'-'.join([str(data.input_dim)] + [str(spec.width)] * _hidden(spec) + [str(data.output_dim)])}"
    task = SupervisedTask(spec, data, f"{model_name} on {data_name} ({data.n_train} train, {kind})")
    try:
        task.init_model(0)
    except Exception as exc:
        raise TaskError(f"task.model {spec.model} raised {type(exc).__name__}: {exc}") from None
    return task


@functools.lru_cache(maxsize=8)
def _dataset(data_json: str, val_fraction: float, data_seed: int) -> Dataset:
    """Built once per process for the architectures of a sweep that all read it."""
    from pydantic import TypeAdapter

    return build_dataset(TypeAdapter(DataSpec).validate_json(data_json), val_fraction, data_seed)


def _hidden(spec: object) -> int:
    depth = getattr(spec, "depth", 0)
    return depth if getattr(spec, "model", "") == "mlp" else max(depth - 1, 0)
