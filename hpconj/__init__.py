"""hpconj: measure how far the optimal learning rate moves when batch size or momentum change.

Standard (PyTorch) parameterization versus McAllester's conjugate one; see README.md.
"""
from __future__ import annotations

__version__ = "0.1.0"
