"""Loader throughput (rows/s to KJT batches) vs raw pyarrow ``iter_batches`` on the same files.

    .venv/bin/python benchmarks/loader_bench.py [--rows 2000000] [--batch-size 4096]

Writes a synthetic Criteo-1TB-shaped dataset (unless --data is given), then reads the train split
(a) with ``pyarrow.parquet.ParquetFile.iter_batches`` (decode only) and (b) with terarec's loader
(decode + shuffle window + modulo hashing + log1p + KJT). Each rows/s figure is the best of
``--repeats`` interleaved rounds (a shared machine's noise only ever slows a round down); the
process CPU time per row, the median over rounds, is printed beside it, as it moves less with
neighbours' load. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def loader_rows(data: Path, schema: DatasetSchema, batch_size: int, shuffle: int) -> int:
    sizes = table_sizes(schema, max_rows=1_000_000)
    loader = BatchLoader(LoaderSpec(str(data), "train", batch_size, sizes, shuffle_buffer=shuffle), schema)
    return sum(int(real_rows(batch.labels).sum()) for batch in loader)


def timed(read: Callable[[], int]) -> tuple[float, float]:
    """(rows/s, process CPU microseconds per row) of one full read."""
    wall, cpu = time.perf_counter(), time.process_time()
    rows = read()
    return rows / (time.perf_counter() - wall), (time.process_time() - cpu) * 1e6 / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--shuffle-buffer", type=int, default=131072)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best of each is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp)
        if args.data is None:
            write_synthetic(SynthSpec(rows=args.rows, eval_fraction=0.0), data, progress=False)
        schema = DatasetSchema.load(data)
        files = dataset_files(data, "train")
        pyarrow_rows(files, args.batch_size)  # warm the page cache
        reads = {
            "pyarrow": lambda: pyarrow_rows(files, args.batch_size),
            "loader": lambda: loader_rows(data, schema, args.batch_size, args.shuffle_buffer),
            "loader_unshuffled": lambda: loader_rows(data, schema, args.batch_size, 0),
        }
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in reads}
        for _ in range(args.repeats):  # interleaved: a shared machine's noise hits all three
            for name, read in reads.items():
                rounds[name].append(timed(read))
    best = {name: max(r for r, _ in results) for name, results in rounds.items()}
    cpu = {name: statistics.median(c for _, c in results) for name, results in rounds.items()}
    print(
        f"pyarrow iter_batches: {best['pyarrow']:,.0f} rows/s; loader: {best['loader']:,.0f} rows/s shuffled "
        f"(window {args.shuffle_buffer:,} rows), {best['loader_unshuffled']:,.0f} unshuffled"
    )
    print("CPU us/row (median): " + ", ".join(f"{name} {c:.3f}" for name, c in cpu.items()))
    print(
        json.dumps(
            {
                "loader_rows_per_s": round(best["loader"]),
                "loader_unshuffled_rows_per_s": round(best["loader_unshuffled"]),
                "pyarrow_rows_per_s": round(best["pyarrow"]),
                "ratio": round(best["loader"] / best["pyarrow"], 3),
                "ratio_unshuffled": round(best["loader_unshuffled"] / best["pyarrow"], 3),
                "cpu_ratio": round(cpu["pyarrow"] / cpu["loader"], 3),
                "cpu_ratio_unshuffled": round(cpu["pyarrow"] / cpu["loader_unshuffled"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
