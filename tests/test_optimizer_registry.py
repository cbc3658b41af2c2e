"""An optimizer is one entry of hpconj.optim: adding one touches no other module.

The test adds sign descent, θ ← θ − η·sign(g), the way a contributor would (one module, one line
in OPTIMIZERS) and then uses it through the CLI: `hpconj tasks` lists it, the config accepts it
with its settings block, and both engines train it to the same bits. It runs in a fresh
interpreter because the config schema is built from the registry when hpconj.config is imported.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import yaml

from hpconj.optim import OPTIMIZERS, optimizer
from hpconj.parameterizations import PARAMETERIZATIONS

SIGN_MODULE = '''
from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from hpconj.optim.base import Optimizer, Settings, StackedUpdate, torch


class SignSettings(Settings):
    scale: float = Field(1.0, gt=0)


@dataclass(frozen=True)
class NativeSign:
    lr: float
    per_example = False
    group = "sign"


def parameterize(hp, name):
    scale = hp.settings.scale
    return NativeSign(hp.lr * scale if name == "standard" else hp.lr * scale * hp.kappa)


class SignStep:
    def __init__(self, params, native):
        self.params, self.native = list(params), native

    def step(self, second_moments):
        with torch.no_grad():
            for p in self.params:
                p.add_(p.grad.sign(), alpha=-self.native.lr)


class SignUpdate(StackedUpdate):
    def settings(self):
        return {"neg_lr": [-n.lr for n in self.natives]}

    def step(self, params, grads, second):
        self.t += 1
        for name, param in params.items():
            param.addcmul_(grads[name].sign(), self.column("neg_lr", name, param))


SIGN = Optimizer(name="sign", description="sign descent: θ ← θ − η·sign(g)", native=NativeSign,
                 parameterize=parameterize, parameterizations=("standard", "conjugate"),
                 reference=lambda native, params: SignStep(params, native), stacked=SignUpdate,
                 settings=SignSettings, no_momentum="give sweep.momentum: [0.0] or leave it out")
'''

CONFIG = """
name: sign
task:
  model: mlp
  width: 8
  depth: 1
  data: {name: teacher, examples: 256, input_dim: 6, outputs: 3, hidden: 8}
optimizer: sign
sign: {scale: 0.5}
budget: {steps: 12}
sweep:
  lr: {values: [0.004, 0.016, 0.064]}
  batch_size: [8, 32]
seeds: 2
noise_scale: {enabled: false}
"""

SCRIPT = """
import json, sys
here, config, out = sys.argv[1:4]
sys.path.insert(0, here)
import hpconj.optim, sign_optimizer
hpconj.optim.OPTIMIZERS["sign"] = sign_optimizer.SIGN  # the one line
from hpconj.cli import main
for engine in ("reference", "cohort"):
    sys.argv = ["hpconj", "sweep", config, "--out", f"{out}/{engine}", "--engine", engine,
                "--workers", "1", "--quiet"]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
sys.argv = ["hpconj", "tasks"]
try:
    main()
except SystemExit as exc:
    assert not exc.code
"""


def test_a_new_optimizer_is_one_module_and_one_line(tmp_path: Path):
    (tmp_path / "sign_optimizer.py").write_text(SIGN_MODULE)
    config = tmp_path / "sign.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(config), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1",
                                                                             "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sign descent" in proc.stdout  # `hpconj tasks` reads the registry
    frames = {e: pd.read_csv(tmp_path / e / "trials.csv").sort_values("trial_id").reset_index(drop=True)
              for e in ("reference", "cohort")}
    ref, coh = frames["reference"], frames["cohort"]
    assert len(ref) == 2 * 3 * 2 * 2 and set(ref["status"]) <= {"ok", "diverged"}
    assert (ref["trial_id"] == coh["trial_id"]).all()
    assert (ref["params_sha256"] == coh["params_sha256"]).all()  # the stacked update is the reference step
    assert yaml.safe_load((tmp_path / "cohort" / "config.yaml").read_text())["sign"] == {"scale": 0.5}


def test_every_entry_defines_standard_and_conjugate_and_only_known_parameterizations():
    for name, entry in OPTIMIZERS.items():
        assert optimizer(name) is entry and entry.name == name
        assert {"standard", "conjugate"} <= set(entry.parameterizations) <= set(PARAMETERIZATIONS)
        assert entry.description and (entry.settings is None) == (name in ("sgd", "momentum", "nesterov"))


def test_the_registry_and_every_entry_import_without_torch():
    names = ["hpconj.optim"] + [f"hpconj.optim.{m}" for m in ("base", "sgd", "adam", "rmsprop", "adagrad", "mcallester")]
    script = f"import importlib, sys\nfor n in {names!r}: importlib.import_module(n)\nsys.exit('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr or "an optimizer module imports torch"
