"""Mergeable distinct counts of 32-bit ids, one per feature: exact while small, HyperLogLog above.

A feature keeps the exact sorted set of its ids while it has at most ``EXACT_LIMIT`` of them (so
small vocabularies, and every feature of a small file, are counted exactly), then switches to
HyperLogLog registers (Flajolet et al. 2007) with precision ``P``: ``2**P`` one-byte registers, a
relative standard error of ``1.04 / sqrt(2**P)`` = 0.81% (``STANDARD_ERROR``), linear counting
below 2.5 * 2**P. The hash is murmur3's 32-bit finaliser, a bijection on uint32: distinct ids give
distinct hashes, so no collision correction is needed; the 18 rank bits saturate only near 2**32
distinct ids (bias under 0.1% up to 2**28, about 1% at 2**30). Everything is deterministic, so an
estimate is the same on every run and machine.

Per block the cost is, per exact feature, a lookup of every id in a hash table of its set (a
multiply, a shift, arrow's take and a compare) and a sort of the ids the table does not hold (new
ids, and members that lost their slot to another), ``2 * EXACT_LIMIT`` at a time until the set
overflows, so a known small vocabulary costs no sort and a large one about ``2 * EXACT_LIMIT``; for
HyperLogLog features, ~10 vectorised uint32 passes plus one ``np.maximum.at``: no ``np.unique``
and no growing sample of hashes.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

P = 14
REGISTERS = 1 << P
STANDARD_ERROR = 1.04 / math.sqrt(REGISTERS)
EXACT_LIMIT = 16384  # distinct ids kept exactly (the same limit below which the former KMV sketch was exact)
_RANK_BITS = 32 - P
_MAX_RANK = _RANK_BITS + 1
DESCRIPTION = (  # for schema.json
    f"distinct raw ids (exact up to {EXACT_LIMIT}, HyperLogLog p={P} estimate above: "
    f"{STANDARD_ERROR:.2%} relative standard error); raw ids are 32-bit"
)
_SLOT_BITS = 16  # exact-set lookup tables: 4x EXACT_LIMIT slots (256 KB a feature)
_GOLDEN = np.uint32(0x9E3779B1)  # 2**32 / golden ratio, odd: Knuth's multiplicative hash
_HLL = np.uint32(0xFFFFFFFF)  # header of a persisted row holding registers instead of an exact set


def fmix32(ids: np.ndarray) -> np.ndarray:
    """murmur3's finaliser on uint32 (a bijection with full avalanche), as a new uint32 array."""
    return _fmix32_in_place(ids.astype(np.uint32, copy=True))


def _fmix32_in_place(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _rank_table() -> np.ndarray:
    """w (the low ``_RANK_BITS`` bits of a hash) -> 1 + its leading zeros (``_MAX_RANK`` for 0), uint8.

    floor(log2 w) is read from the exponent field of w as a float32 (exact below 2**24)."""
    low = np.arange(1 << _RANK_BITS, dtype=np.uint32)
    exponent = low.astype(np.float32).view(np.uint32) >> np.uint32(23)  # 0 for w == 0
    table: np.ndarray = np.minimum(np.uint32(_RANK_BITS + 127) - exponent, np.uint32(_MAX_RANK)).astype(np.uint8)
    return table


_RANK = _rank_table()  # 256 KB: one lookup per id instead of six array passes
_RANK_ARROW = pa.array(_RANK)


def _slots(ids: np.ndarray) -> np.ndarray:
    """Multiplicative hashing of uint32 ids to ``_SLOT_BITS``-bit table slots (a new array)."""
    slots: np.ndarray = np.multiply(ids, _GOLDEN)  # uint32: wraps around
    slots >>= np.uint32(32 - _SLOT_BITS)
    return slots


def _unique_sorted(values: np.ndarray) -> np.ndarray:
    """Distinct values of a sorted 1-D array."""
    if len(values) < 2:
        return values
    keep = np.empty(len(values), bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


class DistinctCounts:
    """Distinct-id counts of ``features`` features, updated with (features, rows) uint32 id blocks."""

    def __init__(self, features: int) -> None:
        self.registers = np.zeros((features, REGISTERS), np.uint8)
        self.exact: list[np.ndarray | None] = [np.zeros(0, np.uint32) for _ in range(features)]  # None: HLL
        # per feature: (the exact set it was made from, its lookup table), see ``_not_known``
        self._tables: list[tuple[np.ndarray, pa.Array] | None] = [None] * features

    def is_exact(self, feature: int) -> bool:
        """Whether ``feature`` still holds its exact id set (at most ``EXACT_LIMIT`` distinct ids so far)."""
        return self.exact[feature] is not None

    def update(self, ids: np.ndarray, scratch: bool = False) -> None:
        """Add a block of ids of shape (features, rows): any integer dtype holding 32-bit ids (the hashing
        and the exact sets work on uint32; a wider id would be silently truncated, so it is refused).
        ``scratch``: ``ids`` is the caller's throw-away copy, which may be sorted in place."""
        ids = _as_uint32(ids)
        exact_rows = [f for f, s in enumerate(self.exact) if s is not None]
        hll_rows = [f for f, s in enumerate(self.exact) if s is None]
        for f in exact_rows:
            # only the ids the set's lookup table does not hold are sorted (new ones and collisions):
            # once a small vocabulary is known, one multiply, shift, gather and compare per id instead
            # of a sort; ``ids`` is sorted in place only when ``scratch`` (it may back arrow columns)
            self._add_candidates(f, self._not_known(f, ids[f], scratch))
        if hll_rows:
            self._add_to_registers(hll_rows, ids[hll_rows], copied=True)

    def merge(self, other: DistinctCounts) -> None:
        """Fold another sketch (e.g. another input file's) into this one."""
        for f, theirs in enumerate(other.exact):
            if theirs is not None and self.exact[f] is not None:
                self._add_exact(f, theirs)
            elif theirs is not None:
                self._add_to_registers([f], theirs[None])
            else:
                mine = self.exact[f]
                if mine is not None:
                    self._switch_to_registers(f, mine)
                np.maximum(self.registers[f], other.registers[f], out=self.registers[f])

    def estimates(self) -> list[int]:
        """Per feature: the exact count, or the HyperLogLog estimate once above ``EXACT_LIMIT``."""
        return [len(s) if s is not None else _hll_estimate(r) for s, r in zip(self.exact, self.registers)]

    def to_array(self) -> np.ndarray:
        """(features, 1 + REGISTERS) uint32: per row the exact count then the ids, or a mark then registers."""
        packed = np.zeros((len(self.exact), 1 + REGISTERS), np.uint32)
        for f, values in enumerate(self.exact):
            if values is None:
                packed[f, 0], packed[f, 1:] = _HLL, self.registers[f]
            else:
                packed[f, 0], packed[f, 1 : 1 + len(values)] = len(values), values
        return packed

    @classmethod
    def from_array(cls, packed: np.ndarray) -> DistinctCounts:
        """The sketch :meth:`to_array` packed (e.g. one input file's, read back to merge)."""
        counts = cls(len(packed))
        for f, row in enumerate(packed):
            if row[0] == _HLL:
                counts.exact[f], counts.registers[f] = None, row[1:].astype(np.uint8)
            else:
                counts.exact[f] = row[1 : 1 + int(row[0])].copy()
        return counts

    def _not_known(self, feature: int, ids: np.ndarray, scratch: bool) -> np.ndarray:
        """The ``ids`` (uint32) that are not certainly in the feature's exact set: a new array, or ``ids``
        itself when ``scratch`` and the set is empty.

        The table has ``2**_SLOT_BITS`` slots: slot ``(id * _GOLDEN) >> (32 - _SLOT_BITS)`` holds one of the
        set's ids that fall there, and empty slots hold some id of the set too, so ``table[slot] == id``
        only for members; members that lost their slot to another are returned, and sorted out later."""
        current = self.exact[feature]
        if current is None or not len(current):
            return ids if scratch else ids.copy()
        cached = self._tables[feature]
        if cached is None or cached[0] is not current:  # the set changed since the table was made
            table = np.full(1 << _SLOT_BITS, current[0], np.uint32)
            table[_slots(current)] = current
            self._tables[feature] = cached = (current, pa.array(table))
        # arrow's take reads the uint32 slots as they are (numpy's widens them to intp first)
        held = pc.take(cached[1], pa.array(_slots(ids)), boundscheck=False).to_numpy()  # slots < 2**_SLOT_BITS
        candidates: np.ndarray = ids[held != ids]
        return candidates

    def _add_candidates(self, feature: int, candidates: np.ndarray) -> None:
        """Add ids (a throw-away uint32 array, sorted in place) to an exact feature, ``2 * EXACT_LIMIT``
        at a time: once the set overflows, the ids left go straight to the registers unsorted (a
        HyperLogLog of a set does not depend on how it was split), so a feature with many new ids sorts
        about ``2 * EXACT_LIMIT`` of them, not a row group's worth."""
        chunk, start = 2 * EXACT_LIMIT, 0
        while start < len(candidates) and self.exact[feature] is not None:
            part = candidates[start : start + chunk]
            part.sort()
            self._add_exact(feature, _unique_sorted(part))
            start += chunk
        if start < len(candidates):  # switched to registers part way
            self._add_to_registers([feature], candidates[None, start:], copied=True)

    def _add_exact(self, feature: int, distinct: np.ndarray) -> None:
        current = self.exact[feature]
        assert current is not None
        if len(distinct) > EXACT_LIMIT:  # overflows whatever the set holds: no merge needed
            self._switch_to_registers(feature, current)
            self._add_to_registers([feature], distinct[None])
            return
        if len(current):
            found = current[np.minimum(np.searchsorted(current, distinct), len(current) - 1)] == distinct
            if found.all():  # the usual case once a small vocabulary has been seen: no new set
                return
            merged = _unique_sorted(np.sort(np.concatenate([current, distinct[~found]])))
        else:
            merged = distinct
        if len(merged) > EXACT_LIMIT:
            self._switch_to_registers(feature, merged)
        else:
            self.exact[feature] = merged

    def _switch_to_registers(self, feature: int, ids: np.ndarray) -> None:
        self.exact[feature] = None
        self._add_to_registers([feature], ids[None])

    def _add_to_registers(self, features: list[int], ids: np.ndarray, copied: bool = False) -> None:
        """ids: (len(features), n) -> max-rank updates of those features' registers (``copied``: ids
        is a scratch uint32 copy that may be hashed in place)."""
        hashes = _fmix32_in_place(ids) if copied else fmix32(ids)
        # arrow's take reads the uint32 positions as they are (numpy's widens them to intp first)
        low = (hashes & np.uint32((1 << _RANK_BITS) - 1)).ravel()
        ranks = pc.take(_RANK_ARROW, pa.array(low), boundscheck=False).to_numpy()
        hashes >>= np.uint32(_RANK_BITS)  # the register, then its row of ``registers`` (< 2**32: uint32)
        hashes += (np.asarray(features, np.uint32) * np.uint32(REGISTERS))[:, None]
        np.maximum.at(self.registers.reshape(-1), hashes.ravel(), ranks)


def _as_uint32(ids: np.ndarray) -> np.ndarray:
    """``ids`` as uint32 (unchanged when already so); a ValueError for non-integers or ids outside 32 bits."""
    ids = np.asarray(ids)
    if ids.dtype == np.uint32:
        return ids
    if ids.dtype.kind not in "iu":
        raise ValueError(f"distinct counts take integer ids, got dtype {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > np.iinfo(np.uint32).max):
        raise ValueError("distinct counts take 32-bit ids (0 .. 2**32 - 1)")
    return ids.astype(np.uint32)


def _hll_estimate(registers: np.ndarray) -> int:
    """HyperLogLog's estimate with linear counting for small counts (Flajolet et al. 2007, fig. 3)."""
    m = len(registers)
    alpha = 0.7213 / (1.0 + 1.079 / m)
    raw = alpha * m * m / float(np.ldexp(1.0, -registers.astype(np.int32)).sum())
    empty = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * m and empty:
        raw = m * math.log(m / empty)
    return int(round(min(raw, 2.0**32)))
