"""``prepare criteo`` throughput vs pyarrow.csv parsing alone, its CPU time per row and peak RSS.

    .venv/bin/python benchmarks/prepare_bench.py [--rows 1000000] [--rounds 3] [--input FILE] [--random]

Builds a raw Criteo TSV of ``--rows`` lines in a temp dir: the real 10k Kaggle sample repeated
when ../shared/data is present and not ``--random`` (every vocabulary below 16384: the exact path
of the distinct counts), random Criteo-format lines otherwise (millions of distinct ids: the
HyperLogLog path). Then it measures in fresh processes, one file, one worker, ``--rounds`` interleaved rounds of:
(a) pyarrow.csv streaming parse of the file with the read/parse/convert options of prepare's CSV path
    (all columns as strings, no UTF-8 check; blocks of good rows skip the CSV reader) and nothing else;
(b) ``prepare_file`` (cut into fields + validate + decode + parquet write + distinct counts).
Each run records wall time, process CPU time (user + system, so a busy neighbour inflates wall
time but hardly CPU time) and peak RSS; imports are done before the clock starts. Finally (c) the
peak RSS of (b) on a file 4x larger: bounded memory means it stays close.

``ratio`` (the acceptance figure) is pyarrow's CPU time per row over prepare's (each the best of
the rounds): the share of parse speed prepare reaches on the same cores, robust to neighbours.
``wall_ratio_best`` / ``wall_ratio_median`` are the same from rows/s. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import terarec  # noqa: F401  # sets arrow's allocator options in os.environ, which both children inherit, as the CLI runs

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "criteo_kaggle_10k" / "train_10k.tsv"

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.csv as pacsv
from terarec.data_pipeline.criteo import BLOCK_BYTES, FileJob, prepare_file
from terarec.data_pipeline.criteo_csv import CSV_CONVERT, csv_parse_options, csv_read_options
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
start, cpu_start = time.perf_counter(), time.process_time()
if mode == "pyarrow":
    reader = pacsv.open_csv(pa.OSFile(path), read_options=csv_read_options(BLOCK_BYTES),
        parse_options=csv_parse_options(), convert_options=CSV_CONVERT)
    rows = sum(batch.num_rows for batch in reader)
else:
    Path(out).mkdir(parents=True, exist_ok=True)
    result = prepare_file(FileJob(path, "bench", 1 << 62, out, "fail"))
    rows = sum(result["rows"].values())
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb}))
"""


def write_tsv(path: Path, rows: int, random_lines: bool = False) -> None:
    """``rows`` raw Criteo lines: the real sample repeated, or random lines of the same layout."""
    with path.open("w") as out:
        if SAMPLE.is_file() and not random_lines:
            lines = SAMPLE.read_text().splitlines(keepends=True)
            for start in range(0, rows, len(lines)):
                out.writelines(lines[: min(len(lines), rows - start)])
            return
        rng = np.random.default_rng(0)
        for start in range(0, rows, 10_000):  # vectorised per chunk: a million lines in seconds
            n = min(10_000, rows - start)
            labels = (rng.random(n) < 0.25).astype(int)
            dense = rng.integers(0, 1000, (n, 13))
            sparse = rng.integers(0, 2**32, (n, 26))
            out.writelines(
                f"{y}\t" + "\t".join(map(str, d)) + "\t" + "\t".join(f"{v:08x}" for v in s) + "\n"
                for y, d, s in zip(labels, dense, sparse)
            )


def measure(mode: str, path: Path, out: Path) -> dict[str, Any]:
    """One run in a fresh process: rows, seconds, cpu_seconds, peak_rss_mb."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(out)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Best and median rows/s, best CPU microseconds per row, the largest peak RSS of the rounds."""
    rates = [r["rows"] / r["seconds"] for r in runs]
    return {
        "best_rows_per_s": max(rates),
        "median_rows_per_s": statistics.median(rates),
        "cpu_us_per_row": min(r["cpu_seconds"] / r["rows"] for r in runs) * 1e6,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def run_rounds(small: Path, tmp: Path, rounds: int) -> tuple[dict[str, float], dict[str, float], int]:
    """Interleaved pyarrow / prepare rounds (the order alternates so drift hits both alike)."""
    measure("pyarrow", small, tmp / "warm")  # warm the page cache
    runs: dict[str, list[dict[str, Any]]] = {"pyarrow": [], "prepare": []}
    for i in range(rounds):
        for mode in ("pyarrow", "prepare") if i % 2 == 0 else ("prepare", "pyarrow"):
            runs[mode].append(measure(mode, small, tmp / f"out_{mode}_{i}"))
    return summarise(runs["pyarrow"]), summarise(runs["prepare"]), runs["prepare"][0]["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--input", type=Path, help="an existing raw TSV (plain or .gz: decompressed first) instead of a generated one"
    )
    parser.add_argument("--random", action="store_true", help="random ids (high cardinality) instead of the sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.tsv"
        if args.input is None:
            write_tsv(small, args.rows, args.random)
        else:  # both sides read plain text: pyarrow's side would otherwise parse compressed bytes
            opener = gzip.open if args.input.suffix == ".gz" else open
            with opener(args.input, "rb") as source, small.open("wb") as out:
                shutil.copyfileobj(source, out)
        reference, ours, rows = run_rounds(small, Path(tmp), max(1, args.rounds))
        large = Path(tmp) / "large.tsv"
        with large.open("wb") as out:
            for _ in range(4):  # streamed: the input may be larger than memory
                with small.open("rb") as source:
                    shutil.copyfileobj(source, out)
        ours_large = measure("prepare", large, Path(tmp) / "out_large")
    print(
        f"pyarrow.csv parse: {reference['best_rows_per_s']:,.0f} rows/s best, {reference['cpu_us_per_row']:.2f} "
        f"CPU us/row; prepare criteo (one worker): {ours['best_rows_per_s']:,.0f} rows/s best, "
        f"{ours['cpu_us_per_row']:.2f} CPU us/row; peak RSS {ours['peak_rss_mb']:.0f} MB at {rows:,} rows, "
        f"{ours_large['peak_rss_mb']:.0f} MB at {ours_large['rows']:,}"
    )
    print(
        json.dumps(
            {
                "ratio": round(reference["cpu_us_per_row"] / ours["cpu_us_per_row"], 3),
                "wall_ratio_best": round(ours["best_rows_per_s"] / reference["best_rows_per_s"], 3),
                "wall_ratio_median": round(ours["median_rows_per_s"] / reference["median_rows_per_s"], 3),
                "prepare_cpu_us_per_row": round(ours["cpu_us_per_row"], 3),
                "pyarrow_cpu_us_per_row": round(reference["cpu_us_per_row"], 3),
                "prepare_rows_per_s": round(ours["best_rows_per_s"]),
                "pyarrow_csv_rows_per_s": round(reference["best_rows_per_s"]),
                "rounds": max(1, args.rounds),
                "rows": rows,
                "peak_rss_mb": round(ours["peak_rss_mb"], 1),
                "peak_rss_mb_4x_rows": round(ours_large["peak_rss_mb"], 1),
                "pyarrow_peak_rss_mb": round(reference["peak_rss_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
