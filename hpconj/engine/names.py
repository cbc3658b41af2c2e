"""The engines' names and defaults, torch-free: what the command line offers before any engine
(and torch) is imported."""
from __future__ import annotations

ENGINES = ("cohort", "reference")
DEFAULT_CHUNK = 256  # most trials a cohort engine trains as one stack (--chunk-size)
