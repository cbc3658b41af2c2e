"""The sweep configuration: a pydantic schema, validated once, then frozen.

`load_config(path)` is the only place YAML is read. Every error becomes a `ConfigError` whose
message names the file, the line (where known), the key path and what was expected, e.g.
``quickstart.yaml:7 sweep.batch_size[2]: must be a positive integer, got -4``.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import math
import re
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

BUILTIN_MODELS = ("mlp", "deep_linear", "quadratic")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class ConfigError(ValueError):
    """Bad input in a config file: one line per problem, ready to print."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def _keyed(key: str, reason: str) -> PydanticCustomError:
    """An error from a model-level check about one key (a path relative to the model: 'h_min',
    'sweep.momentum'), so that the message names that key and its line."""
    return PydanticCustomError("keyed", "{key}: {reason}", {"key": key, "reason": reason})


def _repeated(values: list[Any]) -> str:
    """'values must be distinct, got [2, 4, 2] (2 repeats)'."""
    dups = sorted({v for v in values if values.count(v) > 1}, key=str)
    return f"values must be distinct, got {values} ({', '.join(map(repr, dups))} repeats)"


class Record(BaseModel):
    """A frozen record that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- data sets
class TeacherData(Record):
    """A random teacher network: x ~ N(0, I), y = teacher(x) (+ noise), or its argmax class."""

    name: Literal["teacher"] = "teacher"
    examples: int = Field(2048, gt=0)
    input_dim: int = Field(20, gt=0)
    outputs: int = Field(10, gt=0)
    hidden: int = Field(32, gt=0)
    kind: Literal["classification", "regression"] = "classification"
    noise: float = Field(0.0, ge=0)
    seed: int = 0


class FileData(Record):
    """A user's data: `.npz` (arrays x and y) or `.csv` (target column `y`, else the last one)."""

    name: Literal["file"] = "file"
    path: str
    sha256: str = ""


class CallableData(Record):
    """A user's `package.module:function` returning (x, y) arrays."""

    name: Literal["callable"] = "callable"
    target: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class NamedData(Record):
    """A data set that ships with a package: `digits` (scikit-learn) or `mnist1d` (offline)."""

    name: Literal["digits", "mnist1d"]


DataSpec = Union[TeacherData, FileData, CallableData, NamedData]


def _data_from_string(value: str) -> dict[str, Any]:
    if value in ("digits", "mnist1d"):
        return {"name": value}
    if value == "teacher":
        return {"name": "teacher"}
    if value.endswith((".npz", ".csv")):
        return {"name": "file", "path": value}
    if _CALLABLE.match(value):
        return {"name": "callable", "target": value}
    raise ValueError(f"must be one of {_DATA_CHOICES}, got {value!r}")


_DATA_CHOICES = "teacher | digits | mnist1d | a .npz or .csv file | 'package.module:function'"


def _parse_data(value: Any) -> Any:
    if isinstance(value, str):
        return _data_from_string(value)
    if not isinstance(value, dict):
        raise ValueError(f"must be one of {_DATA_CHOICES} (or a mapping with a name), got {value!r}")
    if isinstance(value, dict) and "name" in value and isinstance(value["name"], str):
        name = value["name"]
        if name not in ("teacher", "digits", "mnist1d", "file", "callable"):
            return {**_data_from_string(name), **{k: v for k, v in value.items() if k != "name"}}
    return value


class SupervisedTask(Record):
    """Fields shared by every task that trains a network on a finite data set."""

    data: Annotated[DataSpec, Field(discriminator="name")]
    val_fraction: float = Field(0.2, gt=0, lt=1)
    data_seed: int = 0

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> Any:
        return _parse_data(value)


class MlpTask(SupervisedTask):
    """Fully connected network: `depth` hidden layers of `width` units and `activation`."""

    model: Literal["mlp"]
    width: int = Field(64, gt=0)
    depth: int = Field(2, ge=0)
    activation: Literal["relu", "tanh", "gelu"] = "relu"


class DeepLinearTask(SupervisedTask):
    """Saxe's deep linear network: `depth` bias-free linear layers, W ~ N(0, init_scale²/fan_in)."""

    model: Literal["deep_linear"]
    width: int = Field(32, gt=0)
    depth: int = Field(3, ge=1)
    init_scale: float = Field(1.0, gt=0)


class UserModelTask(SupervisedTask):
    """A user's `package.module:function(input_dim, output_dim, **kwargs) -> nn.Module`."""

    model: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not _CALLABLE.match(value):
            raise ValueError(
                f"must be one of mlp | deep_linear | quadratic | 'package.module:function', got {value!r}"
            )
        return value


class QuadraticTask(Record):
    """The noisy quadratic model (see hpconj.tasks.quadratic for the exact definition)."""

    model: Literal["quadratic"]
    dim: int = Field(100, gt=0)
    h_min: float = Field(1e-3, gt=0)
    h_max: float = Field(1.0, gt=0)
    sigma: float = Field(1.0, ge=0)
    theta0: float = 1.0

    @model_validator(mode="after")
    def _curvatures(self) -> QuadraticTask:
        if self.h_min > self.h_max:
            raise _keyed("h_min", f"must not exceed h_max ({self.h_max}), got {self.h_min}")
        return self


def _task_tag(value: Any) -> str | None:
    model = value.get("model") if isinstance(value, dict) else getattr(value, "model", None)
    if model in BUILTIN_MODELS:
        return model
    return "user" if isinstance(model, str) else None


TaskSpec = Annotated[
    Union[
        Annotated[MlpTask, Tag("mlp")],
        Annotated[DeepLinearTask, Tag("deep_linear")],
        Annotated[QuadraticTask, Tag("quadratic")],
        Annotated[UserModelTask, Tag("user")],
    ],
    Discriminator(
        _task_tag,
        custom_error_type="task_model",
        custom_error_message="task.model is required: mlp | deep_linear | quadratic | 'package.module:function'",
    ),
]
_TASK_TAGS = {"mlp", "deep_linear", "quadratic", "user"}


# ----------------------------------------------------------------------------- sweep axes
class LrValues(Record):
    values: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)


class LrLog2Range(Record):
    """2**x for x from a to b inclusive: `num` points, or a `step` in octaves (0.5 = half-octave)."""

    log2_range: tuple[float, float]
    num: int | None = Field(None, ge=1)
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _count(self) -> LrLog2Range:
        lo, hi = self.log2_range
        if lo > hi:
            raise _keyed("log2_range", f"must be ascending (low, high), got {[lo, hi]}")
        if (self.num is None) == (self.step is None):
            given = "both" if self.num is not None else "neither"
            raise ValueError(f"give exactly one of num | step next to log2_range, got {given}")
        return self


class LrLogRange(Record):
    """`num` learning rates evenly spaced in log between the two (positive) ends, inclusive."""

    log_range: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    num: int = Field(ge=1)

    @model_validator(mode="after")
    def _order(self) -> LrLogRange:
        if self.log_range[0] > self.log_range[1]:
            raise _keyed("log_range", f"must be ascending (low, high), got {list(self.log_range)}")
        return self


def _lr_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("values", "log2_range", "log_range"):
            if key in value:
                return key
        return None
    return type(value).__name__


LrSpec = Annotated[
    Union[
        Annotated[LrValues, Tag("values")],
        Annotated[LrLog2Range, Tag("log2_range")],
        Annotated[LrLogRange, Tag("log_range")],
        Annotated[LrValues, Tag("LrValues")],
        Annotated[LrLog2Range, Tag("LrLog2Range")],
        Annotated[LrLogRange, Tag("LrLogRange")],
    ],
    Discriminator(
        _lr_tag,
        custom_error_type="lr_spec",
        custom_error_message="must be a mapping with one of values | log2_range | log_range",
    ),
]
_LR_TAGS = {"values", "log2_range", "log_range", "LrValues", "LrLog2Range", "LrLogRange"}


def lr_grid(spec: LrValues | LrLog2Range | LrLogRange) -> list[float]:
    """The learning rates of a spec, ascending, without duplicates."""
    if isinstance(spec, LrValues):
        values = list(spec.values)
    elif isinstance(spec, LrLog2Range):
        lo, hi = spec.log2_range
        num = spec.num if spec.num is not None else int(math.floor((hi - lo) / spec.step + 1e-9)) + 1
        exps = [lo] if num == 1 else [lo + (hi - lo) * i / (num - 1) for i in range(num)]
        values = [2.0 ** round(e, 12) for e in exps]
    else:
        lo, hi = (math.log2(v) for v in spec.log_range)
        num = spec.num
        values = [2.0 ** (lo if num == 1 else lo + (hi - lo) * i / (num - 1)) for i in range(num)]
    return sorted(set(values))


class Sweep(Record):
    lr: LrSpec
    batch_size: list[Annotated[int, Field(gt=0, strict=True)]] = Field(min_length=1)
    momentum: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=lambda: [0.0], min_length=1)

    @field_validator("batch_size", "momentum")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError(_repeated(values))
        return sorted(values)


class Budget(Record):
    """Training length: exactly one of epochs, examples or steps."""

    epochs: float | None = Field(None, gt=0)
    examples: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        given = [k for k in ("epochs", "examples", "steps") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of epochs | examples | steps, got {', '.join(given) or 'none'}")
        return self


class Metric(Record):
    name: Literal["train_loss", "val_loss", "val_error"] = "val_loss"
    goal: Literal["minimize"] = "minimize"


ADAPTIVE = ("adam", "rmsprop", "adagrad")


class AdamSettings(Record):
    """torch.optim.Adam's β2 and eps; β1 is the sweep's momentum axis (default [0.9])."""

    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class RMSpropSettings(Record):
    """torch.optim.RMSprop's smoothing constant α and eps; its momentum is the sweep's momentum axis."""

    alpha: float = Field(0.99, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class AdagradSettings(Record):
    """torch.optim.Adagrad's eps (no lr decay, initial accumulator 0)."""

    eps: float = Field(1e-10, gt=0)


class McAllesterSettings(Record):
    """Meta-parameters of McAllester's noise-adaptive SGD (see hpconj.optimizers); lr is λ_η."""

    lambda_b: float = Field(16.0, gt=0)
    eps: float = Field(1e-12, gt=0)
    warmup: int = Field(10, ge=1, strict=True)


OPTIMIZER_SETTINGS: dict[str, type[Record]] = {
    "adam": AdamSettings, "rmsprop": RMSpropSettings, "adagrad": AdagradSettings, "mcallester": McAllesterSettings,
}
DEFAULT_MOMENTUM: dict[str, float] = {"adam": 0.9}


class NoiseScale(Record):
    """The gradient noise scale B_simple, measured per seed at initialisation on `examples` examples."""

    enabled: bool = True
    examples: int = Field(1024, gt=1, strict=True)


class Config(Record):
    """A whole sweep, validated. Nothing downstream reads YAML again."""

    # one folder name under results/: no separators, and no leading dot (so never "." or "..")
    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    task: TaskSpec
    optimizer: Literal["sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad", "mcallester"] = "momentum"
    adam: AdamSettings | None = None
    rmsprop: RMSpropSettings | None = None
    adagrad: AdagradSettings | None = None
    mcallester: McAllesterSettings | None = None
    parameterizations: list[Literal["standard", "sqrt", "conjugate"]] = Field(
        default_factory=lambda: ["standard", "conjugate"], min_length=1
    )
    reference_batch_size: int = Field(1, gt=0, strict=True)
    budget: Budget
    sweep: Sweep
    seeds: list[Annotated[int, Field(ge=0, strict=True)]] = Field(default_factory=lambda: [0], min_length=1)
    metric: Metric = Field(default_factory=Metric)
    noise_scale: NoiseScale = Field(default_factory=NoiseScale)
    device: str = "auto"
    executor: Literal["local", "ray"] = "local"  # where the trials run; --executor overrides it

    @model_validator(mode="before")
    @classmethod
    def _optimizer_defaults(cls, data: Any) -> Any:
        """Resolve the active optimizer's settings block and its default momentum axis, so that the
        stored config states every value a trial used."""
        if not isinstance(data, dict) or not isinstance(data.get("optimizer"), str):
            return data
        name = data["optimizer"]
        data = dict(data)
        if name in OPTIMIZER_SETTINGS and data.get(name) is None:
            data[name] = {}
        sweep = data.get("sweep")
        default_momentum = DEFAULT_MOMENTUM.get(name)
        block = data.get("adam")
        if name == "adam" and isinstance(block, dict) and "betas" in block:
            default_momentum, data["adam"] = cls._split_betas(block, sweep)
        if default_momentum is not None and isinstance(sweep, dict) and "momentum" not in sweep:
            data["sweep"] = {**sweep, "momentum": [default_momentum]}
        return data

    @staticmethod
    def _split_betas(block: dict[str, Any], sweep: Any) -> tuple[float, dict[str, Any]]:
        """torch's `betas: [β1, β2]`: β1 becomes the momentum axis' default, β2 the block's beta2."""
        betas = block["betas"]
        if (not isinstance(betas, list) or len(betas) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)):
            raise _keyed("adam.betas", f"must be a list of two numbers [β1, β2], got {betas!r}")
        if "beta2" in block:
            raise _keyed("adam.betas", "give β2 once: either adam.betas or adam.beta2")
        if isinstance(sweep, dict) and "momentum" in sweep:
            raise _keyed("adam.betas", "β1 is the sweep's momentum axis and sweep.momentum is given: "
                         "write adam: {beta2: ...} and keep β1 in sweep.momentum")
        rest = {k: v for k, v in block.items() if k != "betas"}
        return float(betas[0]), {**rest, "beta2": betas[1]}

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"must be a positive integer (a count) or a list of integers, got {value}")
            return list(range(value))
        if not isinstance(value, list):
            raise ValueError(f"must be a positive integer (a count) or a list of integers, got {value!r}")
        return value

    @field_validator("seeds", "parameterizations")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError(_repeated(values))
        return values

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"must be one of auto | cpu | cuda | cuda:N, got {value!r}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Config:
        if self.optimizer == "sgd" and any(b != 0 for b in self.sweep.momentum):
            raise _keyed("sweep.momentum", "optimizer sgd has no momentum: use optimizer: momentum, or "
                         f"sweep.momentum: [0.0], got {list(self.sweep.momentum)}")
        if self.optimizer in ("adagrad", "mcallester") and any(b != 0 for b in self.sweep.momentum):
            raise _keyed("sweep.momentum", f"optimizer {self.optimizer} has no momentum: give sweep.momentum: [0.0] "
                         f"or leave it out, got {list(self.sweep.momentum)}")
        for other in OPTIMIZER_SETTINGS:
            if other != self.optimizer and getattr(self, other) is not None:
                raise _keyed(other, f"settings for optimizer {other}, but optimizer is {self.optimizer}")
        if "sqrt" in self.parameterizations:
            self._check_sqrt_rule()
        if isinstance(self.task, QuadraticTask):
            if self.budget.epochs is not None:
                raise _keyed("budget.epochs", "the quadratic task streams fresh examples and has no epochs; "
                             "use budget.examples or budget.steps")
            if self.metric.name == "val_error":
                raise _keyed("metric.name", "the quadratic task has no classes, so no val_error; "
                             "use train_loss or val_loss")
        return self

    def _check_sqrt_rule(self) -> None:
        """The square-root rule sets 1 − β' = κ·(1 − β): every β must keep κ·(1 − β) < 1."""
        if self.optimizer not in ADAPTIVE:
            raise _keyed("parameterizations", f"sqrt is the square-root rule of adaptive optimizers (adam, rmsprop, "
                         f"adagrad), not of {self.optimizer}; use standard or conjugate")
        if self.optimizer == "rmsprop" and any(b != 0 for b in self.sweep.momentum):
            raise _keyed("sweep.momentum", "the sqrt rule is defined for rmsprop without momentum; "
                         f"use sweep.momentum: [0.0], got {list(self.sweep.momentum)}")
        betas: list[tuple[str, float]] = []
        if self.optimizer == "adam":
            betas = [("sweep.momentum", b) for b in self.sweep.momentum] + [("adam.beta2", self.adam.beta2)]
        elif self.optimizer == "rmsprop":
            betas = [("rmsprop.alpha", self.rmsprop.alpha)]
        for batch in self.sweep.batch_size:
            kappa = batch / self.reference_batch_size
            if kappa == 1:
                continue  # sqrt is standard there (parameterizations.sqrt keeps β as it is)
            for key, beta in betas:
                if kappa * (1 - beta) >= 1:
                    raise _keyed(key, f"the sqrt rule needs κ·(1 − β) < 1 for every batch size, but at batch "
                                 f"size {batch} κ = B/B_ref = {kappa:g} and κ·(1 − {beta:g}) = "
                                 f"{kappa * (1 - beta):g}; raise reference_batch_size or β")

    @property
    def optimizer_settings(self) -> Record | None:
        """The active optimizer's settings block (None for the SGD family)."""
        return getattr(self, self.optimizer) if self.optimizer in OPTIMIZER_SETTINGS else None

    @property
    def lrs(self) -> list[float]:
        return lr_grid(self.sweep.lr)

    def canonical(self) -> dict[str, Any]:
        """The resolved config as plain data (what results/<name>/config.yaml holds)."""
        data = self.model_dump(mode="json")
        for name in OPTIMIZER_SETTINGS:  # only the active optimizer's block (older results have none)
            if data[name] is None:
                data.pop(name)
        return data

    def experiment_key(self) -> str:
        """Hash of everything that defines the experiment except the lr grid, seeds, name, device,
        executor and the noise-scale measurement (which changes no trial).

        A results folder accepts a re-run whose key matches: added lr values or seeds extend it.
        """
        data = self.canonical()
        data["sweep"].pop("lr")
        for key in ("seeds", "name", "device", "executor", "noise_scale"):
            data.pop(key)
        return stable_hash(data)

    def config_hash(self) -> str:
        return stable_hash(self.canonical())


def stable_hash(data: Any) -> str:
    """sha256 of canonical JSON (sorted keys, repr floats): the same on every machine."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- loading
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


_DATA_TAGS = ("teacher", "file", "callable", "digits", "mnist1d")
_LR_KEYS = ("values", "log2_range", "log_range")
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
