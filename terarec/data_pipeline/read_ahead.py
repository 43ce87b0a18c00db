"""Work the loader starts before its batches are asked for: windows prepared by background threads,
and an epoch's batches opened ahead of their first ``next()``.

A Python generator runs nothing until its first ``next()``, so a loader made of generators starts
reading only when training asks for the first batch, and training waits for a whole window (decode,
permute, cut: ~0.1 s at 131k rows, ~1 s at the MLPerf 1M) at every epoch start. Here the first
windows are submitted when an epoch is *opened*: ``BatchLoader.prefetch`` opens it during set-up
(the trainer calls it before sharding the model), and a loader told how many batches will be read
(``BatchLoader.will_read``) opens the next epoch while the current one yields its last window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from torchrec.datasets.utils import Batch

PREFETCH_WINDOWS = 2  # windows prepared ahead per stream, in parallel threads (see BatchLoader's Memory)


class WindowPrefetch:
    """A stream's windows, in plan order, prepared by ``PREFETCH_WINDOWS`` background threads. The
    first ones are submitted on construction; each window handed out submits the next, so a stream
    holds the window being yielded plus ``PREFETCH_WINDOWS`` prepared (or being prepared) ones."""

    def __init__(self, plan: list[tuple[Any, ...]], prepare: Callable[..., Any]) -> None:
        self._plan, self._prepare = plan, prepare
        self._pool = ThreadPoolExecutor(max_workers=PREFETCH_WINDOWS, thread_name_prefix="terarec-window")
        self._pending: deque[Future[Any]] = deque(self._pool.submit(prepare, *item) for item in plan[:PREFETCH_WINDOWS])
        self._submitted = len(self._pending)

    @property
    def last_handed_out(self) -> bool:
        """The stream's last window has been handed out: its threads are idle until the epoch ends."""
        return not self._pending

    def __iter__(self) -> Iterator[Any]:
        while self._pending:
            window = self._pending.popleft().result()
            if self._submitted < len(self._plan):
                self._pending.append(self._pool.submit(self._prepare, *self._plan[self._submitted]))
                self._submitted += 1
            yield window

    def close(self) -> None:
        """Cancel the windows not started, wait for those in flight (their threads end with them)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class EpochBatches(Iterator[Batch]):
    """A rank's batches of ``epoch`` from batch ``start`` on (the loader's position when opened):
    batch ``k`` is worker stream ``k % W``'s. Its streams' first windows are being prepared from
    construction on; ``close`` (also at the end of the epoch) stops their threads."""

    def __init__(
        self,
        epoch: int,
        start: int,
        end: int,
        streams: list[tuple[WindowPrefetch, Generator[Batch, None, None]]],
        pin: Callable[[Iterator[Batch]], Generator[Batch, None, None]] | None,
    ) -> None:
        self.position = (epoch, start)
        self._windows = [windows for windows, _ in streams]
        self._streams = stream_batches = [batches for _, batches in streams]
        workers = len(streams)
        # reads a local, not ``self``: a reference from ``self._batches`` back to ``self`` would be a cycle,
        # and an instance dropped unclosed would hold its windows and threads until a cyclic collection
        ordered = (next(stream_batches[k % workers]) for k in range(start, end))
        self._batches = pin(ordered) if pin is not None else ordered

    @property
    def last_windows_handed_out(self) -> bool:
        """Every stream yields from its last window: the next epoch may start preparing its first ones
        (a stream then holds that window and the next epoch's ``PREFETCH_WINDOWS``, no more than mid-epoch)."""
        return all(windows.last_handed_out for windows in self._windows)

    def __next__(self) -> Batch:
        try:
            return next(self._batches)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        """Stop early (or at the end): each stream waits for its windows in flight, then ends."""
        for generator in (self._batches, *self._streams):
            generator.close()
        for windows in self._windows:
            windows.close()


def pin_batches(batches: Iterator[Batch], pin_batch: Callable[[Batch], Batch]) -> Generator[Batch, None, None]:
    """``batches`` in page-locked memory, each pinned by one background thread while the one
    before it is yielded: the training thread does not copy, and a rank holds 2 pinned batches
    (pinning whole windows in the prefetch threads held a pinned copy of up to 3W windows)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="terarec-pin") as pinner:
        pending = None
        for batch in batches:
            ahead = pinner.submit(pin_batch, batch)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()
