"""The loader reads ahead of the batches asked for, and that changes no batch: ``prefetch`` prepares
the first windows before the first ``next()``, ``will_read`` prepares the next epoch's while the
current one ends, a moved position drops what was prepared, and no thread outlives ``close``."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from test_loader import _spec, dataset  # noqa: F401  (the fixture)
from torchrec.datasets.utils import Batch

from terarec.data_pipeline.loader import BatchLoader, ParquetBatchStream
from terarec.data_pipeline.read_ahead import PREFETCH_WINDOWS
from terarec.data_pipeline.schema import DatasetSchema

WORKERS = 2


class Prepared:
    """Records ``(epoch, stream, window)`` of every window a prefetch thread starts to prepare."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[tuple[int, int, int]] = []
        self.finished = threading.Condition()
        self.done = 0
        prepare = ParquetBatchStream._prepare

        def recording(stream_: ParquetBatchStream, stream: int, epoch: int, row: int, w: int, *rest: Any) -> Any:
            self.started.append((epoch, stream, w))
            cut = prepare(stream_, stream, epoch, row, w, *rest)
            with self.finished:
                self.done += 1
                self.finished.notify_all()
            return cut

        monkeypatch.setattr(ParquetBatchStream, "_prepare", recording)

    def wait_for(self, count: int) -> bool:
        """Wait (without asking the loader for a batch) until ``count`` windows were prepared."""
        with self.finished:
            return self.finished.wait_for(lambda: self.done >= count, timeout=60)

    def of_epoch(self, epoch: int) -> list[tuple[int, int, int]]:
        return [entry for entry in self.started if entry[0] == epoch]


def _loader(root: Path, **state: int) -> BatchLoader:
    loader = BatchLoader(_spec(root), DatasetSchema.load(root), num_workers=WORKERS)
    if state:
        loader.load_state_dict({"world_size": 1, "workers": WORKERS, **state})
    return loader


def _assert_same(got: list[Batch], want: list[Batch]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.dense_features, b.dense_features)
        assert torch.equal(a.sparse_features.values(), b.sparse_features.values())
        assert torch.equal(a.sparse_features.lengths(), b.sparse_features.lengths())


def test_prefetch_prepares_the_first_windows_before_the_first_batch(
    dataset: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    want = list(_loader(dataset))
    prepared = Prepared(monkeypatch)
    loader = _loader(dataset)
    loader.prefetch()
    loader.prefetch()  # at the same position: kept, not opened twice
    assert prepared.wait_for(PREFETCH_WINDOWS * WORKERS)  # with no batch asked for
    assert sorted(prepared.started) == [(0, s, w) for s in range(WORKERS) for w in range(PREFETCH_WINDOWS)]
    _assert_same(list(loader), want)


def test_a_position_moved_after_prefetch_drops_the_prepared_windows(
    dataset: Path,  # noqa: F811
) -> None:
    threads = threading.active_count()
    loader = _loader(dataset)
    loader.prefetch()
    loader.load_state_dict({"epoch": 0, "batches": 5, "world_size": 1, "workers": WORKERS})
    assert threading.active_count() == threads  # the dropped windows' threads have ended
    _assert_same(list(loader), list(_loader(dataset, epoch=0, batches=5)))


def test_will_read_prepares_the_next_epoch_while_this_one_ends(
    dataset: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    want = [list(_loader(dataset)), list(_loader(dataset, epoch=1, batches=0))]
    threads = threading.active_count()
    prepared = Prepared(monkeypatch)
    loader = _loader(dataset)
    loader.will_read(2 * len(loader))
    first = list(loader)
    epoch_0 = len(prepared.of_epoch(0))
    assert prepared.wait_for(epoch_0 + PREFETCH_WINDOWS * WORKERS)  # before epoch 1 is asked for
    # opened once epoch 0's last windows were handed out: every epoch-0 window had started before
    assert prepared.started[:epoch_0] == prepared.of_epoch(0)
    assert sorted(prepared.of_epoch(1)) == [(1, s, w) for s in range(WORKERS) for w in range(PREFETCH_WINDOWS)]
    second = list(loader)
    _assert_same(first, want[0])
    _assert_same(second, want[1])
    assert not prepared.of_epoch(2) and threading.active_count() == threads  # nothing read past the last batch


def test_without_will_read_nothing_is_read_past_the_epoch(
    dataset: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = threading.active_count()
    prepared = Prepared(monkeypatch)
    list(_loader(dataset))
    assert prepared.started and not prepared.of_epoch(1) and threading.active_count() == threads


def test_close_stops_an_unused_read_ahead(dataset: Path) -> None:  # noqa: F811
    """A run that stops at an epoch's end (early stop, a time budget) leaves the next epoch opened."""
    threads = threading.active_count()
    loader = _loader(dataset)
    loader.will_read(len(loader) + 1)
    list(loader)
    assert threading.active_count() > threads  # the next epoch's windows, in their threads
    loader.close()
    assert threading.active_count() == threads


def test_a_dropped_loader_ends_its_read_ahead_without_a_garbage_collection(dataset: Path) -> None:  # noqa: F811
    """A loader dropped with batches opened ahead (never closed: an exception left the trainer) frees
    them when its last reference goes: no reference cycle keeps the windows and their threads alive
    until the cyclic collector happens to run."""
    loader = _loader(dataset)
    loader.prefetch()
    readers = [t for t in threading.enumerate() if t.name.startswith("terarec-window")]
    assert len(readers) == PREFETCH_WINDOWS * WORKERS
    gc.disable()
    try:
        del loader
        deadline = time.monotonic() + 60
        for thread in readers:  # each ends once its window in flight is done
            thread.join(timeout=max(deadline - time.monotonic(), 0))
        assert not any(thread.is_alive() for thread in readers)
    finally:
        gc.enable()
