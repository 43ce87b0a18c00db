"""Streaming parquet loader -> ``torchrec.datasets.utils.Batch`` (DESIGN.md "Loader contract").

Work is split in units of ``(file, row_group)``. Stream ``s`` of ``S = world_size * workers``
streams (``s = rank * workers + worker``) takes ``units[s::S]`` of the epoch's unit order. A stream
reads its units in windows of about ``shuffle_buffer`` rows, permutes the rows of each window with
a seed derived from ``(seed, epoch, stream, window)`` and cuts the concatenation into batches.

Because the stream is a pure function of ``(seed, epoch, stream)`` and window sizes come from
parquet metadata, a position is just ``(epoch, batch)``: ``load_state_dict`` re-reads one window
and skips inside it, so a resumed run continues exactly where it stopped.

Every stream yields the same number of full-size batches (the maximum over streams): the last
batches of shorter streams are padded with rows whose label is ``PAD_LABEL`` (-1). Nothing is
dropped and no rank waits in a collective for a batch that never comes; the trainer gives padded
rows zero weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generator, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data_pipeline.schema import DatasetError, DatasetSchema, dataset_files

PAD_LABEL = -1.0


@dataclass(frozen=True)
class LoaderSpec:
    """What to read and how; identical on every rank."""

    directory: str
    split: str
    batch_size: int
    table_rows: dict[str, int]  # feature -> embedding rows; raw ids are taken modulo this
    shuffle_buffer: int = 16384  # 0: no shuffling, units in file order
    seed: int = 0
    dense_fill: float = 0.0
    dense_transform: str = "log1p"
    max_history: int = 50


@dataclass(frozen=True)
class Unit:
    file: str
    row_group: int
    rows: int
    start: int = 0  # first row inside the row group (row groups are split when there are few)


MIN_UNITS_PER_STREAM = 16


def split_units(units: list[Unit], streams: int) -> list[Unit]:
    """Cut row groups into slices when there are fewer than 16 units per stream, so that ranks
    get nearly equal rows (and little padding) even on a dataset of a few row groups."""
    pieces = math.ceil(MIN_UNITS_PER_STREAM * streams / max(len(units), 1))
    if pieces <= 1 or streams == 1:
        return units
    out: list[Unit] = []
    for unit in units:
        bounds = np.linspace(0, unit.rows, pieces + 1).astype(int)
        out += [Unit(unit.file, unit.row_group, int(b - a), int(a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return out


def list_units(directory: str, split: str) -> list[Unit]:
    units: list[Unit] = []
    for path in dataset_files(directory, split):
        meta = pq.ParquetFile(path).metadata
        units += [Unit(str(path), g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return units


class _Window:
    """Rows of a few units, permuted, as numpy arrays ready to be cut into batches."""

    def __init__(self, table: pa.Table, schema: DatasetSchema, spec: LoaderSpec, rng: Optional[np.random.Generator]) -> None:
        if rng is not None:
            table = table.take(pa.array(rng.permutation(table.num_rows)))
        self.rows = table.num_rows
        self.labels = table.column(schema.label).to_numpy(zero_copy_only=False).astype(np.float32)
        dense = [pc.fill_null(table.column(n), spec.dense_fill).to_numpy().astype(np.float32) for n in schema.dense]
        self.dense = np.stack(dense, axis=1) if dense else np.zeros((self.rows, 0), np.float32)
        if spec.dense_transform == "log1p":
            self.dense = np.log1p(np.maximum(self.dense, 0.0))
        self.jagged: list[tuple[np.ndarray, np.ndarray]] = []  # per feature: (values, offsets)
        for name, table_name, cap in _feature_columns(schema, spec):
            values, offsets = _jagged_column(table.column(name), cap)
            self.jagged.append((values % spec.table_rows[table_name], offsets))


def _feature_columns(schema: DatasetSchema, spec: LoaderSpec) -> list[tuple[str, str, Optional[int]]]:
    """(column, table feature, history cap) for every KJT key, in KJT key order."""
    cols: list[tuple[str, str, Optional[int]]] = [(f.name, f.name, None) for f in schema.sparse]
    cols += [(s.name, s.table, min(s.max_length, spec.max_history)) for s in schema.sequence]
    return cols


def _jagged_column(column: pa.ChunkedArray, cap: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """uint32 or list<uint32> column -> (int64 values, int64 offsets); lists keep the last ``cap``."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_list(array.type) and not pa.types.is_large_list(array.type):
        values = pc.fill_null(array, 0).to_numpy().astype(np.int64)
        return values, np.arange(len(values) + 1, dtype=np.int64)
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = pc.fill_null(array.values, 0).to_numpy().astype(np.int64)
    offsets, values = offsets - offsets[0], values[offsets[0] : offsets[-1]]
    if cap is not None:
        lengths = np.diff(offsets)
        keep = np.minimum(lengths, cap)
        if (keep < lengths).any():  # keep the most recent `cap` items of each history
            new_offsets = np.concatenate([[0], np.cumsum(keep)])
            gather = np.repeat(offsets[1:] - keep - new_offsets[:-1], keep) + np.arange(new_offsets[-1])
            values, offsets = values[gather], new_offsets
    return values, offsets


class ParquetBatchStream(IterableDataset):
    """One epoch of one rank's batches; workers of a DataLoader split the rank's units further."""

    def __init__(self, spec: LoaderSpec, schema: DatasetSchema, rank: int, world_size: int, workers: int) -> None:
        super().__init__()
        self.spec, self.schema = spec, schema
        self.rank, self.world_size, self.workers = rank, world_size, max(workers, 1)
        self.units = split_units(list_units(spec.directory, spec.split), world_size * self.workers)
        self.keys = [name for name, _, _ in _feature_columns(schema, spec)]
        self.columns = [schema.label, *schema.dense, *self.keys]
        self.epoch, self.start_batch = 0, 0
        missing = [f for _, f, _ in _feature_columns(schema, spec) if f not in spec.table_rows]
        if missing:
            raise DatasetError(f"no embedding table size for feature '{missing[0]}'")

    # -- deterministic plan ---------------------------------------------------------------
    def stream_units(self, stream: int, epoch: int) -> list[Unit]:
        order = list(range(len(self.units)))
        if self.spec.shuffle_buffer > 0:
            order = np.random.default_rng([self.spec.seed, epoch]).permutation(len(self.units)).tolist()
        streams = self.world_size * self.workers
        return [self.units[i] for i in order[stream::streams]]

    def batches_per_stream(self, epoch: int = 0) -> int:
        """The same for every stream: the longest stream's batch count (shorter ones are padded)."""
        streams = range(self.world_size * self.workers)
        rows = [sum(u.rows for u in self.stream_units(s, epoch)) for s in streams]
        return max(math.ceil(r / self.spec.batch_size) for r in rows)

    def __len__(self) -> int:
        return self.batches_per_stream(self.epoch) * self.workers

    def _windows(self, units: list[Unit]) -> list[list[Unit]]:
        windows, current, rows = [], [], 0
        for unit in units:
            current.append(unit)
            rows += unit.rows
            if rows >= max(self.spec.shuffle_buffer, 1):
                windows.append(current)
                current, rows = [], 0
        return windows + ([current] if current else [])

    def _read(self, units: list[Unit]) -> pa.Table:
        groups: dict[tuple[str, int], pa.Table] = {}  # each row group is decoded once per window
        for u in units:
            if (u.file, u.row_group) not in groups:
                groups[(u.file, u.row_group)] = pq.ParquetFile(u.file).read_row_group(u.row_group, columns=self.columns)
        return pa.concat_tables([groups[(u.file, u.row_group)].slice(u.start, u.rows) for u in units])

    # -- iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        stream = self.rank * self.workers + worker
        # the DataLoader takes batches round-robin from workers: global batch k is worker k % W's
        skip = max(0, math.ceil((self.start_batch - worker) / self.workers))
        yield from self._stream_batches(stream, self.epoch, skip)

    def _stream_batches(self, stream: int, epoch: int, skip: int) -> Iterator[Batch]:
        bsz = self.spec.batch_size
        row = skip * bsz  # stream rows already consumed (a batch boundary)
        window_start, carry = 0, None
        for w, units in enumerate(self._windows(self.stream_units(stream, epoch))):
            rows = sum(u.rows for u in units)
            if window_start + rows > row:  # windows wholly before the resume point are not read
                rng = np.random.default_rng([self.spec.seed, epoch, stream, w]) if self.spec.shuffle_buffer > 0 else None
                window = _Window(self._read(units), self.schema, self.spec, rng)
                carry = yield from self._cut(window, row - window_start, carry)
                row = window_start + rows
            window_start += rows
        yielded = row // bsz
        if carry is not None:
            yield self._assemble([carry], pad_to=bsz)
            yielded += 1
        for _ in range(self.batches_per_stream(epoch) - yielded):
            yield self._assemble([], pad_to=bsz)

    def _cut(self, window: _Window, start: int, carry: Optional[dict[str, Any]]) -> Generator[Batch, None, Optional[dict[str, Any]]]:
        """Yield full batches of ``window`` from row ``start`` (after ``carry``); return the leftover."""
        bsz = self.spec.batch_size
        if carry is not None:
            piece = _slice(window, start, min(start + bsz - carry["rows"], window.rows))
            start += piece["rows"]
            if carry["rows"] + piece["rows"] < bsz:
                return _merge([carry, piece])
            yield self._assemble([carry, piece], pad_to=bsz)
        while start + bsz <= window.rows:
            yield self._assemble([_slice(window, start, start + bsz)], pad_to=bsz)
            start += bsz
        return _slice(window, start, window.rows) if start < window.rows else None

    def _assemble(self, pieces: list[dict[str, Any]], pad_to: int) -> Batch:
        """Pieces -> one Batch of exactly ``pad_to`` rows (padding rows: label -1, no ids)."""
        part = _merge(pieces) if pieces else None
        rows = part["rows"] if part else 0
        pad = pad_to - rows
        dense = np.zeros((pad_to, len(self.schema.dense)), np.float32)
        labels = np.full(pad_to, PAD_LABEL, np.float32)
        lengths, values = [], []
        if part:
            dense[:rows], labels[:rows] = part["dense"], part["labels"]
        for f in range(len(self.keys)):
            vals, lens = (part["values"][f], part["lengths"][f]) if part else (np.zeros(0, np.int64), np.zeros(0, np.int64))
            values.append(vals)
            lengths.append(np.concatenate([lens, np.zeros(pad, np.int64)]) if pad else lens)
        length_arr = np.concatenate(lengths)
        offsets = np.zeros(len(length_arr) + 1, np.int64)
        np.cumsum(length_arr, out=offsets[1:])
        kjt = KeyedJaggedTensor(
            keys=self.keys, values=torch.from_numpy(np.concatenate(values)), lengths=torch.from_numpy(length_arr),
            offsets=torch.from_numpy(offsets), stride=pad_to,
        )
        return Batch(dense_features=torch.from_numpy(dense), sparse_features=kjt, labels=torch.from_numpy(labels))


def _slice(window: _Window, start: int, end: int) -> dict[str, Any]:
    values, lengths = [], []
    for vals, offs in window.jagged:
        values.append(vals[offs[start] : offs[end]])
        lengths.append(np.diff(offs[start : end + 1]))
    return {"rows": end - start, "dense": window.dense[start:end], "labels": window.labels[start:end],
            "values": values, "lengths": lengths}


def _merge(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    if len(pieces) == 1:
        return pieces[0]
    nfeat = len(pieces[0]["values"])
    return {
        "rows": sum(p["rows"] for p in pieces),
        "dense": np.concatenate([p["dense"] for p in pieces]),
        "labels": np.concatenate([p["labels"] for p in pieces]),
        "values": [np.concatenate([p["values"][f] for p in pieces]) for f in range(nfeat)],
        "lengths": [np.concatenate([p["lengths"][f] for p in pieces]) for f in range(nfeat)],
    }


class BatchLoader:
    """Iterable over one epoch of ``Batch``es per ``iter()``, with exact ``state_dict`` resume."""

    def __init__(self, spec: LoaderSpec, schema: DatasetSchema, rank: int = 0, world_size: int = 1, num_workers: int = 0) -> None:
        self.stream = ParquetBatchStream(spec, schema, rank, world_size, num_workers)
        self.num_workers = num_workers
        self.epoch, self.batches = 0, 0

    def __len__(self) -> int:
        """Batches in one full epoch (equal on every rank)."""
        return len(self.stream)

    def __iter__(self) -> Iterator[Batch]:
        self.stream.epoch, self.stream.start_batch = self.epoch, self.batches
        source = self.stream if self.num_workers == 0 else DataLoader(self.stream, batch_size=None, num_workers=self.num_workers)
        for batch in source:
            self.batches += 1
            yield batch
        self.epoch, self.batches = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
