"""The sweep configuration: a pydantic schema, validated once, then frozen.

`load_config(path)` is the only place YAML is read. Every error becomes a `ConfigError` whose
message names the file, the line (where known), the key path and what was expected, e.g.
``quickstart.yaml:7 sweep.batch_size[2]: must be a positive integer, got -4``.

schema.py holds the records; loading.py reads a file; messages.py turns pydantic's errors into
those lines; user_code.py links a config to the user's files and functions.
"""
from __future__ import annotations

from hpconj.config.loading import config_from_dict, load_config
from hpconj.config.messages import format_path
from hpconj.config.schema import (BUILTIN_MODELS, Budget, CallableData, Claim, Config, ConfigError, DataSpec, DeepLinearTask,
                                  FileData, LinearTeacherData, LrBracket, LrLog2Range, LrLogRange, LrRandom, LrValues,
                                  Metric, MlpTask, NamedData, NoiseScale, QuadraticTask, Record, SupervisedTaskSpec,
                                  Sweep, TaskSpec, TeacherData, UserModelTask, experiment_view, lr_grid, stable_hash)
from hpconj.config.user_code import add_import_paths, resolve_callable

__all__ = [
    "BUILTIN_MODELS", "Budget", "CallableData", "Claim", "Config", "ConfigError", "DataSpec", "DeepLinearTask", "FileData", "LinearTeacherData",
    "LrBracket", "LrLog2Range", "LrLogRange", "LrRandom", "LrValues", "Metric", "MlpTask", "NamedData", "NoiseScale", "QuadraticTask", "Record",
    "SupervisedTaskSpec", "Sweep", "TaskSpec", "TeacherData", "UserModelTask", "add_import_paths", "config_from_dict",
    "experiment_view", "format_path", "load_config", "lr_grid", "resolve_callable", "stable_hash",
]
