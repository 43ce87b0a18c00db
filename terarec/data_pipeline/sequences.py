"""Event logs -> BST sequence rows: each event is a target with its user's earlier history.

Shared by ``prepare movielens`` and ``prepare taobao``. Input: events of complete users, sorted
by ``(user, time)``. For event ``i`` of a user, the history is that user's previous
``max_history`` events (oldest first): their item ids, category ids and time-gap buckets
``bucket(t_i - t_j)``; the target's own time gap is 0, as BST's ``pos(v_t) = t(v_t) - t(v_t)``.

Ids are re-indexed to ``1..n`` (0 = missing) so tables are exactly vocabulary-sized. The split is
by time: events at or after the cutoff (the last ``eval_fraction`` of events) go to eval; with a
``valid_fraction``, the events in the time window just before it (about that fraction of events) go to
valid. Their histories still include the earlier events, as they would online.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from terarec.data_pipeline.manifest import PartFile
from terarec.data_pipeline.parquet_io import PartWriter
from terarec.data_pipeline.schema import DatasetError, DatasetSchema, SequenceFeature, SparseFeature
from terarec.data_pipeline.splits import check_eval_fraction, check_valid_fraction

TIME_GAP_BUCKETS = 64  # bucket 0: the target itself; 1 + floor(log2(1 + gap in minutes)) after
HISTORY_PARTS = ("item", "category", "time_gap")
HISTORY_PREFIX = "hist_"
ROWS_PER_FILE = 1_000_000
# hourly histogram bounds for the time cutoff: 1970 .. 2050 (out-of-range times clip to the ends)
_HOUR0, _HOURS = 0, 80 * 8784


def time_gap_bucket(gap_seconds: np.ndarray) -> np.ndarray:
    """Seconds between target and history event -> bucket in ``[1, 63]`` (log2 of minutes)."""
    minutes = np.maximum(gap_seconds, 0) / 60.0
    buckets: np.ndarray = np.minimum(1 + np.floor(np.log2(1.0 + minutes)), TIME_GAP_BUCKETS - 1).astype(np.uint32)
    return buckets


def check_max_history(max_history: int) -> None:
    if max_history < 1:
        raise DatasetError(f"--max-history must be >= 1, got {max_history}")


@dataclass(frozen=True)
class SequenceOptions:
    """What a sequence preparation (``prepare movielens|taobao``) is asked for, checked on creation."""

    max_history: int = 50  # history items kept per row (the most recent)
    eval_fraction: float = 0.2  # the last fraction of events, in time, goes to eval
    command: str = ""  # the command line, recorded in schema.json
    progress: bool = False  # a progress bar on stderr
    overwrite: bool = False  # rebuild a dataset made differently (beside it, swapped in when complete)
    valid_fraction: float = 0.0  # the fraction of events, in time, just before eval goes to valid (0: none)

    def __post_init__(self) -> None:
        check_max_history(self.max_history)
        check_eval_fraction(self.eval_fraction)
        check_valid_fraction(self.valid_fraction, self.eval_fraction)

    def manifest_options(self) -> dict[str, Any]:
        """The options that change the output, keyed by their CLI flag (the manifest's record). The valid
        share is recorded only when used, so datasets built before the option existed keep their identity."""
        valid = {"--valid-fraction": float(self.valid_fraction)} if self.valid_fraction > 0 else {}
        return {"--max-history": self.max_history, "--eval-fraction": float(self.eval_fraction), **valid}


class TimeCutoff:
    """The eval cutoff time from an hourly histogram (bounded memory whatever the event count)."""

    def __init__(self) -> None:
        self.counts = np.zeros(_HOURS, np.int64)

    def add(self, times: np.ndarray) -> None:
        hours = np.clip(times // 3600 - _HOUR0, 0, _HOURS - 1)
        self.counts += np.bincount(hours, minlength=_HOURS)

    def cutoff(self, eval_fraction: float) -> int:
        """The first hour boundary after which at most ``eval_fraction`` of the events fall."""
        check_eval_fraction(eval_fraction)
        total = int(self.counts.sum())
        if total == 0:
            raise DatasetError("no events in the input")
        after = np.cumsum(self.counts[::-1])[::-1]  # events at or after each hour
        hour = int(np.argmax(after <= eval_fraction * total))
        if eval_fraction == 0.0 or after[hour] > eval_fraction * total:
            return np.iinfo(np.int64).max
        return int((hour + _HOUR0) * 3600)

    def cutoffs(self, options: SequenceOptions) -> tuple[int, int | None]:
        """(eval cutoff, valid cutoff or None without a valid split): valid is ``[valid, eval)``, the
        hours before eval holding about ``valid_fraction`` of the events (at most eval + valid after it)."""
        eval_cut = self.cutoff(options.eval_fraction)
        if options.valid_fraction == 0.0:
            return eval_cut, None
        return eval_cut, min(self.cutoff(options.eval_fraction + options.valid_fraction), eval_cut)


@dataclass
class Events:
    """One block of complete users' events, sorted by (user, time). Ids already re-indexed."""

    user: np.ndarray  # int64
    item: np.ndarray
    category: np.ndarray
    time: np.ndarray  # unix seconds
    label: np.ndarray  # int8
    context: dict[str, np.ndarray]  # other sparse features (uint32 ids), one value per event
    dense: dict[str, np.ndarray]  # float32, NaN = missing
    history_eligible: np.ndarray | None = None  # bool: which events may appear in later histories


def history_index(
    user: np.ndarray, max_history: int, eligible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For events sorted by user: (offsets ``E + 1``, gather indices) of each event's history: the
    user's last ``max_history`` earlier events that are ``eligible`` (default: all of them)."""
    index = np.arange(len(user))
    eligible = np.ones(len(user), bool) if eligible is None else eligible
    pool = np.flatnonzero(eligible)  # events that may appear in a history, in order
    before = np.cumsum(eligible) - eligible  # eligible events strictly before each event
    first = np.r_[True, user[1:] != user[:-1]]
    user_first = np.maximum.accumulate(np.where(first, index, 0))
    start = np.maximum(before[user_first], before - max_history)
    lengths = before - start
    offsets = np.zeros(len(user) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gather = pool[np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])]
    return offsets, gather


def sequence_table(events: Events, max_history: int) -> pa.Table:
    """Events -> rows: label, dense, user, item, category, time_gap (0), context, histories, time."""
    offsets, gather = history_index(events.user, max_history, events.history_eligible)
    owner = np.repeat(np.arange(len(events.user)), np.diff(offsets))
    gaps = time_gap_bucket(events.time[owner] - events.time[gather])

    def as_list(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.uint32()))

    columns: dict[str, pa.Array] = {"label": pa.array(events.label, pa.int8())}
    for name, values in events.dense.items():
        columns[name] = pa.array(values, pa.float32(), mask=np.isnan(values))
    columns.update(
        {
            "user": pa.array(events.user, pa.uint32()),
            "item": pa.array(events.item, pa.uint32()),
            "category": pa.array(events.category, pa.uint32()),
            "time_gap": pa.array(np.zeros(len(events.user)), pa.uint32()),
        }
    )
    columns.update({name: pa.array(values, pa.uint32()) for name, values in events.context.items()})
    columns.update(
        {
            "hist_item": as_list(events.item[gather]),
            "hist_category": as_list(events.category[gather]),
            "hist_time_gap": as_list(gaps),
            "timestamp": pa.array(events.time, pa.int64()),
        }
    )
    return pa.table(columns)


class SequenceDatasetWriter:
    """Splits blocks of events by the time cutoffs and writes ``train/``, ``valid/`` (with a
    ``valid_cutoff``: events in ``[valid_cutoff, cutoff)``) and ``eval/`` parts."""

    def __init__(self, output: Path, cutoff: int, max_history: int, valid_cutoff: int | None = None) -> None:
        check_max_history(max_history)
        self.output, self.cutoff, self.max_history = output, cutoff, max_history
        self.valid_cutoff = valid_cutoff
        self.writers: dict[str, PartWriter] = {}
        splits = ("train", "eval") if valid_cutoff is None else ("train", "valid", "eval")
        self.positives = dict.fromkeys(splits, 0)

    def write(self, events: Events) -> None:
        table = sequence_table(events, self.max_history)
        is_eval = events.time >= self.cutoff
        is_valid = ~is_eval & (events.time >= (self.cutoff if self.valid_cutoff is None else self.valid_cutoff))
        for split, mask in (("train", ~is_eval & ~is_valid), ("valid", is_valid), ("eval", is_eval)):
            if not mask.any():
                continue
            part = table.filter(pa.array(mask)).sort_by("timestamp")  # time order inside the block
            if split not in self.writers:
                self.writers[split] = PartWriter(self.output / split, part.schema, ROWS_PER_FILE)
            self.writers[split].write(part)
            self.positives[split] += int(events.label[mask].sum())

    @property
    def parts(self) -> list[PartFile]:
        """The closed parts (for the manifest), once ``finish`` has run."""
        return [part for writer in self.writers.values() for part in writer.parts]

    def finish(
        self,
        vocab: dict[str, int],
        dense: Iterable[str],
        context: Iterable[str],
        source: str,
        command: str,
        label_definition: str,
    ) -> DatasetSchema:
        # train / valid / eval in time order, whichever block wrote first; a split without rows is absent
        rows: dict[str, int] = {
            split: self.writers[split].rows_total for split in ("train", "valid", "eval") if split in self.writers
        }
        for writer in self.writers.values():
            writer.close()
        if "train" not in rows:
            raise DatasetError("every event fell into the eval or valid split: lower --eval-fraction/--valid-fraction")
        sparse = [
            SparseFeature("user", vocab["user"]),
            SparseFeature("item", vocab["item"]),
            SparseFeature("category", vocab["category"]),
            SparseFeature("time_gap", TIME_GAP_BUCKETS),
        ]
        sparse += [SparseFeature(name, vocab[name]) for name in context]
        sequence = [SequenceFeature(HISTORY_PREFIX + part, part, self.max_history) for part in HISTORY_PARTS]
        schema = DatasetSchema(
            dense=list(dense),
            sparse=sparse,
            sequence=sequence,
            split_rows=rows,
            source=source,
            command=command,
            extra={
                "label": label_definition,
                "positives": self.positives,
                "group_key": "user",
                "eval_cutoff_unix": self.cutoff if self.cutoff < 2**62 else None,
                **({"valid_cutoff_unix": self.valid_cutoff} if self.valid_cutoff is not None else {}),
            },
        )
        schema.save(self.output)
        return schema


def reindex(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Raw ids -> ``1..n`` in order of the sorted unique raw ids; returns (ids, n + 1)."""
    unique, inverse = np.unique(values, return_inverse=True)
    return (inverse + 1).astype(np.int64), len(unique) + 1
