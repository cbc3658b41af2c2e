"""Reading a config file: YAML (duplicate keys refused), validation, file and import checks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpconj.config.messages import _messages
from hpconj.config.schema import Config, ConfigError
from hpconj.config.user_code import _check_callables, _resolve_files, add_import_paths

def load_config(path: str | Path, *, check_imports: bool = True) -> Config:
    """Read, validate and resolve a config file; raise ConfigError with one line per problem."""
    path = Path(path)
    label = path.name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file"]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the config file ({type(exc).__name__})"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{where}: malformed YAML: {problem}"]) from None
    _refuse_duplicate_keys(node, label)
    if raw is None:
        raise ConfigError([f"{label}: the config file is empty"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{label}:1: the config must be a mapping of keys, got {type(raw).__name__}"])
    lines = _line_index(node)
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_messages(exc, label, lines)) from None
    config = _resolve_files(config, path.parent, label, lines)
    if check_imports:
        add_import_paths(path.parent)
        _check_callables(config, label, lines)
    return config


def config_from_dict(raw: dict[str, Any], label: str = "<config>") -> Config:
    """Validate an already-parsed config (e.g. the resolved one stored with results)."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_messages(exc, label, {})) from None


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse_duplicate_keys(node: yaml.Node | None, label: str) -> None:
    """Raise ConfigError naming every key given twice in one mapping, at any depth.

    yaml.safe_load silently keeps the last value of a repeated key, so `seeds: 2` written twice
    would train whichever came last. Keys compare by resolved tag and text (`1` and `'1'` differ,
    as they do once loaded). Merge keys (`<<`) are skipped: overriding merged keys is their point.
    """
    problems: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()  # an alias shares its anchor's node: walk each node once

    def walk(n: yaml.Node) -> None:
        if id(n) in seen_nodes:
            return
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in n.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    line, name = key.start_mark.line + 1, (key.tag, key.value)
                    if name in first:
                        problems.append((line, f"{label}:{line}: duplicate key {key.value!r} "
                                               f"(first at line {first[name]})"))
                    else:
                        first[name] = line
                walk(value)
        elif isinstance(n, yaml.SequenceNode):
            for item in n.value:
                walk(item)

    if node is not None:
        walk(node)
    if problems:
        raise ConfigError([text for _, text in sorted(problems)])


def _line_index(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map each key path in the YAML document to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        index.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                child = path + (key.value,)
                index[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, path + (i,))

    if node is not None:
        walk(node, ())
    return index
