"""Every bad config gives one precise, human line: `file:line key.path: expected, got what`.

Each case writes a tiny config (valid except for one change) to tmp_path and checks the exact key
path, the line the YAML has for it, and the key words of the message. No training happens here.
"""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpconj.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
DELETE = object()

# A valid config with tiny values (like configs/quickstart.yaml, but nothing is ever trained).
BASE: dict[str, Any] = {
    "name": "tiny",
    "task": {"model": "mlp", "width": 4, "depth": 1, "data": "teacher", "val_fraction": 0.25},
    "optimizer": "momentum",
    "parameterizations": ["standard", "conjugate"],
    "reference_batch_size": 2,
    "budget": {"steps": 2},
    "sweep": {"lr": {"values": [0.1, 0.2]}, "batch_size": [2, 4, 8], "momentum": [0.0, 0.5]},
    "seeds": 1,
    "metric": {"name": "val_loss"},
    "device": "cpu",
}
QUADRATIC = {"model": "quadratic", "dim": 3}

# Things a message must never show: pydantic's wording, union tags, validator names, URLs.
INTERNALS = ("Input should", "function-after", "function-before", "union_tag", "model_attributes",
             "Value error", "pydantic", "[mlp]", "[user]", "[quadratic]", "[teacher]", "LrValues",
             "LrLog2Range", "Tag(", "https://")


def mutate(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with `changes` applied: dotted key -> new value (or DELETE)."""
    config = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return config


def write(tmp_path: Path, config: Any, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = info.value.lines
    assert lines, "a ConfigError must carry at least one line"
    for line in lines:
        assert "\n" not in line
        for internal in INTERNALS:
            assert internal not in line, f"pydantic internals {internal!r} in: {line}"
    return lines


def line_of(path: Path, *anchors: str) -> int:
    """1-based line of the last anchor regex, each searched from the line after the previous match."""
    text = path.read_text().splitlines()
    start = 0
    found = None
    for anchor in anchors:
        for i in range(start, len(text)):
            if re.search(anchor, text[i]):
                found, start = i + 1, i + 1
                break
        else:
            raise AssertionError(f"{anchor!r} not in {path.name}:\n{path.read_text()}")
    assert found is not None
    return found


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.name == "tiny" and config.sweep.batch_size == [2, 4, 8]


# (id, changes to BASE, key path, anchors for the expected line (None: no line), key words)
CASES: list[tuple[str, dict[str, Any], str, tuple[str, ...] | None, tuple[str, ...]]] = [
    ("unknown-top-level-key", {"colour": "red"}, "colour", (r"^colour:",),
     ("unknown key", "expected one of: name, task, optimizer, adam, rmsprop, adagrad, mcallester, "
                     "parameterizations, base_width, reference_batch_size, budget, sweep, seeds, metric, noise_scale, "
                     "device")),
    ("unknown-sweep-key", {"sweep.foo": 1}, "sweep.foo", (r"^sweep:", r"^  foo:"),
     ("unknown key", "expected one of: lr, batch_size, momentum")),
    ("unknown-mlp-key", {"task.widht": 8}, "task.widht", (r"^task:", r"^  widht:"),
     ("unknown key", "did you mean width?", "width, depth, activation")),
    ("unknown-lr-key", {"sweep.lr": {"values": [0.1], "num": 3}}, "sweep.lr.num",
     (r"^sweep:", r"^  lr:", r"^    num:"), ("unknown key", "expected one of: values")),
    ("unknown-data-key", {"task.data": {"name": "teacher", "exmaples": 10}}, "task.data.exmaples",
     (r"^task:", r"^  data:", r"^    exmaples:"), ("unknown key", "did you mean examples?")),
    ("batch-size-string", {"sweep.batch_size": "big"}, "sweep.batch_size",
     (r"^sweep:", r"^  batch_size:"), ("must be a list", "got 'big'")),
    ("batch-size-float", {"sweep.batch_size": [2, 8.5]}, "sweep.batch_size[1]",
     (r"^sweep:", r"^  batch_size:", r"^  - 8\.5$"), ("must be a positive integer, got 8.5",)),
    ("batch-size-bool", {"sweep.batch_size": [True]}, "sweep.batch_size[0]",
     (r"^sweep:", r"^  batch_size:", r"^  - true$"), ("must be a positive integer, got True",)),
    ("batch-size-empty", {"sweep.batch_size": []}, "sweep.batch_size",
     (r"^sweep:", r"^  batch_size:"), ("must not be empty", "got []")),
    ("batch-size-duplicate", {"sweep.batch_size": [2, 4, 2]}, "sweep.batch_size",
     (r"^sweep:", r"^  batch_size:"), ("values must be distinct", "got [2, 4, 2]", "2 repeats")),
    ("momentum-one", {"sweep.momentum": [0.0, 1.0]}, "sweep.momentum[1]",
     (r"^sweep:", r"^  momentum:", r"^  - 1\.0$"), ("must be a number >= 0 and < 1", "got 1.0")),
    ("momentum-negative", {"sweep.momentum": [-0.1]}, "sweep.momentum[0]",
     (r"^sweep:", r"^  momentum:", r"^  - -0\.1$"), ("must be a number >= 0 and < 1", "got -0.1")),
    ("momentum-with-sgd", {"optimizer": "sgd", "sweep.momentum": [0.0, 0.9]}, "sweep.momentum",
     (r"^sweep:", r"^  momentum:"), ("optimizer sgd has no momentum", "optimizer: momentum", "got [0.0, 0.9]")),
    ("lr-log2-range-reversed", {"sweep.lr": {"log2_range": [1, -3], "num": 3}}, "sweep.lr.log2_range",
     (r"^sweep:", r"^  lr:", r"^    log2_range:"), ("must be ascending", "got [1.0, -3.0]")),
    ("lr-log2-range-one-number", {"sweep.lr": {"log2_range": [1], "num": 3}}, "sweep.lr.log2_range",
     (r"^sweep:", r"^  lr:", r"^    log2_range:"), ("must have exactly 2 items", "got [1]")),
    ("lr-log-range-reversed", {"sweep.lr": {"log_range": [1.0, 0.1], "num": 3}}, "sweep.lr.log_range",
     (r"^sweep:", r"^  lr:", r"^    log_range:"), ("must be ascending", "got [1.0, 0.1]")),
    ("lr-no-kind", {"sweep.lr": {"num": 3}}, "sweep.lr", (r"^sweep:", r"^  lr:"),
     ("must be a mapping with one of the keys values | log2_range | log_range", "got keys num")),
    ("lr-a-number", {"sweep.lr": 0.1}, "sweep.lr", (r"^sweep:", r"^  lr:"),
     ("one of the keys values | log2_range | log_range", "got 0.1")),
    ("lr-two-kinds", {"sweep.lr": {"values": [0.1], "log2_range": [-3, 1]}}, "sweep.lr.log2_range",
     (r"^sweep:", r"^  lr:", r"^    log2_range:"), ("give only one of values | log2_range | log_range",)),
    ("lr-num-and-step", {"sweep.lr": {"log2_range": [-3, 1], "num": 3, "step": 0.5}}, "sweep.lr",
     (r"^sweep:", r"^  lr:"), ("give exactly one of num | step", "got both")),
    ("lr-neither-num-nor-step", {"sweep.lr": {"log2_range": [-3, 1]}}, "sweep.lr",
     (r"^sweep:", r"^  lr:"), ("give exactly one of num | step", "got neither")),
    ("lr-value-zero", {"sweep.lr": {"values": [0.1, 0]}}, "sweep.lr.values[1]",
     (r"^sweep:", r"^  lr:", r"^    values:", r"^    - 0$"), ("must be a positive number, got 0",)),
    ("lr-value-negative", {"sweep.lr": {"values": [-0.5]}}, "sweep.lr.values[0]",
     (r"^sweep:", r"^  lr:", r"^    values:", r"^    - -0\.5$"), ("must be a positive number, got -0.5",)),
    ("lr-step-negative", {"sweep.lr": {"log2_range": [-3, 1], "step": -1}}, "sweep.lr.step",
     (r"^sweep:", r"^  lr:", r"^    step:"), ("must be a positive number, got -1",)),
    ("budget-two-keys", {"budget": {"steps": 2, "epochs": 1}}, "budget", (r"^budget:",),
     ("give exactly one of epochs | examples | steps", "got epochs, steps")),
    ("budget-no-key", {"budget": {}}, "budget", (r"^budget:",),
     ("give exactly one of epochs | examples | steps", "got none")),
    ("budget-steps-float", {"budget": {"steps": 2.5}}, "budget.steps", (r"^budget:", r"^  steps:"),
     ("must be a positive integer, got 2.5",)),
    ("quadratic-epochs", {"task": QUADRATIC, "budget": {"epochs": 1}}, "budget.epochs",
     (r"^budget:", r"^  epochs:"), ("quadratic task", "no epochs", "budget.examples or budget.steps")),
    ("metric-unknown", {"metric.name": "accuracy"}, "metric.name", (r"^metric:", r"^  name:"),
     ("must be one of train_loss | val_loss | val_error", "got 'accuracy'")),
    ("quadratic-val-error", {"task": QUADRATIC, "metric.name": "val_error"}, "metric.name",
     (r"^metric:", r"^  name:"), ("quadratic task has no classes", "use train_loss or val_loss")),
    ("metric-goal", {"metric.goal": "maximize"}, "metric.goal", (r"^metric:", r"^  goal:"),
     ("must be minimize", "got 'maximize'")),
    ("parameterization-unknown", {"parameterizations": ["standard", "ntk"]}, "parameterizations[1]",
     (r"^parameterizations:", r"^- ntk$"), ("must be one of standard | sqrt | conjugate | mup", "got 'ntk'")),
    ("parameterization-duplicate", {"parameterizations": ["standard", "standard"]}, "parameterizations",
     (r"^parameterizations:",), ("values must be distinct", "'standard' repeats")),
    ("seeds-zero", {"seeds": 0}, "seeds", (r"^seeds:",),
     ("must be a positive integer (a count) or a list of integers", "got 0")),
    ("seeds-string", {"seeds": "many"}, "seeds", (r"^seeds:",),
     ("must be a positive integer (a count) or a list of integers", "got 'many'")),
    ("seeds-negative-in-list", {"seeds": [0, -1]}, "seeds[1]", (r"^seeds:", r"^- -1$"),
     ("must be a non-negative integer, got -1",)),
    ("device-tpu", {"device": "tpu"}, "device", (r"^device:",),
     ("must be one of auto | cpu | cuda | cuda:N", "got 'tpu'")),
    ("model-unknown-name", {"task.model": "resnet"}, "task.model", (r"^task:", r"^  model:"),
     ("must be one of mlp | deep_linear | quadratic | 'package.module:function'", "got 'resnet'")),
    ("model-missing", {"task.model": DELETE}, "task.model", (r"^task:",),
     ("required key is missing", "mlp | deep_linear | quadratic | 'package.module:function'")),
    ("model-cannot-import", {"task": {"model": "nosuchmod:fn", "data": "teacher"}}, "task.model",
     (r"^task:", r"^  model:"), ("cannot import module 'nosuchmod'",)),
    ("model-no-such-function", {"task": {"model": "os.path:nosuchfn", "data": "teacher"}}, "task.model",
     (r"^task:", r"^  model:"), ("module 'os.path' has no callable 'nosuchfn'",)),
    ("user-model-with-mlp-key", {"task": {"model": "os.path:join", "data": "teacher", "width": 4}},
     "task.width", (r"^task:", r"^  width:"), ("unknown key", "go under task.kwargs")),
    ("data-unknown-name", {"task.data": "imagenet"}, "task.data", (r"^task:", r"^  data:"),
     ("must be one of teacher | linear_teacher | digits | mnist1d", ".npz or .csv", "got 'imagenet'")),
    ("data-mapping-without-name", {"task.data": {"examples": 10}}, "task.data.name",
     (r"^task:", r"^  data:"), ("required key is missing", "teacher | file | callable | digits | mnist1d")),
    ("data-missing-csv", {"task.data": "missing.csv"}, "task.data", (r"^task:", r"^  data:"),
     ("no such data file", "missing.csv")),
    ("val-fraction-above-one", {"task.val_fraction": 1.5}, "task.val_fraction",
     (r"^task:", r"^  val_fraction:"), ("must be a number > 0 and < 1", "got 1.5")),
    ("width-zero", {"task.width": 0}, "task.width", (r"^task:", r"^  width:"),
     ("must be a positive integer, got 0",)),
    ("quadratic-h-min-above-h-max", {"task": {**QUADRATIC, "h_min": 2.0, "h_max": 1.0}}, "task.h_min",
     (r"^task:", r"^  h_min:"), ("must not exceed h_max (1.0)", "got 2.0")),
    ("reference-batch-size-zero", {"reference_batch_size": 0}, "reference_batch_size",
     (r"^reference_batch_size:",), ("must be a positive integer, got 0",)),
    ("name-with-slash", {"name": "a/b"}, "name", (r"^name:",),
     ("must be one folder name under results/", "got 'a/b'")),
    ("name-parent-folder", {"name": ".."}, "name", (r"^name:",),
     ("not starting with '.'", "got '..'")),
    ("name-this-folder", {"name": "."}, "name", (r"^name:",), ("not starting with '.'", "got '.'")),
    ("sweep-missing", {"sweep": DELETE}, "sweep", None, ("required key is missing",)),
    ("optimizer-unknown", {"optimizer": "lion"}, "optimizer", (r"^optimizer:",),
     ("must be one of sgd | momentum | nesterov | adam | rmsprop | adagrad | mcallester", "got 'lion'")),
    ("sqrt-for-sgd", {"parameterizations": ["standard", "sqrt"]}, "parameterizations", (r"^parameterizations:",),
     ("sqrt is the square-root rule of adaptive optimizers", "not of momentum")),
    ("sqrt-kappa-too-large", {"optimizer": "adam", "parameterizations": ["sqrt"], "sweep.momentum": [0.5, 0.9]},
     "sweep.momentum", (r"^sweep:", r"^  momentum:"),
     ("κ·(1 − β) < 1", "at batch size 4 κ = B/B_ref = 2", "κ·(1 − 0.5) = 1")),
    ("sqrt-beta2-too-small", {"optimizer": "adam", "adam": {"beta2": 0.5}, "parameterizations": ["sqrt"],
                              "sweep.momentum": [0.9]}, "adam.beta2", (r"^adam:", r"^  beta2:"),
     ("κ·(1 − 0.5) = 1", "raise reference_batch_size or β")),
    ("adam-beta2-one", {"optimizer": "adam", "adam": {"beta2": 1.0}}, "adam.beta2", (r"^adam:", r"^  beta2:"),
     ("must be a number >= 0 and < 1", "got 1.0")),
    ("adam-unknown-key", {"optimizer": "adam", "adam": {"beta1": 0.9}}, "adam.beta1",
     (r"^adam:", r"^  beta1:"), ("unknown key", "expected one of: beta2, eps")),
    ("adam-betas-and-momentum", {"optimizer": "adam", "adam": {"betas": [0.9, 0.99]}}, "adam.betas",
     (r"^adam:", r"^  betas:"), ("β1 is the sweep's momentum axis and sweep.momentum is given",)),
    ("adam-betas-not-a-pair", {"optimizer": "adam", "adam": {"betas": [0.9]}, "sweep.momentum": DELETE},
     "adam.betas", (r"^adam:", r"^  betas:"), ("must be a list of two numbers [β1, β2], got [0.9]",)),
    ("settings-of-another-optimizer", {"adam": {"eps": 1e-6}}, "adam", (r"^adam:",),
     ("settings for optimizer adam, but optimizer is momentum",)),
    ("adagrad-with-momentum", {"optimizer": "adagrad"}, "sweep.momentum", (r"^sweep:", r"^  momentum:"),
     ("optimizer adagrad has no momentum", "got [0.0, 0.5]")),
    ("mcallester-warmup-zero", {"optimizer": "mcallester", "sweep.momentum": [0.0], "mcallester": {"warmup": 0}},
     "mcallester.warmup", (r"^mcallester:", r"^  warmup:"), ("must be a positive integer, got 0",)),
    ("noise-scale-one-example", {"noise_scale": {"examples": 1}}, "noise_scale.examples",
     (r"^noise_scale:", r"^  examples:"), ("got 1",)),
]


@pytest.mark.parametrize(("changes", "key", "anchors", "words"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_one_bad_value_gives_one_precise_line(
    tmp_path: Path, changes: dict[str, Any], key: str, anchors: tuple[str, ...] | None, words: tuple[str, ...]
) -> None:
    path = write(tmp_path, mutate(changes))
    lines = errors(path)
    assert len(lines) == 1, lines
    where = f"tiny.yaml:{line_of(path, *anchors)}" if anchors else "tiny.yaml"
    prefix = f"{where} {key}: "
    assert lines[0].startswith(prefix), f"expected {prefix!r}, got {lines[0]!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def test_negative_batch_size_exact_message(tmp_path: Path) -> None:
    path = tmp_path / "quickstart.yaml"
    path.write_text(
        "name: tiny\n"
        "task: {model: mlp, width: 4, depth: 1, data: teacher}\n"
        "budget: {steps: 2}\n"
        "sweep:\n"
        "  lr: {values: [0.1]}\n"
        "  # the third batch size is negative\n"
        "  batch_size: [2, 4, -4]\n"
    )
    assert errors(path) == ["quickstart.yaml:7 sweep.batch_size[2]: must be a positive integer, got -4"]


def test_several_errors_one_line_each_sorted_by_line(tmp_path: Path) -> None:
    path = write(tmp_path, mutate({"optimizer": "adamw", "device": "tpu", "sweep.batch_size": [2, -4]}))
    lines = errors(path)
    assert [line.split(" ")[1] for line in lines] == ["optimizer:", "sweep.batch_size[1]:", "device:"]
    numbers = [int(line.split(" ")[0].split(":")[1]) for line in lines]
    assert numbers == sorted(numbers)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: tiny\nsweep:\n  batch_size: [2, 4\n  lr: {values: [0.1]}\n")
    (line,) = errors(path)
    assert re.match(r"^broken\.yaml:4: malformed YAML: ", line), line
    assert "expected ',' or ']'" in line


def test_tab_indentation_is_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("name: tiny\nsweep:\n\tlr: 1\n")
    (line,) = errors(path)
    assert line.startswith("tabs.yaml:3: malformed YAML: ") and "'\\t'" in line


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert errors(path) == ["empty.yaml: the config file is empty"]


def test_top_level_list(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name: tiny\n- budget: {steps: 2}\n")
    (line,) = errors(path)
    assert line.startswith("list.yaml:1: ") and "must be a mapping of keys" in line and "list" in line


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert errors(path) == [f"{path}: no such config file"]


def test_default_name_from_an_unusable_file_name(tmp_path: Path) -> None:
    config = mutate({"name": DELETE})
    (line,) = errors(write(tmp_path, config, name="my sweep"))
    assert line.startswith("my sweep.yaml name: must be one folder name under results/")
    assert "got 'my sweep'" in line and "defaults to the file's name" in line


def test_adam_betas_resolve_to_the_momentum_axis_and_beta2(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, mutate({"optimizer": "adam", "adam": {"betas": [0.8, 0.99], "eps": 1e-6},
                                                 "sweep.momentum": DELETE})))
    assert config.sweep.momentum == [0.8]
    assert (config.adam.beta2, config.adam.eps) == (0.99, 1e-6)
    assert load_config(write(tmp_path, mutate({"optimizer": "adam", "sweep.momentum": DELETE}))).sweep.momentum == [0.9]
    stored = config.canonical()  # the resolved form reloads to the same experiment
    assert "betas" not in stored["adam"] and stored["sweep"]["momentum"] == [0.8]


def test_sqrt_accepts_any_beta_where_it_is_standard(tmp_path: Path) -> None:
    """κ = 1 (B = B_ref) leaves β as it is, and κ < 1 never reaches κ·(1 − β) ≥ 1."""
    config = load_config(write(tmp_path, mutate({"optimizer": "adam", "parameterizations": ["sqrt"],
                                                 "reference_batch_size": 8, "sweep.momentum": [0.0]})))
    assert config.sweep.batch_size == [2, 4, 8]


def test_quickstart_still_valid() -> None:
    config = load_config(REPO / "configs" / "quickstart.yaml")
    assert config.name == "quickstart"
    assert config.sweep.batch_size == [8, 32, 128] and config.seeds == [0, 1]


def test_cli_validate_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, mutate({"sweep.batch_size": [2, 4, -4]}))
    result = subprocess.run([sys.executable, "-m", "hpconj", "validate", str(path)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    expected = line_of(path, r"^sweep:", r"^  batch_size:", r"^  - -4$")
    assert lines[0] == f"error: tiny.yaml:{expected} sweep.batch_size[2]: must be a positive integer, got -4"
