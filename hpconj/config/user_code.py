"""A config's links to the user's own files and code: data files hashed, callables imported."""
from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any

from hpconj.config.messages import _where, format_path
from hpconj.config.schema import CallableData, Config, ConfigError, FileData, UserModelTask


def _resolve_files(config: Config, base: Path, label: str, lines: dict[tuple[Any, ...], int]) -> Config:
    """Make a data file path absolute and record its sha256 (the trial identity uses the hash)."""
    task = config.task
    data = getattr(task, "data", None)
    if not isinstance(data, FileData):
        return config
    file = Path(data.path).expanduser()
    if not file.is_absolute():
        file = (base / file).resolve()
    loc = ("task", "data")
    if not file.is_file():
        raise ConfigError([f"{_where(label, loc, lines)} task.data: no such data file: {file}"])
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    new_data = data.model_copy(update={"path": str(file), "sha256": digest})
    return config.model_copy(update={"task": task.model_copy(update={"data": new_data})})


def _check_callables(config: Config, label: str, lines: dict[tuple[Any, ...], int]) -> None:
    """Import user `module:function` targets now, so a typo fails before any training."""
    task = config.task
    targets: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(task, UserModelTask):
        targets.append((("task", "model"), task.model))
    data = getattr(task, "data", None)
    if isinstance(data, CallableData):
        targets.append((("task", "data"), data.target))
    for loc, target in targets:
        try:
            resolve_callable(target)
        except ImportError as exc:
            raise ConfigError([f"{_where(label, loc, lines)} {format_path(loc)}: {exc}"]) from None


def add_import_paths(*folders: Path) -> None:
    """Let `module:function` targets live beside the config or in the working directory."""
    for folder in (Path.cwd(), *folders):
        entry = str(folder.resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)


def resolve_callable(target: str) -> Any:
    """Import `package.module:function`; ImportError with a precise reason otherwise."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is the user's input problem
        raise ImportError(f"cannot import module {module_name!r} ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ImportError(f"module {module_name!r} has no callable {attr!r}")
    return fn
