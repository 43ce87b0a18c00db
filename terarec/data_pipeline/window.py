"""A shuffle window of the loader and the batches cut from it (see ``terarec.data_pipeline.loader``).

A window permutes each id column on its own (``np.take`` by the window's permutation: one column's
random reads stay in cache) straight into a grid of batch-sized slots, so a full batch's key-major
KJT values are one slot of the grid, a view: no per-batch concatenation. Gathering rows per batch
across all columns instead read the whole window from memory once per batch (~10x slower). Dense
features are the exception: transformed feature-major, then laid out row-major and permuted a whole
row (4F bytes) at a time, one random read per row instead of F, and a full batch's dense values are
a contiguous slice, a view (no per-batch transpose).

Ids are int32 whenever every table has fewer than 2**31 rows (torchrec's own Criteo loader yields
int32 KJTs; fbgemm's embedding kernels take int32 indices and offsets): half the bytes of int64 to
copy, pin and send to a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.batch import PAD_LABEL
from terarec.data_pipeline.columns import dense_into, filled, pooled_empty, reduce_ids

# The bounds rule of numpy's take for a window's permutation, whose indices are all in range, so every
# rule gives the same values: "wrap" is the cheapest (no bounds pass as "raise" makes; ~15% less time
# a gather than "clip" on this VM).
_IN_RANGE: Final = "wrap"


@dataclass(frozen=True)
class KeyLayout:
    """Where each KJT key's ids come from: a single-id column or a list column."""

    keys: list[str]
    single: list[str]  # single-id columns, in key order
    single_sizes: list[int]  # their tables' num_embeddings (the modulus)
    jagged: list[str]  # list columns, in key order
    jagged_sizes: list[int]
    jagged_caps: list[int | None]
    source: list[tuple[bool, int]]  # per key: (is_single, index into single or jagged)
    dense: list[str]
    label: str
    id_dtype: np.dtype  # int32 when every table fits, else int64
    # per single-id / list column: the frequency-thresholded vocabulary of its table (None: the modulo rule)
    single_vocabularies: list[Any] = field(default_factory=list)
    jagged_vocabularies: list[Any] = field(default_factory=list)


def to_rows(ids: np.ndarray, size: int, vocabulary: Any) -> np.ndarray:
    """Raw ids -> table rows: the modulo rule, or the frequency-thresholded vocabulary's rows
    (``terarec.data_pipeline.id_counts``)."""
    return reduce_ids(ids, size) if vocabulary is None else vocabulary.rows(ids, size)


def id_dtype_for(table_sizes: list[int]) -> np.dtype:
    """int32 ids when every table's rows are addressable by int32 (ids are reduced below the size)."""
    return np.dtype(np.int32) if max(table_sizes, default=0) <= np.iinfo(np.int32).max else np.dtype(np.int64)


def as_ids(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Reduced ids (all in ``[0, table size)``) in ``dtype``: a view when only the sign differs."""
    if values.dtype == dtype:
        return values
    if values.dtype.kind == "u" and values.dtype.itemsize == dtype.itemsize:  # ids < size <= max of dtype
        return values.view(dtype)
    return values.astype(dtype)


class Window:
    """Rows of a few units, permuted by ``perm`` (None: as stored), ready to be cut into batches.

    Stream batch boundaries fall every ``batch_size`` rows from window position ``origin`` (<= 0).
    Single-id features are laid out on that grid, ``slots x keys x batch_size``: a full batch's
    key-major KJT values are one slot, a view; a batch that spans windows copies its pieces.
    Each column is permuted on its own (its random reads stay in cache), then copied to the grid.
    ``labels``: ``rows`` float32 and ``dense``: ``rows x F`` float32, both in ``perm`` order.
    """

    def __init__(
        self,
        table: pa.Table,
        layout: KeyLayout,
        spec: tuple[float, str],
        perm: np.ndarray | None,
        grid: tuple[int, int],
    ) -> None:
        """``spec``: (dense fill, dense transform); ``grid``: (origin, batch size)."""
        self.num_rows, (self.origin, self.batch_size) = table.num_rows, grid
        labels = filled(table.column(layout.label), 0)
        self.labels = (labels if perm is None else labels.take(perm, mode=_IN_RANGE)).astype(np.float32)
        self.dense = _dense_rows(table, layout.dense, spec, perm)  # rows x F, permuted
        slots = -(-(self.num_rows - self.origin) // self.batch_size)
        self.grid = pooled_empty((slots, len(layout.single), self.batch_size), layout.id_dtype)
        starts = [slot * self.batch_size + self.origin for slot in range(slots)]  # of each slot's rows
        bounds = [(lo, max(lo, 0), min(lo + self.batch_size, self.num_rows)) for lo in starts]
        vocabularies = layout.single_vocabularies or [None] * len(layout.single)
        joined = None  # a window of several chunks: each column's rows, reduced chunk by chunk into one buffer
        slot_perms = None if perm is None else [perm[first:end] for _, first, end in bounds]
        for j, (name, size, vocabulary) in enumerate(zip(layout.single, layout.single_sizes, vocabularies)):
            chunks = table.column(name)
            if chunks.num_chunks > 1:
                joined = pooled_empty((self.num_rows,), layout.id_dtype) if joined is None else joined
                column = _ids_into(chunks, size, vocabulary, joined)
            else:
                column = as_ids(to_rows(filled(chunks, 0), size, vocabulary), layout.id_dtype)
            for slot, (lo, first, end) in enumerate(bounds):  # column by column: random reads stay in cache
                out = self.grid[slot, j, first - lo : end - lo]
                if slot_perms is None:
                    out[:] = column[first:end]
                else:  # the method, not np.take: ~1 us less per call, 26 x slots calls a window
                    column.take(slot_perms[slot], out=out, mode=_IN_RANGE)
        self.jagged = _jagged_columns(table, layout, perm)

    def slot(self, start: int, end: int) -> tuple[int, int, int]:
        """Window rows ``[start, end)`` (inside one batch) -> (grid slot, first, end column in it)."""
        slot, first = divmod(start - self.origin, self.batch_size)
        return slot, first, first + end - start

    def single(self, index: int, start: int, end: int) -> np.ndarray:
        """Ids of single-id feature ``index`` for window rows ``[start, end)`` (a view)."""
        slot, first, last = self.slot(start, end)
        return self.grid[slot, index, first:last]


def _dense_rows(table: pa.Table, names: list[str], spec: tuple[float, str], perm: np.ndarray | None) -> np.ndarray:
    """Dense columns -> ``rows x F`` float32 in ``perm`` order: transformed feature-major chunk by
    chunk (contiguous writes), copied transposed into rows, then gathered a whole row at a time (one
    random read of 4F bytes per row instead of F; a batch's dense values are then one contiguous slice)."""
    rows = table.num_rows
    dense = pooled_empty((rows, len(names)), np.float32)
    first = 0
    for batch in table.select(names).to_batches():  # the window's chunks (row groups), zero-copy
        end = first + batch.num_rows
        scratch = pooled_empty((len(names), batch.num_rows), np.float32)
        dense_into(batch.columns, spec[0], spec[1], scratch)
        dense[first:end] = scratch.T
        first = end
    if perm is None or not names:
        return dense
    record = np.dtype((np.void, 4 * len(names)))  # a row as one item: np.take copies it whole
    permuted = pooled_empty(dense.shape, np.float32)
    dense.view(record).reshape(rows).take(perm, out=permuted.view(record).reshape(rows), mode=_IN_RANGE)
    return permuted


def _ids_into(column: pa.ChunkedArray, size: int, vocabulary: Any, out: np.ndarray) -> np.ndarray:
    """A single-id column -> its table rows in ``out``, chunk by chunk (no joined copy of the raw
    ids, and each chunk's modulo temporaries stay in cache)."""
    row = 0
    for chunk in column.chunks:
        end = row + len(chunk)
        np.copyto(out[row:end], to_rows(filled(chunk, 0), size, vocabulary), casting="unsafe")  # rows fit the dtype
        row = end
    return out


def _jagged_columns(table: pa.Table, layout: KeyLayout, perm: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per list feature: (ids, offsets) in ``perm`` order. Lists are permuted whole by arrow (their
    rows have no fixed width to gather by)."""
    if not layout.jagged:
        return []
    lists = table.select(layout.jagged)
    if perm is not None:
        lists = lists.take(pa.array(perm))
    out = []
    vocabularies = layout.jagged_vocabularies or [None] * len(layout.jagged)
    for name, size, cap, vocabulary in zip(layout.jagged, layout.jagged_sizes, layout.jagged_caps, vocabularies):
        ids, offsets = jagged_column(lists.column(name), cap)
        out.append((as_ids(to_rows(ids, size, vocabulary), layout.id_dtype), offsets))
    return out


def jagged_column(column: pa.ChunkedArray, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
    """list<uint32> column -> (int64 values, int64 offsets); each list keeps its last ``cap`` items."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
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


class Piece(NamedTuple):
    """Rows ``[start, end)`` of a window (in its shuffled order): a whole batch or part of one."""

    window: Window
    start: int
    end: int

    @property
    def num_rows(self) -> int:
        return self.end - self.start


def assemble(pieces: list[Piece], pad_to: int, layout: KeyLayout, ones: torch.Tensor | None) -> Batch:
    """Pieces -> one Batch of exactly ``pad_to`` rows, padding rows as ``terarec.batch`` defines them.

    ``ones``: the shared all-ones lengths of a full single-id batch (no consumer writes KJT lengths,
    as torchrec's own Criteo loader relies on), or None to build lengths here.
    """
    num_rows = sum(p.num_rows for p in pieces)
    if len(pieces) == 1 and num_rows == pad_to:  # one window's rows: contiguous slices, as they are
        dense, labels = (
            pieces[0].window.dense[pieces[0].start : pieces[0].end],
            pieces[0].window.labels[pieces[0].start : pieces[0].end],
        )
    else:
        dense = pooled_empty((pad_to, len(layout.dense)), np.float32)
        labels = pooled_empty((pad_to,), np.float32)
        position = 0
        for piece in pieces:
            end = position + piece.num_rows
            dense[position:end] = piece.window.dense[piece.start : piece.end]
            labels[position:end] = piece.window.labels[piece.start : piece.end]
            position = end
        dense[num_rows:], labels[num_rows:] = 0.0, PAD_LABEL
    jagged_lengths = [
        np.concatenate([np.diff(p.window.jagged[f][1][p.start : p.end + 1]) for p in pieces])
        if pieces
        else np.zeros(0, np.int64)
        for f in range(len(layout.jagged))
    ]
    if len(pieces) == 1 and num_rows == pad_to and not layout.jagged:  # one grid slot, as it is
        values = pieces[0].window.grid[pieces[0].window.slot(pieces[0].start, pieces[0].end)[0]].reshape(-1)
    else:
        values = _values(pieces, layout, num_rows, jagged_lengths)
    if ones is not None and num_rows == pad_to and not layout.jagged:
        lengths = ones
    else:
        key_lengths = np.zeros((len(layout.keys), pad_to), layout.id_dtype)
        for k, (single, index) in enumerate(layout.source):
            key_lengths[k, :num_rows] = 1 if single else jagged_lengths[index]
        lengths = torch.from_numpy(key_lengths.reshape(-1))
    # offsets are left to the KJT (computed lazily, in torch, only if a consumer asks)
    kjt = KeyedJaggedTensor(keys=layout.keys, values=torch.from_numpy(values), lengths=lengths, stride=pad_to)
    return Batch(dense_features=torch.from_numpy(dense), sparse_features=kjt, labels=torch.from_numpy(labels))


def _values(pieces: list[Piece], layout: KeyLayout, num_rows: int, jagged_lengths: list[np.ndarray]) -> np.ndarray:
    """Key-major KJT values of the pieces, copied into one pooled buffer."""
    total = sum(num_rows if single else int(jagged_lengths[i].sum()) for single, i in layout.source)
    values = pooled_empty((total,), layout.id_dtype)
    position = 0
    for single, index in layout.source:
        for piece in pieces:
            if single:
                ids = piece.window.single(index, piece.start, piece.end)
            else:
                all_ids, offsets = piece.window.jagged[index]
                ids = all_ids[offsets[piece.start] : offsets[piece.end]]
            values[position : position + len(ids)] = ids
            position += len(ids)
    return values
