"""Streaming parquet loader -> ``torchrec.datasets.utils.Batch`` laid out as ``terarec.batch`` says.

Work is split in units of ``(file, row_group)``. Stream ``s`` of ``S = world_size * workers``
streams (``s = rank * workers + worker``) takes ``units[s::S]`` of the epoch's unit order. A stream
reads its units in windows of about ``shuffle_buffer`` rows, permutes the rows of each window with
a seed derived from ``(seed, epoch, stream, window)`` and cuts the concatenation into batches.

Because the stream is a pure function of ``(seed, epoch, stream)`` and window sizes come from
parquet metadata, a position is just ``(epoch, batch)``: ``load_state_dict`` re-reads the current
window of each of the rank's ``W`` streams and skips inside it, so a resumed run continues exactly
where it stopped. The position only means that under the same stream layout (``world_size`` and
``W``, which deal the units): ``state_dict`` records the layout, and a mid-epoch state refuses
another one (``LoaderLayoutError``); at an epoch boundary (``batches == 0``) either may change.

Every stream yields the same number of full-size batches (the maximum over streams): the last
batches of shorter streams are padded with rows whose label is ``PAD_LABEL`` (the batch contract
of ``terarec.batch``). Nothing is dropped and no rank waits in a collective for a batch that never
comes; the trainer gives padded rows zero weight.

Workers (``data.num_workers = W``) are threads, not processes: the rank's ``W`` streams each
prepare their windows in their own background threads (parquet decoding and the numpy/torch window
work release the GIL), and the rank's batch ``k`` is stream ``k % W``'s, the order torch's DataLoader
gave with ``W`` worker processes. Processes paid for pickling every batch to the main process (~0.8
us/row, more than the loader's own work); threads hand batches over by reference.

Batches carry int32 KJT ids and lengths when every table has fewer than 2**31 rows (see
``terarec.data_pipeline.window``), and are pinned (page-locked) when CUDA is present, so the train
pipeline's ``non_blocking`` host-to-device copies overlap compute.

Reading starts before batches are asked for (``terarec.data_pipeline.read_ahead``): ``prefetch``
opens the current position's windows during the trainer's set-up, and a loader told how many
batches will be read (``will_read``) opens the next epoch while the current one yields its last
window, so training waits for a window at no epoch start.

Memory: each of a rank's ``W`` streams holds the window being yielded plus ``PREFETCH_WINDOWS``
prepared ones (at an epoch's end: its last window and the next epoch's first ones), and, until the
batch that spans two windows is joined, the window before (its tail is a view of it): a rank holds
up to ``(2 + PREFETCH_WINDOWS) * W`` windows of about ``shuffle_buffer`` rows. With CUDA,
batches are pinned one at a time as they are handed out (a thread pins batch ``k + 1`` while ``k``
is yielded): 2 pinned batches per rank, not a copy of each window.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchrec.datasets.utils import Batch

from terarec.batch import PAD_LABEL
from terarec.data_pipeline.manifest import footer_metadata
from terarec.data_pipeline.read_ahead import EpochBatches, WindowPrefetch, pin_batches
from terarec.data_pipeline.schema import DatasetError, DatasetSchema, dataset_files
from terarec.data_pipeline.window import KeyLayout, Piece, Window, assemble, id_dtype_for
from terarec.errors import UserError

__all__ = ["PAD_LABEL", "BatchLoader", "LoaderLayoutError", "LoaderSpec", "Unit"]


class LoaderLayoutError(UserError, ValueError):
    """A mid-epoch loader state saved under another stream layout (world size x workers)."""


@dataclass(frozen=True)
class LoaderSpec:
    """What to read and how; identical on every rank."""

    directory: str
    split: str
    batch_size: int
    # feature -> its embedding table's num_embeddings (terarec.embeddings.tables decides them): the
    # loader reduces raw ids modulo this size, the id -> row policy the tables define
    table_sizes: dict[str, int]
    shuffle_buffer: int = 16384  # 0: no shuffling, units in file order
    seed: int = 0
    dense_fill: float = 0.0
    dense_transform: str = "log1p"
    max_history: int = 50
    # the part of the split to read, as fractions of its rows in file (= time) order: rows
    # [round(N * lo), round(N * hi)). A validation split carved from train is (1 - f, 1) and the
    # train that remains (0, 1 - f): complementary by construction, and the same at every world size
    # because it is cut from parquet metadata before units are dealt to ranks
    rows: tuple[float, float] = (0.0, 1.0)
    # table feature -> its frequent-id vocabulary (data_pipeline.id_counts.Vocabulary, embeddings.min_count):
    # those tables map ids by ``vocabulary.rows(ids, size)`` instead of the modulo
    vocabularies: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unit:
    file: str
    row_group: int
    num_rows: int
    start: int = 0  # first row inside the row group (row groups are split when there are few)


# one prepared window: (head completing the previous batch, full batches, tail starting the next)
_Cut = tuple[Piece | None, list[Batch], Piece | None]

_TORCH_IDS = {np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}
MIN_UNITS_PER_STREAM = 16
MAX_OPEN_FILES = 4  # parquet readers a prefetch thread keeps open
_OPEN_FILES = threading.local()


def split_units(units: list[Unit], streams: int) -> list[Unit]:
    """Cut row groups into slices when there are fewer than 16 units per stream, so that ranks
    get nearly equal rows (and little padding) even on a dataset of a few row groups."""
    pieces = math.ceil(MIN_UNITS_PER_STREAM * streams / max(len(units), 1))
    if pieces <= 1 or streams == 1:
        return units
    out: list[Unit] = []
    for unit in units:
        bounds = np.linspace(0, unit.num_rows, pieces + 1).astype(int)
        out += [
            Unit(unit.file, unit.row_group, int(b - a), unit.start + int(a))
            for a, b in zip(bounds[:-1], bounds[1:])
            if b > a
        ]
    return out


def list_units(directory: str, split: str, rows: tuple[float, float] = (0.0, 1.0)) -> list[Unit]:
    """The split's ``(file, row group)`` units in file order, clipped to the ``rows`` fraction range."""
    units: list[Unit] = []
    for path in dataset_files(directory, split):
        meta = footer_metadata(path)  # a damaged part: one line naming it, even without a manifest
        units += [Unit(str(path), g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return clip_units(units, rows) if rows != (0.0, 1.0) else units


def row_bounds(total: int, rows: tuple[float, float]) -> tuple[int, int]:
    """``rows`` fractions -> ``[first, end)`` row positions of a split of ``total`` rows."""
    return round(total * rows[0]), round(total * rows[1])


def clip_units(units: list[Unit], rows: tuple[float, float]) -> list[Unit]:
    """The parts of ``units`` (consecutive rows in file order) that fall in the ``rows`` fraction range."""
    first, end = row_bounds(sum(u.num_rows for u in units), rows)
    out, position = [], 0
    for unit in units:
        lo, hi = max(first - position, 0), min(end - position, unit.num_rows)
        if hi > lo:
            out.append(Unit(unit.file, unit.row_group, hi - lo, unit.start + lo))
        position += unit.num_rows
    return out


def _key_layout(schema: DatasetSchema, spec: LoaderSpec, list_columns: set[str]) -> KeyLayout:
    cols = _feature_columns(schema, spec)
    single = [(name, table) for name, table, _ in cols if name not in list_columns]
    jagged = [(name, table, cap) for name, table, cap in cols if name in list_columns]
    single_sizes = [spec.table_sizes[table] for _, table in single]
    single_names, jagged_names = [n for n, _ in single], [n for n, _, _ in jagged]
    source = [
        (True, single_names.index(n)) if n in single_names else (False, jagged_names.index(n)) for n, _, _ in cols
    ]
    jagged_sizes = [spec.table_sizes[t] for _, t, _ in jagged]
    return KeyLayout(
        [n for n, _, _ in cols],
        single_names,
        single_sizes,
        jagged_names,
        jagged_sizes,
        [c for _, _, c in jagged],
        source,
        list(schema.dense),
        schema.label,
        id_dtype_for(single_sizes + jagged_sizes),
        [spec.vocabularies.get(t) for _, t in single],
        [spec.vocabularies.get(t) for _, t, _ in jagged],
    )


def _parquet_file(path: str) -> pq.ParquetFile:
    """This thread's reader of ``path``, kept for the next row groups: opening one parses the footer
    again (~2 ms for 40 columns x 8 row groups, ~15 ns a row of a 131k-row group). Per thread, as
    readers are not meant to be shared; the few most recent files only."""
    files: OrderedDict[str, pq.ParquetFile] | None = getattr(_OPEN_FILES, "files", None)
    if files is None:
        files = _OPEN_FILES.files = OrderedDict()
    reader = files.pop(path, None) or pq.ParquetFile(path, memory_map=True)
    files[path] = reader
    while len(files) > MAX_OPEN_FILES:
        files.popitem(last=False)
    return reader


def _read_row_group(unit: Unit, columns: list[str]) -> pa.Table:
    """One row group; damage the footer checks cannot see (a corrupt page) is one line naming the file."""
    try:
        return _parquet_file(unit.file).read_row_group(unit.row_group, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{unit.file} is damaged: row group {unit.row_group} is unreadable ({err})") from None


def _list_columns(path: str) -> set[str]:
    """Columns stored as lists (multi-hot and sequence features), from a parquet file's schema."""
    arrow = pq.ParquetFile(path).schema_arrow
    return {f.name for f in arrow if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)}


def _feature_columns(schema: DatasetSchema, spec: LoaderSpec) -> list[tuple[str, str, int | None]]:
    """(column, table feature, history cap) for every KJT key, in KJT key order."""
    cols: list[tuple[str, str, int | None]] = [(f.name, f.name, None) for f in schema.sparse]
    cols += [(s.name, s.table, min(s.max_length, spec.max_history)) for s in schema.sequence]
    return cols


class ParquetBatchStream:
    """One epoch of one rank's batches; its ``workers`` streams split the rank's units further."""

    def __init__(self, spec: LoaderSpec, schema: DatasetSchema, rank: int, world_size: int, workers: int) -> None:
        self.spec, self.schema = spec, schema
        self.rank, self.world_size, self.workers = rank, world_size, max(workers, 1)
        self.units = split_units(list_units(spec.directory, spec.split, spec.rows), world_size * self.workers)
        missing = [f for _, f, _ in _feature_columns(schema, spec) if f not in spec.table_sizes]
        if missing:
            raise DatasetError(f"no embedding table size for feature '{missing[0]}'")
        self.layout = _key_layout(schema, spec, _list_columns(self.units[0].file) if self.units else set())
        self.keys = self.layout.keys
        self._ones: torch.Tensor | None = None  # shared lengths of full single-id batches
        # batches in page-locked memory (set by BatchLoader when CUDA is present): the trainer's
        # host-to-device copies (TrainPipelineSparseDist, non_blocking=True) then overlap compute
        self.pin = False
        self.columns = [schema.label, *schema.dense, *self.keys]

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
        stream_rows = [sum(u.num_rows for u in self.stream_units(s, epoch)) for s in streams]
        return max(math.ceil(r / self.spec.batch_size) for r in stream_rows)

    def _windows(self, units: list[Unit]) -> list[list[Unit]]:
        windows, current, window_rows = [], [], 0
        for unit in units:
            current.append(unit)
            window_rows += unit.num_rows
            if window_rows >= max(self.spec.shuffle_buffer, 1):
                windows.append(current)
                current, window_rows = [], 0
        return windows + ([current] if current else [])

    def _read(self, units: list[Unit]) -> pa.Table:
        groups: dict[tuple[str, int], pa.Table] = {}  # each row group is decoded once per window
        for u in units:
            if (u.file, u.row_group) not in groups:
                groups[(u.file, u.row_group)] = _read_row_group(u, self.columns)
        return pa.concat_tables([groups[(u.file, u.row_group)].slice(u.start, u.num_rows) for u in units])

    # -- iteration ------------------------------------------------------------------------
    def open(self, epoch: int, start: int) -> EpochBatches:
        """The rank's batches of ``epoch`` from batch ``start`` on: batch ``k`` is worker stream
        ``k % workers``'s. Each stream's first windows start being prepared now, by its own threads."""
        workers, streams = self.workers, []
        per_stream = self.batches_per_stream(epoch)  # every stream's count: the shorter ones are padded to it
        for w in range(workers):
            stream = self.rank * workers + w
            skip = max(0, -(-(start - w) // workers))  # worker w's batches are the rank's w, w + W, ...
            row = skip * self.spec.batch_size  # stream rows already consumed (a batch boundary)
            plan, plan_end = self._plan(stream, epoch, row)
            windows = WindowPrefetch(plan, partial(self._prepare, stream, epoch, row))
            streams.append((windows, self._stream_batches(windows, per_stream, plan_end)))
        pin = partial(pin_batches, pin_batch=pin_batch) if self.pin else None
        return EpochBatches(epoch, start, per_stream * workers, streams, pin)

    def _plan(self, stream: int, epoch: int, row: int) -> tuple[list[tuple[int, list[Unit], int]], int]:
        """(window index, units, first stream row) of the stream's windows that hold rows at or after
        ``row`` (those wholly before a resume point are not read), and the stream row they end at."""
        plan, window_start = [], 0
        for w, units in enumerate(self._windows(self.stream_units(stream, epoch))):
            window_rows = sum(u.num_rows for u in units)
            if window_start + window_rows > row:
                plan.append((w, units, window_start))
            window_start += window_rows
        return plan, window_start if plan else row

    def _stream_batches(self, windows: WindowPrefetch, count: int, plan_end: int) -> Generator[Batch, None, None]:
        """One stream's batches: its windows cut at batch boundaries, a batch that spans windows joined,
        the last one padded, and all-padding batches up to ``count`` (the longest stream's)."""
        bsz = self.spec.batch_size
        carry: list[Piece] = []  # a batch that spans windows
        for head, batches, tail in windows:
            if head is not None:  # completes the batch that the previous window started
                carry.append(head)
                if sum(p.num_rows for p in carry) == bsz:
                    yield self._assemble(carry)
                    carry = []
            yield from batches
            if tail is not None:
                carry = [tail]
        yielded = plan_end // bsz
        if carry:
            yield self._assemble(carry)
            yielded += 1
        for _ in range(count - yielded):
            yield self._assemble([])

    def _prepare(self, stream: int, epoch: int, row: int, w: int, units: list[Unit], start: int) -> _Cut:
        """Window ``w`` of the stream (stream rows from ``start``), read, permuted and cut into batches
        from the resume row ``row`` on; runs in a prefetch thread (parquet decoding and the numpy/torch
        work release the GIL)."""
        table = self._read(units)
        perm = None
        if self.spec.shuffle_buffer > 0:
            perm = np.random.default_rng([self.spec.seed, epoch, stream, w]).permutation(table.num_rows)
        grid = (-(start % self.spec.batch_size), self.spec.batch_size)  # stream batch boundaries
        window = Window(table, self.layout, (self.spec.dense_fill, self.spec.dense_transform), perm, grid)
        return self._cut(window, start, row)

    def _cut(self, window: Window, start: int, row: int) -> _Cut:
        """Cut a window that starts at stream row ``start`` at the stream's batch boundaries
        (multiples of the batch size), from the resume row ``row`` on: the head that completes the
        previous window's last batch, the full batches inside, and the tail that starts the next."""
        bsz = self.spec.batch_size
        first = max(row - start, 0)
        boundary = min(-(-(start + first) // bsz) * bsz - start, window.num_rows)  # first boundary at/after `first`
        head = Piece(window, first, boundary) if boundary > first else None
        batches, offset = [], boundary
        while offset + bsz <= window.num_rows:
            batches.append(self._assemble([Piece(window, offset, offset + bsz)]))
            offset += bsz
        tail = Piece(window, offset, window.num_rows) if offset < window.num_rows else None
        return head, batches, tail

    def _assemble(self, pieces: list[Piece]) -> Batch:
        """Pieces -> one full-size batch (padded); full single-id batches share one lengths tensor."""
        bsz, keys = self.spec.batch_size, len(self.keys)
        if self._ones is None or len(self._ones) != keys * bsz:
            self._ones = torch.ones(keys * bsz, dtype=_TORCH_IDS[self.layout.id_dtype])
        return assemble(pieces, bsz, self.layout, self._ones)


class BatchLoader:
    """Iterable over one epoch of ``Batch``es per ``iter()``, with exact ``state_dict`` resume."""

    def __init__(
        self,
        spec: LoaderSpec,
        schema: DatasetSchema,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        """``pin_memory``: batches in page-locked memory (None: when CUDA is available)."""
        self.stream = ParquetBatchStream(spec, schema, rank, world_size, num_workers)
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.stream.pin = self.pin_memory  # pinned by the loader's own thread, off the training thread
        self.epoch, self.batches = 0, 0
        self._opened: EpochBatches | None = None  # batches opened ahead of iter() (prefetch, will_read)
        self._reads_left: int | None = None  # batches the caller will still read (will_read); None: not said
        self._counted_epoch = 0  # the epoch len() counts: the last one iterated (epochs may differ by padding)

    def __len__(self) -> int:
        """Batches in one full epoch (equal on every rank)."""
        return self.stream.batches_per_stream(self._counted_epoch) * self.stream.workers

    def prefetch(self) -> None:
        """Start preparing the batches at the current position now, in background threads, so that the
        next ``iter()`` does not wait for its first windows (the trainer calls this before it shards the
        model). A position moved afterwards (``load_state_dict``) drops them."""
        if self._opened is None or self._opened.position != (self.epoch, self.batches):
            self.close()
            self._opened = self.stream.open(self.epoch, self.batches)

    def will_read(self, batches: int) -> None:
        """The caller will read ``batches`` more batches from the current position. When they run past
        this epoch, the next epoch's first windows are prepared while this one yields its last window,
        so that the next ``iter()`` does not wait either."""
        self._reads_left = batches

    def close(self) -> None:
        """Drop the batches opened ahead and stop their threads (a run that stops early at an epoch's
        end leaves the next epoch's first windows prepared)."""
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def __iter__(self) -> Iterator[Batch]:
        self.prefetch()
        batches, self._opened, self._counted_epoch = self._opened, None, self.epoch
        assert batches is not None
        continues = self._reads_left is not None and self._reads_left > len(self) - self.batches
        try:
            for batch in batches:
                self.batches += 1
                self._reads_left = None if self._reads_left is None else self._reads_left - 1
                if continues and self._opened is None and batches.last_windows_handed_out:
                    self._opened = self.stream.open(self.epoch + 1, 0)
                yield batch
        finally:
            batches.close()
        self.epoch, self.batches = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """The position ``(epoch, batches)`` and the stream layout it is a position in."""
        return {
            "epoch": self.epoch,
            "batches": self.batches,
            "world_size": self.stream.world_size,
            "workers": self.stream.workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state``'s position. Mid-epoch, the rows before it were dealt to
        ``world_size * workers`` streams: under another layout the rest of the epoch would skip some
        rows and repeat others, so that is refused. States without a layout (older checkpoints) are
        taken as they are."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        saved = (state.get("world_size"), state.get("workers"))
        here = (self.stream.world_size, self.stream.workers)
        if batches and any(s is not None and int(s) != h for s, h in zip(saved, here)):
            raise LoaderLayoutError(
                f"resume: the checkpoint stopped mid-epoch (epoch {epoch}, batch {batches}) with the loader "
                f"laid out as {_layout(*saved)}, this start has {_layout(*here)}: the epoch's remaining rows "
                "would be dealt differently (rows skipped or repeated). Resume with the checkpoint's world size "
                "and data.num_workers; they may change at an epoch boundary"
            )
        self.epoch, self.batches = epoch, batches
        if self._opened is not None and self._opened.position != (epoch, batches):
            self.close()  # prepared for the position before: free its windows now


def _layout(world_size: int | None, workers: int | None) -> str:
    """``world size 2 x data.num_workers 1`` (unknown parts of an older state: ``?``)."""
    world, streams = ("?" if v is None else v for v in (world_size, workers))
    return f"world size {world} x data.num_workers {streams}"


def pin_batch(batch: Batch) -> Batch:
    """A copy of ``batch`` in page-locked host memory (CUDA copies from it can be asynchronous)."""
    return batch.pin_memory()
