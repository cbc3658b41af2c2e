"""Engines train cohorts of trials; `ENGINES` maps a name to one."""
from __future__ import annotations

from hpconj.engine.base import Engine, TrialResult
from hpconj.engine.cohort import DEFAULT_CHUNK, CohortEngine
from hpconj.engine.reference import ReferenceEngine

ENGINES: dict[str, type] = {"cohort": CohortEngine, "reference": ReferenceEngine}

__all__ = ["DEFAULT_CHUNK", "ENGINES", "Engine", "TrialResult", "get_engine"]


def get_engine(name: str, chunk_size: int = DEFAULT_CHUNK) -> Engine:
    if name == "cohort":
        return CohortEngine(chunk_size)
    if name == "reference":
        return ReferenceEngine()
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
