"""Parameterizations: pure maps from the user's hyperparameters to an optimizer's native settings.

No torch here. A parameterization takes the user's coordinates (η, B, β), the reference batch
size B_ref and the optimizer's fixed settings (`Hyperparameters`), and returns the native
settings that realise them (`NativeSGD`, `NativeAdam`, ...). Both engines read the same record.
The maths of each parameterization for each optimizer lives in that optimizer's entry
(hpconj.optim.<name>); this module names the parameterizations and dispatches.

Notation: g is the batch-*mean* gradient (the loss is the mean over the batch), q[c] = (1/B)·Σᵢ
gᵢ[c]² the mean of the squared *per-example* gradients, θ the parameters, κ = B / B_ref.
"""
from __future__ import annotations

from collections.abc import Callable

from hpconj.optim import OPTIMIZERS, Hyperparameters, Native, optimizer

Parameterization = Callable[[Hyperparameters], Native]


def _rule(hp: Hyperparameters, name: str) -> Native:
    entry = optimizer(hp.optimizer)
    if name not in entry.parameterizations:
        having = [o.name for o in OPTIMIZERS.values() if name in o.parameterizations]
        listed = ", ".join(having[:-1]) + f" and {having[-1]}" if len(having) > 1 else having[0]
        raise ValueError(f"the {name} parameterization is defined for {listed}, not {hp.optimizer}")
    return entry.parameterize(hp, name)


def standard(hp: Hyperparameters) -> Native:
    """Identity: native lr = η, momentum (or β1) = β: PyTorch's own semantics."""
    return _rule(hp, "standard")


def sqrt(hp: Hyperparameters) -> Native:
    """Malladi et al.'s square-root rule: η·√κ, 1 − β' = κ·(1 − β) (β1, β2, α), eps/√κ."""
    return _rule(hp, "sqrt")


def conjugate(hp: Hyperparameters) -> Native:
    """Per-example lr (×κ), momentum as a running average, per-example second moments (adaptive)."""
    return _rule(hp, "conjugate")


def mup(hp: Hyperparameters) -> Native:
    """μP (Yang et al. 2022): standard's settings, per-layer init and lr multipliers of width/base_width."""
    return _rule(hp, "mup")


PARAMETERIZATIONS: dict[str, Parameterization] = {"standard": standard, "sqrt": sqrt, "conjugate": conjugate,
                                                  "mup": mup}

# Which of the config's settings each parameterization reads, besides (η, B, β): the trial id
# includes exactly these, so changing B_ref does not invalidate standard trials.
USES_REFERENCE_BATCH_SIZE: dict[str, bool] = {"standard": False, "sqrt": True, "conjugate": True, "mup": False}


def native_settings(name: str, hp: Hyperparameters) -> Native:
    """The native optimizer settings of `hp` under the parameterization called `name`."""
    try:
        rule = PARAMETERIZATIONS[name]
    except KeyError:
        raise ValueError(f"unknown parameterization {name!r}; known: {', '.join(PARAMETERIZATIONS)}") from None
    return rule(hp)
