"""Frequency thresholding of sparse ids (``embeddings.min_count``): per-feature id counts over the train
rows, and the id -> row map that sends rare ids to one shared out-of-vocabulary row.

Why: an id seen a handful of times in train gets a row that is fitted to those few labels and then
memorised on every further epoch (the embedding overfitting behind the one-epoch phenomenon, Zhang et
al. 2022, CIKM); sharing one row among all rare ids gives them a well-estimated average instead.

Counting (:func:`count_ids`) streams the prepared parquet of the train rows only, one row group at a
time: it never opens the eval or valid split, and the carved validation rows
(``data.valid_fraction``) are excluded, so the vocabulary never sees a row that model selection or
the reported numbers read. Memory: the per-feature ``(id, count)`` arrays of the distinct ids seen so
far (16 bytes per distinct id, e.g. ~0.6 GB for a feature of 40M distinct ids), up to as much again in
per-row-group pairs not yet merged (merged geometrically: each entry O(log row groups) times, not once
per row group), plus one row group.
The result depends only on the dataset's content and the row range, not on world size or workers.

Cache: ``DATA/id_counts/<split>_<first>_<end>.npz`` (rows ``[first, end)`` of the split) records the
dataset fingerprint it was counted from and ``COUNTS_FORMAT``; a stale or unreadable file is recounted.
A dataset without a manifest has no fingerprint: its counts are never cached (nor read from a cache). The counts are a
deterministic function of the dataset (whose fingerprint every run records) and of the config keys
``data.valid_fraction``, ``data.max_train_rows`` and ``embeddings.min_count``, so a run's identity
already pins them. Every
process that needs them counts them itself when the cache is missing (no coordination between ranks:
each writes the same bytes through an atomic rename); a read-only dataset directory is not an error.

Id -> row (:class:`Vocabulary`): the frequent ids (count >= K), sorted, are the vocabulary; the j-th
reads row ``1 + j mod (num_embeddings - 1)``, every other id row 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from terarec.data_pipeline.columns import filled
from terarec.data_pipeline.loader import Unit, list_units, row_bounds
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetSchema

COUNTS_DIR = "id_counts"
COUNTS_FORMAT = 1  # recorded in the cache; bump when what is counted changes (an older cache is recounted)
OOV_ROW = 0  # the row every id below the threshold (or unseen in train) reads

Counts = dict[str, tuple[np.ndarray, np.ndarray]]  # feature -> (sorted distinct ids int64, their counts int64)


@dataclass(frozen=True)
class Vocabulary:
    """The frequent ids of one feature (sorted int64) and the id -> row rule of its table."""

    ids: np.ndarray

    @property
    def rows_needed(self) -> int:
        """Rows for one row per frequent id plus the out-of-vocabulary row."""
        return len(self.ids) + 1

    def rows(self, raw_ids: np.ndarray, num_embeddings: int) -> np.ndarray:
        """Raw ids -> int64 rows of a table of ``num_embeddings`` rows (frequent ids from row 1 on,
        folded modulo ``num_embeddings - 1`` when the table is capped; all others row 0)."""
        raw = raw_ids.astype(np.int64, copy=False)
        position = np.searchsorted(self.ids, raw)
        known = position < len(self.ids)
        known[known] = self.ids[position[known]] == raw[known]
        if num_embeddings <= 1:
            return np.zeros(len(raw), dtype=np.int64)
        return np.where(known, 1 + position % (num_embeddings - 1), OOV_ROW).astype(np.int64)


def count_ids(directory: str | Path, schema: DatasetSchema, split: str, rows: tuple[float, float]) -> Counts:
    """Occurrences of every raw id of every sparse feature in rows ``rows`` (fractions, file order) of
    ``split``: multi-hot lists count each item; nulls count as id 0, as the loader reads them."""
    features = [f.name for f in schema.sparse]
    merged = {name: _GeometricMerge() for name in features}
    for unit in list_units(str(directory), split, rows):
        table = _read_unit(unit, features)
        for name in features:
            merged[name].add(*np.unique(_flat_ids(table.column(name)), return_counts=True))
    return {name: merged[name].result() for name in features}


class _GeometricMerge:
    """Per-unit (ids, counts) pairs -> one sorted pair. Merging every unit into the running total would
    cost O(distinct ids) per unit (quadratic overall); pending pairs are merged only once they hold as
    many entries as the total, so each entry is merged O(log units) times."""

    def __init__(self) -> None:
        self.total: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_size = 0

    def add(self, ids: np.ndarray, counts: np.ndarray) -> None:
        self.pending.append((ids.astype(np.int64, copy=False), counts.astype(np.int64, copy=False)))
        self.pending_size += len(ids)
        if self.pending_size >= len(self.total[0]):
            self._fold()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._fold()
        return self.total

    def _fold(self) -> None:
        if self.pending:
            self.total = _merge([self.total, *self.pending])
            self.pending, self.pending_size = [], 0


def _read_unit(unit: Unit, columns: list[str]) -> pa.Table:
    table = pq.ParquetFile(unit.file, memory_map=True).read_row_group(unit.row_group, columns=columns)
    return table.slice(unit.start, unit.num_rows)


def _flat_ids(column: pa.ChunkedArray) -> np.ndarray:
    """A single-id or list column's ids as int64, nulls as 0."""
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        values = pa.chunked_array([chunk.flatten() for chunk in column.chunks], type=column.type.value_type)
        flat: np.ndarray = pc.fill_null(values, 0).to_numpy().astype(np.int64)
        return flat
    return np.asarray(filled(column, 0), dtype=np.int64)


def _merge(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Several (ids, counts) pairs -> (sorted distinct ids, summed counts), both int64."""
    ids, inverse = np.unique(np.concatenate([p[0] for p in pairs]), return_inverse=True)
    weights = np.concatenate([p[1] for p in pairs]).astype(np.float64)  # exact below 2**53 occurrences
    return ids, np.bincount(inverse, weights=weights, minlength=len(ids)).astype(np.int64)


def counts_path(directory: str | Path, split: str, first: int, end: int) -> Path:
    """The cache file of ``split``'s rows ``[first, end)`` inside the dataset directory."""
    return Path(directory) / COUNTS_DIR / f"{split}_{first}_{end}.npz"


def load_or_count(directory: str | Path, schema: DatasetSchema, split: str, rows: tuple[float, float]) -> Counts:
    """The cached counts of ``split``'s rows ``rows`` when they match the dataset, else counted (and cached)."""
    fingerprint = dataset_fingerprint(directory)
    if fingerprint is None:  # no manifest, so no identity to check a cache against: always count
        return count_ids(directory, schema, split, rows)
    first, end = row_bounds(schema.split_rows.get(split, 0), rows)
    path = counts_path(directory, split, first, end)
    cached = _read_cache(path, fingerprint)
    if cached is not None:
        return cached
    counts = count_ids(directory, schema, split, rows)
    _write_cache(path, counts, fingerprint)
    return counts


def _read_cache(path: Path, fingerprint: str) -> Counts | None:
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["__fingerprint__"]) != fingerprint or int(saved["__format__"]) != COUNTS_FORMAT:
                return None
            names = {key.rsplit(".", 1)[0] for key in saved.files if not key.startswith("__")}
            return {name: (saved[f"{name}.ids"], saved[f"{name}.counts"]) for name in names}
    except (OSError, KeyError, ValueError):
        return None


def _write_cache(path: Path, counts: Counts, fingerprint: str) -> None:
    arrays = {f"{name}.{part}": value for name, pair in counts.items() for part, value in zip(("ids", "counts"), pair)}
    try:
        path.parent.mkdir(exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        payload: dict[str, Any] = {"__fingerprint__": np.array(fingerprint), "__format__": np.array(COUNTS_FORMAT)}
        payload |= arrays
        np.savez(partial, **payload)
        os.replace(partial, path)  # ranks counting at once each write the same bytes
    except OSError:
        pass  # a read-only dataset: the counts are recomputed next time, nothing is wrong


def vocabularies(counts: Counts, min_count: int) -> dict[str, Vocabulary]:
    """Feature -> the ids seen at least ``min_count`` times."""
    return {name: Vocabulary(ids[occurrences >= min_count]) for name, (ids, occurrences) in counts.items()}


def frequent_ids(
    directory: str | Path, schema: DatasetSchema, split: str, rows: tuple[float, float], min_count: int
) -> dict[str, Vocabulary]:
    """Feature -> its ids seen at least ``min_count`` times in rows ``rows`` of ``split``: the rows a run
    trains on (``trainer.preflight.train_row_fractions``: before the validation carve, cut to
    ``data.max_train_rows``). Empty when ``min_count`` is 0 (off)."""
    if min_count <= 0:
        return {}
    return vocabularies(load_or_count(directory, schema, split, rows), min_count)
