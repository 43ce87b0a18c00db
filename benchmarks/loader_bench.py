"""Loader throughput (rows/s to KJT batches) vs raw pyarrow ``iter_batches`` on the same files.

    .venv/bin/python benchmarks/loader_bench.py [--rows 2000000] [--batch-size 4096] [--workers 1 2]

Writes a synthetic Criteo-1TB-shaped dataset (unless --data is given), then reads the train split
(a) with ``pyarrow.parquet.ParquetFile.iter_batches`` (decode only) and (b) with terarec's loader
(decode + shuffle window + modulo hashing + log1p + KJT): shuffled with ``--shuffle-buffer``
windows, with 1M-row windows (the MLPerf recipe), unshuffled, and with ``data.num_workers``
worker streams (``--workers``; threads). Measure workers on >= 16 row groups per stream (``--rows
4194304`` for 2 workers): with fewer, row groups are sliced between streams and each slice decodes
its whole row group. Each rows/s figure is the best of ``--repeats`` interleaved
rounds (a shared machine's noise only ever slows a round down); the CPU time per row of the process
(all its threads), the median over rounds, is printed beside it, as it moves less with
neighbours' load: cores / (CPU us/row) is the rate more cores would reach. Every reader runs once
before the rounds, not counted (the page cache; a process's first windows grow its memory, a cost paid
once per process, not per epoch). ``ratio`` is best over
best; ``ratio_paired_median`` the median over rounds of each round's loader rate over the pyarrow
rate measured just before it, which one lucky or unlucky pass of either side does not move (on a
2-core VM a single pass's rate varies by up to 25%). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import terarec  # noqa: F401  # before pyarrow: sets arrow's allocator options (terarec/__init__.py), as the CLI runs

# isort: split
import pyarrow.parquet as pq

from terarec.batch import real_rows
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.schema import DatasetSchema, dataset_files
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.embeddings.tables import table_sizes


def pyarrow_rows(files: list[Path], batch_size: int) -> int:
    rows = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            rows += batch.num_rows
    return rows


def loader_rows(data: Path, schema: DatasetSchema, batch_size: int, shuffle: int, workers: int = 0) -> int:
    sizes = table_sizes(schema, max_rows=1_000_000)
    spec = LoaderSpec(str(data), "train", batch_size, sizes, shuffle_buffer=shuffle)
    return sum(int(real_rows(batch.labels).sum()) for batch in BatchLoader(spec, schema, num_workers=workers))


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed(read: Callable[[], int]) -> tuple[float, float]:
    """(rows/s, CPU microseconds per row) of one full read."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    rows = read()
    return rows / (time.perf_counter() - wall), (cpu_seconds() - cpu) * 1e6 / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--shuffle-buffer", type=int, default=131072)
    parser.add_argument("--large-window", type=int, default=1 << 20, help="the MLPerf-sized window (0: skip)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="data.num_workers values to measure")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds; the best of each is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp)
        if args.data is None:
            write_synthetic(SynthSpec(rows=args.rows, eval_fraction=0.0), data, progress=False)
        schema = DatasetSchema.load(data)
        files = dataset_files(data, "train")
        reads = {
            "pyarrow": lambda: pyarrow_rows(files, args.batch_size),
            "loader": lambda: loader_rows(data, schema, args.batch_size, args.shuffle_buffer),
            "loader_unshuffled": lambda: loader_rows(data, schema, args.batch_size, 0),
        }
        if args.large_window:
            reads["loader_large_window"] = lambda: loader_rows(data, schema, args.batch_size, args.large_window)
        for n in args.workers:
            reads[f"loader_workers_{n}"] = lambda n=n: loader_rows(
                data, schema, args.batch_size, args.shuffle_buffer, n
            )
        for read in reads.values():  # warm-up, not counted: the page cache, and each reader's first
            read()  # windows, which grow the process's memory (a once-per-process cost, ~0.4 us/row at 1M windows)
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in reads}
        for _ in range(args.repeats):  # interleaved: a shared machine's noise hits them all
            for name, read in reads.items():
                rounds[name].append(timed(read))
    report(rounds, args)


def paired_median(rounds: dict[str, list[tuple[float, float]]], name: str) -> float:
    """Median over rounds of ``name``'s rows/s over pyarrow's in the same round."""
    return round(statistics.median(r / p for (r, _), (p, _) in zip(rounds[name], rounds["pyarrow"])), 3)


def report(rounds: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    best = {name: max(r for r, _ in results) for name, results in rounds.items()}
    median = {name: statistics.median(r for r, _ in results) for name, results in rounds.items()}
    cpu = {name: statistics.median(c for _, c in results) for name, results in rounds.items()}
    for name in rounds:
        print(
            f"{name:>22}: best {best[name]:>12,.0f} rows/s, median {median[name]:>12,.0f}, "
            f"CPU {cpu[name]:.3f} us/row, ratio {best[name] / best['pyarrow']:.3f}"
            + ("" if name == "pyarrow" else f", paired median {paired_median(rounds, name):.3f}")
        )
    result: dict[str, float | int] = {
        "pyarrow_rows_per_s": round(best["pyarrow"]),
        "ratio": round(best["loader"] / best["pyarrow"], 3),
        "ratio_paired_median": paired_median(rounds, "loader"),
        "ratio_unshuffled": round(best["loader_unshuffled"] / best["pyarrow"], 3),
        "cpu_ratio": round(cpu["pyarrow"] / cpu["loader"], 3),
        "window": args.shuffle_buffer,
    }
    if args.large_window:
        result["large_window"] = args.large_window
        result["ratio_large_window"] = round(best["loader_large_window"] / best["pyarrow"], 3)
        result["ratio_large_window_paired_median"] = paired_median(rounds, "loader_large_window")
        result["cpu_ratio_large_window"] = round(cpu["pyarrow"] / cpu["loader_large_window"], 3)
    for name in rounds:
        if name != "pyarrow":
            result[f"{name}_rows_per_s"] = round(best[name])
            result[f"{name}_median_rows_per_s"] = round(median[name])
        result[f"{name}_cpu_us_per_row"] = round(cpu[name], 3)
    for n in args.workers:
        result[f"ratio_workers_{n}"] = round(best[f"loader_workers_{n}"] / best["pyarrow"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
