"""Vectorised 64-bit hashing and a mergeable distinct-count sketch (K minimum values)."""

from __future__ import annotations

import numpy as np

KMV_K = 16384  # exact distinct counts below this; ~1% relative error above


def splitmix64(values: np.ndarray, salt: int = 0) -> np.ndarray:
    """splitmix64 finaliser of ``values ^ salt``, as uint64 (numpy wraps on overflow)."""
    z = values.astype(np.uint64) ^ np.uint64(salt * 0x9E3779B97F4A7C15 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def kmv_update(sketch: np.ndarray, ids: np.ndarray, k: int = KMV_K) -> np.ndarray:
    """Merge ``ids`` (or another sketch's hashes, via :func:`kmv_merge`) into a KMV sketch."""
    return kmv_merge(sketch, splitmix64(ids), k)


def kmv_merge(a: np.ndarray, b: np.ndarray, k: int = KMV_K) -> np.ndarray:
    merged = np.union1d(a, b)  # sorted, unique
    return merged[:k]


def kmv_estimate(sketch: np.ndarray, k: int = KMV_K) -> int:
    """Distinct count: exact while the sketch holds fewer than ``k`` hashes."""
    if len(sketch) < k:
        return int(len(sketch))
    return int(round((k - 1) * 2.0**64 / (float(sketch[k - 1]) + 1.0)))
