"""Vectorised 64-bit hashing (distinct counts live in ``sketch.py``)."""

from __future__ import annotations

import numpy as np


def splitmix64(values: np.ndarray, salt: int = 0) -> np.ndarray:
    """splitmix64 finaliser of ``values ^ salt``, as uint64 (numpy wraps on overflow)."""
    z = values.astype(np.uint64) ^ np.uint64(salt * 0x9E3779B97F4A7C15 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
