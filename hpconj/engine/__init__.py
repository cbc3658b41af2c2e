"""Engines train cohorts of trials; `ENGINES` maps a name to one."""
from __future__ import annotations

from hpconj.engine.base import Engine, TrialResult
from hpconj.engine.reference import ReferenceEngine

ENGINES: dict[str, type] = {"reference": ReferenceEngine}

__all__ = ["ENGINES", "Engine", "TrialResult", "get_engine"]


def get_engine(name: str) -> Engine:
    try:
        return ENGINES[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}") from None
