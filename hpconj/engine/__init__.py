"""Engines train cohorts of trials; `get_engine(name)` makes one.

The names and defaults here are torch-free, so that the command line can offer them without
importing torch; an engine's module (and torch) is imported when one is made.
"""
from __future__ import annotations

from typing import Any

from hpconj.engine.names import DEFAULT_CHUNK, ENGINES
from hpconj.records import TrialResult

__all__ = ["DEFAULT_CHUNK", "ENGINES", "Engine", "TrialResult", "get_engine"]


def get_engine(name: str, chunk_size: int = DEFAULT_CHUNK) -> Any:
    if name == "cohort":
        from hpconj.engine.cohort import CohortEngine

        return CohortEngine(chunk_size)
    if name == "reference":
        from hpconj.engine.reference import ReferenceEngine

        return ReferenceEngine()
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")


def __getattr__(name: str) -> Any:
    if name == "Engine":  # the protocol, with torch in its signatures
        from hpconj.engine.base import Engine

        return Engine
    raise AttributeError(f"module 'hpconj.engine' has no attribute {name!r}")
