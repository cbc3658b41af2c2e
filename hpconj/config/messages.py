"""Pydantic's errors as the one line a person reads: file:line key.path: what was expected, got what."""
from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo

from hpconj.config.schema import (CallableData, Config, LR_SEARCHES, LrLog2Range, LrLogRange, LrValues, UserModelTask,
                                  _LR_TAGS, _TASK_TAGS)


_DATA_TAGS = ("teacher", "file", "callable", "digits", "mnist1d")
_LR_KEYS = ("values", "log2_range", "log_range", "search")
_MODEL_CHOICES = "mlp | deep_linear | quadratic | 'package.module:function'"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union tags and type names so the path matches the YAML keys."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        if prev == "task" and part in _TASK_TAGS:
            continue
        if prev == "lr" and part in _LR_TAGS:
            continue
        if prev == "data" and part in _DATA_TAGS:
            continue
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        out.append(part)
    return tuple(out)


def format_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    """The line of the key, else of its nearest parent key; None for a top-level key not in the file."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _where(label: str, loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> str:
    line = _line_for(loc, lines)
    return f"{label}:{line}" if line is not None else label


# ----------------------------------------------------------------------------- schema look-up
def _unwrap(node: Any, meta: list[Any]) -> tuple[Any, list[Any]]:
    """Strip Annotated (keeping its constraints) and Optional from an annotation."""
    while True:
        if get_origin(node) is Annotated:
            base, *extra = get_args(node)
            for item in extra:
                meta = meta + (list(item.metadata) if isinstance(item, FieldInfo) else [item])
            node = base
            continue
        if get_origin(node) in (Union, types.UnionType):
            members = [a for a in get_args(node) if a is not type(None)]
            if len(members) == 1 and len(members) < len(get_args(node)):
                node = members[0]
                continue
        return node, meta


def _union_member(node: Any, tag: Any) -> Any | None:
    """The member of a tagged union that pydantic names `tag` in an error location."""
    for member in get_args(node):
        if get_origin(member) is Annotated and any(
            isinstance(m, Tag) and m.tag == tag for m in get_args(member)[1:]
        ):
            return get_args(member)[0]
        if isinstance(member, type) and issubclass(member, BaseModel) and "name" in member.model_fields:
            if tag in get_args(member.model_fields["name"].annotation):
                return member
    return None


def _schema_at(loc: tuple[Any, ...]) -> tuple[Any, list[Any]]:
    """The annotation at a raw pydantic error location and the constraints (Gt, Lt, ...) on it.

    Returns (None, []) where the location does not lead anywhere in the schema.
    """
    node: Any = Config
    meta: list[Any] = []
    for part in loc:
        node, meta = _unwrap(node, meta)
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        if get_origin(node) in (Union, types.UnionType):
            member = _union_member(node, part)
            if member is None:
                return None, []
            node, meta = member, []
        elif isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None, []
            node, meta = field.annotation, list(field.metadata)
        elif get_origin(node) is list and isinstance(part, int):
            node, meta = get_args(node)[0], []
        elif get_origin(node) is tuple and isinstance(part, int) and part < len(get_args(node)):
            node, meta = get_args(node)[part], []
        else:
            return None, []
    return _unwrap(node, meta)


def _number(node: Any, meta: list[Any]) -> str | None:
    """'a positive integer', 'a number >= 0 and < 1', ... for a numeric field; None otherwise."""
    if node not in (int, float):
        return None
    bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in meta
              if type(m).__name__ in ("Gt", "Ge", "Lt", "Le")}
    upper = "lt" in bounds or "le" in bounds
    noun = "integer" if node is int else "number"
    if not upper and (bounds.get("gt") == 0 or (node is int and bounds.get("ge") == 1)):
        return f"a positive {noun}"
    if not upper and bounds.get("ge") == 0 and node is int:
        return "a non-negative integer"
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    conds = [f"{ops[k]} {bounds[k]:g}" for k in ops if k in bounds]
    return f"{'an integer' if node is int else 'a number'}{' ' + ' and '.join(conds) if conds else ''}"


def _got(value: Any) -> str:
    """', got <value>' in a short, one-line form."""
    if isinstance(value, (dict, list, tuple)):
        text = repr(value)
        if len(text) > 60:
            return f", got a {'mapping' if isinstance(value, dict) else 'list'}"
        return f", got {text}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f", got {text}"


def _choices(expected: str) -> list[str]:
    """pydantic's "'a', 'b' or 'c'" as ['a', 'b', 'c']."""
    return re.findall(r"'([^']*)'", expected)


def _expected(error: dict[str, Any]) -> str:
    """What a pydantic error means for the user: 'must be ..., got ...'."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    node, meta = _schema_at(tuple(error["loc"]))
    got = _got(value)
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    numeric = ("greater_than", "greater_than_equal", "less_than", "less_than_equal",
               "int_type", "int_parsing", "int_from_float", "float_type", "float_parsing", "bool_type")
    number = _number(node, meta) if kind in numeric else None
    if number:
        return f"must be {number}{got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        return f"must be {op} {next(iter(ctx.values()))}{got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer{got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind == "string_type":
        return f"must be a string{got}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys{got}"
    if kind == "literal_error":
        options = _choices(ctx.get("expected", ""))
        if len(options) == 1:
            return f"must be {options[0]}{got}"
        return f"must be one of {' | '.join(options)}{got}"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return f"must not be empty{got}"
        return f"must have at least {ctx.get('min_length')} items{got}"
    if kind == "too_long":
        if get_origin(node) is tuple:
            return f"must have exactly {len(get_args(node))} items{got}"
        return f"must have at most {ctx.get('max_length')} items{got}"
    if kind == "string_pattern_mismatch":
        return f"must be one folder name under results/: only letters, digits, '_', '.', '-', not starting with '.'{got}"
    if kind == "union_tag_invalid":
        return f"must be one of {' | '.join(_choices(ctx.get('expected_tags', '')))}{got}"
    if kind == "bool_type":
        return f"must be true or false{got}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = error["msg"]
    message = re.sub(r"^(Input|Value) should (be|have)", r"must \2", message)
    return message[0].lower() + message[1:] + got


def _describe(error: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """The key path and message for one pydantic error."""
    raw = tuple(error["loc"])
    loc = _clean_loc(raw)
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "keyed":  # a model-level check that names its key, relative to the model
        return loc + tuple(_split_path(ctx["key"])), ctx["reason"]
    if kind == "missing" and raw and isinstance(raw[-1], int):  # a too-short tuple
        node, _ = _schema_at(raw[:-1])
        parent = error.get("input")
        size = len(get_args(node)) if get_origin(node) is tuple else raw[-1] + 1
        return loc[:-1], f"must have exactly {size} items{_got(parent)}"
    if kind == "task_model":
        if not isinstance(value, dict):
            return loc, f"must be a mapping of keys{_got(value)}"
        if "model" not in value:
            return loc + ("model",), f"required key is missing (one of {_MODEL_CHOICES})"
        return loc + ("model",), f"must be one of {_MODEL_CHOICES}{_got(value['model'])}"
    if kind == "lr_spec":
        if isinstance(value, dict) and "search" in value:
            return loc + ("search",), f"must be one of {' | '.join(LR_SEARCHES)}{_got(value['search'])}"
        if isinstance(value, dict):
            keys = ", ".join(map(str, value)) or "none"
            return loc, f"must be a mapping with one of the keys {' | '.join(_LR_KEYS)}, got keys {keys}"
        return loc, f"must be a mapping with one of the keys {' | '.join(_LR_KEYS)}{_got(value)}"
    if kind == "union_tag_not_found" and loc[-1:] == ("data",):
        return loc + ("name",), f"required key is missing (one of {' | '.join(_DATA_TAGS)})"
    if kind == "extra_forbidden":
        parent, _ = _schema_at(raw[:-1])
        if parent in (LrValues, LrLog2Range, LrLogRange) and loc[-1] in _LR_KEYS:
            return loc, f"unknown key: give only one of {' | '.join(_LR_KEYS)}"
        return loc, f"unknown key{_allowed_hint(raw)}"
    return loc, _expected(error)


def _messages(exc: ValidationError, label: str, lines: dict[tuple[Any, ...], int]) -> list[str]:
    """One line per problem: 'file:line key.path: what was expected, got what', sorted by line."""
    described = [_describe(error) for error in exc.errors(include_url=False)]
    # Which keys a task may have depends on its model: with a bad model name they are noise.
    if any(loc == ("task", "model") for loc, _ in described):
        described = [(loc, message) for loc, message in described
                     if not (len(loc) == 2 and loc[0] == "task" and message.startswith("unknown key"))]
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for loc, message in described:
        message = " ".join(str(message).split())  # always one line
        if loc == ("name",) and loc not in lines:
            message += " (the name defaults to the file's name; set name: in the config)"
        text = f"{_where(label, loc, lines)} {format_path(loc)}: {message}"
        if text not in seen:
            seen.add(text)
            out.append((_line_for(loc, lines) or 0, text))
    return [text for _, text in sorted(out, key=lambda item: item[0])]


def _split_path(key: str) -> list[Any]:
    parts: list[Any] = []
    for piece in key.split("."):
        m = re.match(r"^(\w+)((?:\[\d+\])*)$", piece)
        if not m:
            return [key]
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts


def _allowed_hint(loc: tuple[Any, ...]) -> str:
    """Name the keys allowed where an unknown key was found (loc: pydantic's raw location)."""
    model, _ = _schema_at(loc[:-1])
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f", did you mean {close[0]}?" if close else ""
    hint += f" (expected one of: {', '.join(allowed)})"
    if model is UserModelTask:
        hint += "; a user model's own arguments go under task.kwargs"
    elif model is CallableData:
        hint += "; the function's own arguments go under task.data.kwargs"
    return hint
