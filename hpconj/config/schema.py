"""The config schema: pydantic records, validated once, then frozen (hpconj.config)."""
from __future__ import annotations

import hashlib
import json
import math
import re
from itertools import product
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, SerializerFunctionWrapHandler, Tag, create_model,
                      field_validator, model_serializer, model_validator, ValidationError)
from pydantic_core import PydanticCustomError

from hpconj.axes import AXES, TASK_AXES
from hpconj.optim import OPTIMIZERS, SettingError, Settings

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
    """A frozen record that refuses unknown keys.

    Fields added after results were first recorded are named in `_omit_at_default`: a dump leaves
    them out while they hold their default, so that the trial ids and experiment keys of results
    recorded before the field existed stay what they were."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _omit_at_default: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for name in self._omit_at_default:
            if name in data and getattr(self, name) == type(self).model_fields[name].get_default(
                    call_default_factory=True):
                del data[name]
        return data


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


class LinearTeacherData(Record):
    """A linear map with a chosen spectrum (Saxe et al. 2014): x ~ N(0, I), y = W·x (+ noise), with
    W = U·diag(singular_values)·Vᵀ for random orthonormal U, V; regression."""

    name: Literal["linear_teacher"] = "linear_teacher"
    examples: int = Field(2048, gt=1)
    input_dim: int = Field(16, gt=0)
    outputs: int = Field(16, gt=0)
    singular_values: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [4.0, 2.0, 1.0, 0.5], min_length=1)
    noise: float = Field(0.0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _rank(self) -> LinearTeacherData:
        if len(self.singular_values) > min(self.input_dim, self.outputs):
            raise _keyed("singular_values", f"at most min(input_dim, outputs) = {min(self.input_dim, self.outputs)} "
                         f"values, got {len(self.singular_values)}")
        return self


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


DataSpec = Union[TeacherData, LinearTeacherData, FileData, CallableData, NamedData]


def _data_from_string(value: str) -> dict[str, Any]:
    if value in ("digits", "mnist1d"):
        return {"name": value}
    if value in ("teacher", "linear_teacher"):
        return {"name": value}
    if value.endswith((".npz", ".csv")):
        return {"name": "file", "path": value}
    if _CALLABLE.match(value):
        return {"name": "callable", "target": value}
    raise ValueError(f"must be one of {_DATA_CHOICES}, got {value!r}")


_DATA_CHOICES = "teacher | linear_teacher | digits | mnist1d | a .npz or .csv file | 'package.module:function'"


def _parse_data(value: Any) -> Any:
    if isinstance(value, str):
        return _data_from_string(value)
    if not isinstance(value, dict):
        raise ValueError(f"must be one of {_DATA_CHOICES} (or a mapping with a name), got {value!r}")
    if isinstance(value, dict) and "name" in value and isinstance(value["name"], str):
        name = value["name"]
        if name not in ("teacher", "linear_teacher", "digits", "mnist1d", "file", "callable"):
            return {**_data_from_string(name), **{k: v for k, v in value.items() if k != "name"}}
    return value


class SupervisedTaskSpec(Record):
    """Fields shared by every task that trains a network on a finite data set."""

    data: Annotated[DataSpec, Field(discriminator="name")]
    val_fraction: float = Field(0.2, gt=0, lt=1)
    data_seed: int = 0

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> Any:
        return _parse_data(value)


INITS = ("default", "gaussian", "orthogonal")
Init = Literal["default", "gaussian", "orthogonal"]


class MlpTask(SupervisedTaskSpec):
    """Fully connected network: `depth` hidden layers of `width` units and `activation`.

    init: `default` is PyTorch's (weights and biases U(±1/√fan_in)), `gaussian` weights
    N(0, 1/fan_in) and zero biases, `orthogonal` a (semi-)orthogonal weight of gain 1 and zero
    biases; `init_scale` multiplies the weights' standard deviation (the gain) in every case."""

    model: Literal["mlp"]
    width: int = Field(64, gt=0)
    depth: int = Field(2, ge=0)
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    init_scale: float = Field(1.0, gt=0)
    init: Init = "default"
    # set on the trials of the `mup` parameterization (hpconj.trials), not by users: the model is
    # then μP's (hpconj.tasks.supervised.build_mlp), with width multiplier width / mup_base_width
    mup_base_width: int | None = Field(None, gt=0)
    _omit_at_default: ClassVar[tuple[str, ...]] = ("init_scale", "init", "mup_base_width")


class DeepLinearTask(SupervisedTaskSpec):
    """Saxe's deep linear network: `depth` bias-free linear layers, W ~ N(0, init_scale²/fan_in)
    (`init: default` or `gaussian`), or init_scale × a (semi-)orthogonal matrix (`orthogonal`)."""

    model: Literal["deep_linear"]
    width: int = Field(32, gt=0)
    depth: int = Field(3, ge=1)
    init_scale: float = Field(1.0, gt=0)
    init: Init = "default"
    _omit_at_default: ClassVar[tuple[str, ...]] = ("init",)


class UserModelTask(SupervisedTaskSpec):
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


_POWER_OF_TWO = re.compile(r"^\s*2\s*\^\s*\(?\s*(-?\d+(?:\.\d+)?)\s*\)?\s*$")


def _power_of_two(value: Any) -> Any:
    """'2^-6' → 0.015625 (YAML has no notation for powers); anything else passes through."""
    if isinstance(value, str):
        match = _POWER_OF_TWO.match(value)
        if match:
            return 2.0 ** float(match.group(1))
    return value


class LrBracket(Record):
    """Bracket search per slice (hpconj.search): `points` learning rates `step` octaves apart around
    `start`; then, round by round, one more `step` outwards while the best seed mean sits at an end,
    and once it is bracketed, the midpoint of the wider gap next to it, until both gaps are at most
    `precision` octaves; the points above the best within `tolerance` (relative) of its seed mean
    are refined too (a dip below the stability edge). A slice stops at `max_rounds` rounds or
    `max_lrs` learning rates."""

    search: Literal["bracket"]
    start: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    step: float = Field(2.0, gt=0, allow_inf_nan=False)
    precision: float = Field(0.25, gt=0, allow_inf_nan=False)
    tolerance: float = Field(0.2, ge=0, allow_inf_nan=False)
    points: int = Field(3, ge=1, le=64, strict=True)
    max_rounds: int = Field(12, ge=1, strict=True)
    max_lrs: int = Field(24, ge=1, strict=True)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        return _power_of_two(value)

    @model_validator(mode="after")
    def _limits(self) -> LrBracket:
        if self.precision > self.step:
            raise _keyed("precision", f"must not exceed step ({self.step:g} octaves), got {self.precision:g}")
        if self.max_lrs < self.points:
            raise _keyed("max_lrs", f"must be at least points ({self.points}), got {self.max_lrs}")
        return self


class LrRandom(Record):
    """Random search per slice (hpconj.search): `trials` learning rates drawn log-uniformly from
    2**log2_range, the same for every seed of a slice, from a generator seeded by `seed` and the slice."""

    search: Literal["random"]
    trials: int = Field(ge=1, le=10_000, strict=True)
    log2_range: tuple[float, float]
    seed: int = Field(0, ge=0, strict=True)

    @model_validator(mode="after")
    def _range(self) -> LrRandom:
        lo, hi = self.log2_range
        if not lo < hi:
            raise _keyed("log2_range", f"must be ascending (low, high), got {[lo, hi]}")
        return self


LR_SEARCHES = ("bracket", "random")
# A search's settings that only let it go further (a finer precision, more rounds, more draws):
# left out of the experiment key, so that raising them extends a folder's results.
SEARCH_EXTENSIONS = {"bracket": ("precision", "max_rounds", "max_lrs"), "random": ("trials",)}


def _lr_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if "search" in value:
            return value["search"] if value["search"] in LR_SEARCHES else None
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
        Annotated[LrBracket, Tag("bracket")],
        Annotated[LrRandom, Tag("random")],
        Annotated[LrBracket, Tag("LrBracket")],
        Annotated[LrRandom, Tag("LrRandom")],
    ],
    Discriminator(
        _lr_tag,
        custom_error_type="lr_spec",
        custom_error_message="must be a mapping with one of values | log2_range | log_range | search",
    ),
]
_LR_TAGS = {"values", "log2_range", "log_range", "LrValues", "LrLog2Range", "LrLogRange", "bracket", "random",
            "LrBracket", "LrRandom"}
LrSearch = Union[LrBracket, LrRandom]


def lr_grid(spec: LrValues | LrLog2Range | LrLogRange) -> list[float]:
    """The learning rates of a spec, ascending, without duplicates."""
    if isinstance(spec, (LrBracket, LrRandom)):
        raise TypeError(f"sweep.lr is a {spec.search} search: its learning rates depend on the results")
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
    """The swept axes. lr, batch_size and momentum are the trial's own; width, depth, init_scale
    and init replace the task's field of that name (hpconj.axes), one cohort per architecture."""

    lr: LrSpec
    batch_size: list[Annotated[int, Field(gt=0, strict=True)]] = Field(min_length=1)
    momentum: list[Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=lambda: [0.0], min_length=1)
    width: list[Annotated[int, Field(gt=0, strict=True)]] | None = Field(None, min_length=1)
    depth: list[Annotated[int, Field(ge=0, strict=True)]] | None = Field(None, min_length=1)
    init_scale: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(None, min_length=1)
    init: list[Init] | None = Field(None, min_length=1)
    _omit_at_default: ClassVar[tuple[str, ...]] = ("width", "depth", "init_scale", "init")

    @field_validator("batch_size", "momentum", "width", "depth", "init_scale")
    @classmethod
    def _unique(cls, values: list[Any] | None) -> list[Any] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(_repeated(values))
        return sorted(values) if values is not None else None

    @field_validator("init")
    @classmethod
    def _distinct_inits(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(_repeated(values))
        return values

    def task_axes(self) -> dict[str, list[Any]]:
        """The architecture axes this sweep varies (hpconj.axes.TASK_AXES), with their values."""
        return {a: getattr(self, a) for a in TASK_AXES if getattr(self, a) is not None}


class Budget(Record):
    """Training length: exactly one of epochs, examples or steps; and where to evaluate the metric
    on the way (`checkpoints`: a count, octave-spaced shares of the budget ending at the whole of
    it, e.g. 4 → 1/8, 1/4, 1/2, 1; or an explicit list of shares in (0, 1])."""

    epochs: float | None = Field(None, gt=0)
    examples: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    checkpoints: int | list[float] | None = None
    _omit_at_default: ClassVar[tuple[str, ...]] = ("checkpoints",)

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _checkpoints(cls, value: Any) -> Any:
        """A count from 1 to 64, or a non-empty list of shares in (0, 1]: one message for anything else."""
        usage = "must be a count from 1 to 64 or a non-empty list of shares in (0, 1]"
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, list)):
            raise ValueError(f"{usage}, got {value!r}")
        if isinstance(value, int):
            if not 1 <= value <= 64:
                raise ValueError(f"{usage}, got {value}")
            return value
        if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in value):
            raise ValueError(f"{usage}, got {value!r}")
        return [float(v) for v in value]

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        given = [k for k in ("epochs", "examples", "steps") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of epochs | examples | steps, got {', '.join(given) or 'none'}")
        if isinstance(self.checkpoints, list) and len(set(self.checkpoints)) != len(self.checkpoints):
            raise _keyed("checkpoints", _repeated(self.checkpoints))
        return self

    def steps_for(self, batch_size: int, train_examples: int | None) -> int:
        """Optimizer steps of a trial of `batch_size`: `steps`, else the examples (`examples`, or
        `epochs` × the training examples, rounded) // batch_size. `train_examples` is None for a
        streamed task, which has no epochs."""
        if self.steps is not None:
            return self.steps
        if self.examples is not None:
            return self.examples // batch_size
        if train_examples is None:
            raise ValueError("a streamed task needs an examples or steps budget")
        return round(self.epochs * train_examples) // batch_size

    def checkpoint_fractions(self) -> list[float]:
        """The shares of the budget at which the metric is evaluated, ascending (empty: none)."""
        if self.checkpoints is None:
            return []
        if isinstance(self.checkpoints, int):
            return [2.0 ** -k for k in range(self.checkpoints - 1, -1, -1)]
        return sorted(self.checkpoints)


class Metric(Record):
    """The metric each trial is judged by; `target` the value time to target is measured to
    (default: the best final value of the worst slice, so that every slice reaches it)."""

    name: Literal["train_loss", "val_loss", "val_error"] = "val_loss"
    goal: Literal["minimize"] = "minimize"
    target: float | None = Field(None, allow_inf_nan=False)
    _omit_at_default: ClassVar[tuple[str, ...]] = ("target",)


# what a claim can be about (hpconj.claims states the number each one names and how it is judged)
CLAIM_KINDS = ("slope", "optimum", "regret", "time_slope", "critical_batch", "stability_gap", "time_to_target",
               "best_momentum")
_AXIS_KINDS = ("slope", "regret")  # the kinds that run along an axis
_VERSUS_KINDS = ("time_to_target", "best_momentum")  # the kinds that may compare two slices


class Claim(Record):
    """A statement about the results that `hpconj plot` judges and `hpconj check` judges again
    (hpconj.claims): a number of the analysis named by `kind` (along `axis` for a slope or a
    regret), for `parameterization`, at the values `at` of the other axes, against `band` (either
    end may be .inf). `versus` (time_to_target, best_momentum) names a second slice to compare
    with: values that replace some of `at`. `band` comes from `source` (the literature), never from the result."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    claim: str = Field(min_length=1)
    source: str = Field(min_length=1)
    kind: Literal[CLAIM_KINDS]  # type: ignore[valid-type]
    parameterization: str
    axis: str | None = None
    at: dict[str, Union[float, str]] = Field(default_factory=dict)
    versus: dict[str, Union[float, str]] = Field(default_factory=dict)
    band: tuple[float, float]
    _omit_at_default: ClassVar[tuple[str, ...]] = ("versus",)

    @model_validator(mode="after")
    def _coherent(self) -> Claim:
        if math.isnan(self.band[0]) or math.isnan(self.band[1]) or self.band[0] > self.band[1]:
            raise _keyed("band", f"must be ascending (low, high), got {list(self.band)}")
        if self.kind in _AXIS_KINDS and self.axis is None:
            raise _keyed("axis", f"a {self.kind} claim names the axis it runs along (batch_size, momentum, ...)")
        if self.kind not in _AXIS_KINDS and self.axis is not None:
            raise _keyed("axis", f"a {self.kind} claim names its slice by `at`, not an axis")
        if self.versus and self.kind not in _VERSUS_KINDS:
            raise _keyed("versus", f"only a {' or '.join(_VERSUS_KINDS)} claim compares two slices")
        if self.axis is not None and self.axis not in AXES:
            raise _keyed("axis", f"must be one of {' | '.join(AXES)}, got {self.axis!r}")
        for key in (*self.at, *self.versus):
            if key not in AXES:
                raise _keyed(f"at.{key}" if key in self.at else f"versus.{key}",
                             f"not an axis; one of {' | '.join(AXES)}")
        return self


# every optimizer's settings block is a field named after it (hpconj.optim's registry)
OPTIMIZER_SETTINGS: dict[str, type[Settings]] = {n: o.settings for n, o in OPTIMIZERS.items() if o.settings}


class NoiseScale(Record):
    """The gradient noise scale B_simple, measured per seed at initialisation on `examples` examples."""

    enabled: bool = True
    examples: int = Field(1024, gt=1, strict=True)


class _ConfigHead(Record):
    """The fields a config states before the optimizer's settings block (the order config.yaml keeps)."""

    # one folder name under results/: no separators, and no leading dot (so never "." or "..")
    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    task: TaskSpec
    optimizer: Literal[tuple(OPTIMIZERS)] = "momentum"  # type: ignore[valid-type]


# one optional settings block per optimizer that has one: `adam: {beta2: 0.99}`, ...
_ConfigWithSettings = create_model(
    "_ConfigWithSettings", __base__=_ConfigHead,
    **{name: (settings | None, None) for name, settings in OPTIMIZER_SETTINGS.items()},
)


class Config(_ConfigWithSettings):  # type: ignore[valid-type, misc]
    """A whole sweep, validated. Nothing downstream reads YAML again."""

    parameterizations: list[Literal["standard", "sqrt", "conjugate", "mup"]] = Field(
        default_factory=lambda: ["standard", "conjugate"], min_length=1
    )
    base_width: int | None = Field(None, gt=0, strict=True)  # μP's base width (default: the smallest width)
    _omit_at_default: ClassVar[tuple[str, ...]] = ("base_width", "expect")
    reference_batch_size: int = Field(1, gt=0, strict=True)
    budget: Budget
    sweep: Sweep
    seeds: list[Annotated[int, Field(ge=0, strict=True)]] = Field(default_factory=lambda: [0], min_length=1)
    metric: Metric = Field(default_factory=Metric)
    noise_scale: NoiseScale = Field(default_factory=NoiseScale)
    device: str = "auto"
    executor: Literal["local", "ray"] = "local"  # where the trials run; --executor overrides it
    expect: list[Claim] = Field(default_factory=list)  # claims about the results (hpconj.claims)

    @model_validator(mode="before")
    @classmethod
    def _optimizer_defaults(cls, data: Any) -> Any:
        """Resolve the active optimizer's settings block and its default momentum axis, so that the
        stored config states every value a trial used."""
        if not isinstance(data, dict) or not isinstance(data.get("optimizer"), str) or data["optimizer"] not in OPTIMIZERS:
            return data
        entry = OPTIMIZERS[data["optimizer"]]
        data = dict(data)
        if entry.settings is not None and data.get(entry.name) is None:
            data[entry.name] = {}
        sweep = data.get("sweep")
        default_momentum = entry.default_momentum
        block = data.get(entry.name)
        if entry.read_block is not None and isinstance(block, dict):
            try:
                given, data[entry.name] = entry.read_block(block, sweep)
            except SettingError as exc:
                raise _keyed(exc.key, exc.reason) from None
            default_momentum = given if given is not None else default_momentum
        if default_momentum is not None and isinstance(sweep, dict) and "momentum" not in sweep:
            data["sweep"] = {**sweep, "momentum": [default_momentum]}
        return data

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
        entry = OPTIMIZERS[self.optimizer]
        if entry.no_momentum is not None and any(b != 0 for b in self.sweep.momentum):
            raise _keyed("sweep.momentum", f"optimizer {self.optimizer} has no momentum: {entry.no_momentum}, "
                         f"got {list(self.sweep.momentum)}")
        for other in OPTIMIZER_SETTINGS:
            if other != self.optimizer and getattr(self, other) is not None:
                raise _keyed(other, f"settings for optimizer {other}, but optimizer is {self.optimizer}")
        for name in self.parameterizations:
            if name not in entry.parameterizations:
                raise _keyed("parameterizations", self._undefined(name))
        for key, reason in entry.check(self) if entry.check is not None else []:
            raise _keyed(key, reason)
        if getattr(self.task, "mup_base_width", None) is not None:
            raise _keyed("task.mup_base_width", "unknown key: μP is the parameterization `mup` (parameterizations: "
                         "[standard, mup], with base_width)")
        if "mup" in self.parameterizations:
            self._check_mup()
        for i, claim in enumerate(self.expect):
            if claim.parameterization not in self.parameterizations:
                raise _keyed(f"expect[{i}].parameterization", f"must be one of the config's parameterizations "
                             f"({', '.join(self.parameterizations)}), got {claim.parameterization!r}")
        ids = [c.id for c in self.expect]
        if len(set(ids)) != len(ids):
            raise _keyed("expect", f"claim ids must be distinct: {_repeated(ids)}")
        for axis in self.sweep.task_axes():
            if axis not in type(self.task).model_fields:
                raise _keyed(f"sweep.{axis}", f"the {self.task.model} model has no {axis} to sweep; the built-in "
                             "mlp and deep_linear have width, depth, init_scale and init")
            if axis in self.task.model_fields_set:
                raise _keyed(f"task.{axis}", f"{axis} is swept (sweep.{axis}): give its values there only")
        try:
            self.task_variants()
        except ValidationError as exc:
            first = exc.errors()[0]
            raise _keyed(f"sweep.{first['loc'][0]}", f"{first['msg']} for the {self.task.model} model") from None
        if isinstance(self.task, QuadraticTask):
            if self.budget.epochs is not None:
                raise _keyed("budget.epochs", "the quadratic task streams fresh examples and has no epochs; "
                             "use budget.examples or budget.steps")
            if self.metric.name == "val_error":
                raise _keyed("metric.name", "the quadratic task has no classes, so no val_error; "
                             "use train_loss or val_loss")
        return self

    def _check_mup(self) -> None:
        """μP is defined here for the built-in MLP with at least one hidden layer."""
        if not isinstance(self.task, MlpTask):
            raise _keyed("parameterizations", f"mup is defined for the built-in mlp, not for the {self.task.model} "
                         "model")
        if min(self.sweep.depth or [self.task.depth]) < 1:
            raise _keyed("sweep.depth" if self.sweep.depth else "task.depth", "mup needs at least one hidden layer "
                         "(depth ≥ 1): its multipliers act on the layers whose size grows with width")

    @property
    def mup_base_width(self) -> int:
        """μP's base width: `base_width`, else the smallest width of the sweep."""
        return self.base_width if self.base_width is not None else min(self.sweep.width or [self.task.width])

    def _undefined(self, parameterization: str) -> str:
        """Why `parameterization` cannot be used with this optimizer, and which ones can."""
        having = [n for n, o in OPTIMIZERS.items() if parameterization in o.parameterizations]
        if parameterization == "sqrt":
            return (f"sqrt is the square-root rule of adaptive optimizers ({', '.join(having)}), not of "
                    f"{self.optimizer}; use standard or conjugate")
        return f"{parameterization} is defined for {', '.join(having)}, not for {self.optimizer}"

    @property
    def optimizer_settings(self) -> Settings | None:
        """The active optimizer's settings block (None for the SGD family)."""
        return getattr(self, self.optimizer) if self.optimizer in OPTIMIZER_SETTINGS else None

    def task_variants(self) -> list[tuple[dict[str, Any], TaskSpec]]:
        """Every architecture the sweep asks for: (the swept axes' values, the task with them), in
        the product order of sweep's task axes (one variant, the task itself, when none is swept)."""
        axes = self.sweep.task_axes()
        base = self.task.model_dump()
        return [(dict(zip(axes, values)), type(self.task).model_validate({**base, **dict(zip(axes, values))}))
                for values in product(*axes.values())]

    @property
    def first_task(self) -> TaskSpec:
        """The task of the sweep's first architecture (the task itself when no task axis is swept):
        the one the data, the cost probe and the noise scale are measured on."""
        return self.task_variants()[0][1]

    def task_axis_defaults(self) -> dict[str, Any]:
        """Each swept architecture axis and the value a task's dump means by leaving it out (its
        default, Record._omit_at_default): what the store needs to write its column."""
        return {a: type(self.task).model_fields[a].default for a in self.sweep.task_axes()}

    @property
    def lrs(self) -> list[float]:
        """The lr grid (a search has none: see lr_search)."""
        return lr_grid(self.sweep.lr)

    @property
    def lr_search(self) -> LrBracket | LrRandom | None:
        """sweep.lr when it is a search (hpconj.search), else None (a grid)."""
        return self.sweep.lr if isinstance(self.sweep.lr, (LrBracket, LrRandom)) else None

    def canonical(self) -> dict[str, Any]:
        """The resolved config as plain data (what results/<name>/config.yaml holds)."""
        data = self.model_dump(mode="json")
        for claim, dumped in zip(self.expect, data.get("expect", [])):
            dumped["band"] = [float(x) for x in claim.band]  # an open end stays ±inf (JSON mode writes null)
        for name in OPTIMIZER_SETTINGS:  # only the active optimizer's block (older results have none)
            if data[name] is None:
                data.pop(name)
        for axis in self.sweep.task_axes():  # a swept field's values are the sweep's, not the task's
            data["task"].pop(axis, None)
        return data

    def experiment_key(self) -> str:
        """Hash of experiment_view(canonical()): see there what it leaves out."""
        return stable_hash(experiment_view(self.canonical()))

    def config_hash(self) -> str:
        return stable_hash(self.canonical())


def experiment_view(canonical: dict[str, Any]) -> dict[str, Any]:
    """What defines the experiment of a canonical config (a results folder holds one): everything
    but the name, device, executor, the noise-scale measurement and the metric's target, which change
    no trial; and for an lr grid, the grid and the seeds — added lr values or seeds extend a folder.

    A search's path depends on every seed's results, so its seeds and its sweep.lr stay in, less
    the settings that only let it go further (SEARCH_EXTENSIONS). Missing keys are tolerated (an
    unreadable stored config is {})."""
    data = json.loads(json.dumps(canonical))
    sweep, lr = data.get("sweep"), None
    if isinstance(sweep, dict):
        lr = sweep.pop("lr", None)
    search = lr.get("search") if isinstance(lr, dict) else None
    if search in SEARCH_EXTENSIONS and isinstance(sweep, dict):
        sweep["lr"] = {k: v for k, v in lr.items() if k not in SEARCH_EXTENSIONS[search]}
    else:
        data.pop("seeds", None)
    if isinstance(data.get("metric"), dict):
        data["metric"].pop("target", None)
    for key in ("name", "device", "executor", "noise_scale", "expect"):  # claims change no trial
        data.pop(key, None)
    return data


def stable_hash(data: Any) -> str:
    """sha256 of canonical JSON (sorted keys, repr floats): the same on every machine."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()
