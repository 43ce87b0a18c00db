"""The distinct-count sketch behind schema.json's cardinalities: exact up to ``EXACT_LIMIT``, then
HyperLogLog within its stated error (3 standard errors: deterministic hashing, so no flakes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terarec.data_pipeline import sketch
from terarec.data_pipeline.criteo import prepare_criteo
from terarec.data_pipeline.sketch import EXACT_LIMIT, STANDARD_ERROR, DistinctCounts, fmix32

BLOCK = 17_000  # rows per update: the test streams in blocks about one CSV block (criteo.BLOCK_BYTES, 2 MB)


def _count(ids: np.ndarray, features: int = 1) -> DistinctCounts:
    """Stream ``ids`` (every id of a feature; the same ids for each feature) block by block."""
    counts = DistinctCounts(features)
    for start in range(0, len(ids), BLOCK):
        counts.update(np.tile(ids[start : start + BLOCK], (features, 1)))
    return counts


def _with_repeats(distinct: np.ndarray, seed: int) -> np.ndarray:
    """Each id once, a third of them again, shuffled: 1.33x rows as distinct ids."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([distinct, distinct[: len(distinct) // 3]])
    return ids[rng.permutation(len(ids))]


def test_stated_error_is_hyperloglogs() -> None:
    assert sketch.REGISTERS == 2**14 and STANDARD_ERROR == pytest.approx(0.008125)


@pytest.mark.parametrize("distinct", [1, 175, 5000, EXACT_LIMIT])
def test_exact_up_to_the_limit(distinct: int) -> None:
    ids = (np.arange(distinct, dtype=np.uint64) * 2654435761 % 2**32).astype(np.uint32)
    counts = _count(_with_repeats(ids, seed=distinct), features=2)
    assert counts.estimates() == [distinct, distinct] and counts.exact[0] is not None


def _known_ids(kind: str, distinct: int) -> np.ndarray:
    if kind == "sequential":  # synth's ids: 0, 1, 2, ...
        return np.arange(distinct, dtype=np.uint32)
    if kind == "strided":  # only high bits vary: a weak hash would collapse them
        return (np.arange(distinct, dtype=np.uint64) << np.uint64(12)).astype(np.uint32)
    values = np.unique(np.random.default_rng(distinct).integers(0, 2**32, distinct + distinct // 10, dtype=np.uint64))
    return values[:distinct].astype(np.uint32)  # random 32-bit ids, as Criteo's hashed values


@pytest.mark.parametrize("kind", ["sequential", "strided", "random"])
@pytest.mark.parametrize("distinct", [10**5, 10**6])
def test_hyperloglog_within_three_standard_errors(kind: str, distinct: int) -> None:
    counts = _count(_with_repeats(_known_ids(kind, distinct), seed=1))
    assert counts.exact[0] is None  # above the limit: registers
    estimate = counts.estimates()[0]
    assert abs(estimate - distinct) <= 3 * STANDARD_ERROR * distinct, (estimate, distinct)


def test_merge_equals_one_pass_and_survives_saving() -> None:
    """Per-file sketches merged (as _write_schema does) give exactly the one-pass sketch."""
    small = np.arange(100, dtype=np.uint32)  # stays exact in both halves
    big = _known_ids("random", 60_000)  # a feature that switches in one half only
    halves = [np.stack([small[:70], big[:70]]), np.stack([np.resize(small[50:], 60_000), big])]
    one_pass, merged = DistinctCounts(2), DistinctCounts(2)
    for half in halves:
        one_pass.update(half)
        part = DistinctCounts(2)
        part.update(half)
        merged.merge(DistinctCounts.from_array(part.to_array()))
    assert merged.estimates() == one_pass.estimates() and merged.estimates()[0] == 100
    assert np.array_equal(merged.registers, one_pass.registers) and merged.exact[1] is None


def test_int64_ids_count_as_their_uint32_values() -> None:
    """update() casts at entry: int64 blocks (exact and HyperLogLog features alike) match uint32 ones."""
    ids = np.stack([np.arange(200, dtype=np.uint32) % 50, _known_ids("random", 200)])
    big = np.stack([np.arange(30_000, dtype=np.uint32), _known_ids("random", 30_000)])
    as_uint32, as_int64 = DistinctCounts(2), DistinctCounts(2)
    for block in (ids, big):
        as_uint32.update(block)
        as_int64.update(block.astype(np.int64))
    assert as_int64.estimates() == as_uint32.estimates()
    assert np.array_equal(as_int64.registers, as_uint32.registers)
    assert as_int64.exact[0] is None and as_int64.is_exact(0) is False
    with pytest.raises(ValueError, match="32-bit"):
        DistinctCounts(1).update(np.array([[-1]], np.int64))


def test_fmix32_is_a_bijection_on_a_range() -> None:
    ids = np.arange(2**20, dtype=np.uint32) * np.uint32(4099)
    assert len(np.unique(fmix32(ids))) == 2**20


def test_prepare_estimates_large_vocabularies_within_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """schema.json's cardinality of a feature above the exact limit (lowered here to keep the file small)."""
    monkeypatch.setattr(sketch, "EXACT_LIMIT", 500)
    ids = [f"{v:08x}" for v in _known_ids("random", 4000)]
    lines = ["\t".join(["1"] + ["0"] * 13 + [ids[i], ids[i % 300]] + ["0000000a"] * 24) for i in range(4000)]
    (tmp_path / "day_0").write_text("\n".join(lines + lines[:1000]) + "\n")
    schema = prepare_criteo([str(tmp_path / "day_0")], str(tmp_path / "out"), progress=False)
    cardinalities = [f.cardinality for f in schema.sparse]
    assert abs(cardinalities[0] - 4000) <= 3 * STANDARD_ERROR * 4000
    assert cardinalities[1:3] == [300, 1]  # still exact
    assert "HyperLogLog" in schema.extra["cardinality"]


@pytest.mark.parametrize("repeats", [1, 4])
def test_the_same_counts_whatever_the_blocks(repeats: int) -> None:
    """One block of many new ids (sorted ``2 * EXACT_LIMIT`` at a time, the rest straight to the
    registers once the set overflows) counts exactly as small blocks do: the same registers, or the
    same exact set when the ids repeat enough to stay below the limit."""
    distinct = 3 * EXACT_LIMIT if repeats == 1 else EXACT_LIMIT - 7
    ids = np.tile(_known_ids("random", distinct), repeats)
    ids = ids[np.random.default_rng(repeats).permutation(len(ids))]
    one_block, small_blocks = DistinctCounts(1), DistinctCounts(1)
    one_block.update(ids[None].copy(), scratch=True)
    for start in range(0, len(ids), 1000):
        small_blocks.update(ids[None, start : start + 1000])
    assert one_block.estimates() == small_blocks.estimates()
    assert np.array_equal(one_block.registers, small_blocks.registers)
    assert one_block.is_exact(0) == (repeats > 1) == small_blocks.is_exact(0)
    if repeats > 1:
        assert one_block.estimates() == [distinct]
