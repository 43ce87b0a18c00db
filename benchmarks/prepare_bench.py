"""``prepare criteo`` throughput vs pyarrow.csv parsing alone, and its peak RSS at two input sizes.

    .venv/bin/python benchmarks/prepare_bench.py [--rows 1000000] [--input FILE]

Builds a raw Criteo TSV of ``--rows`` lines (the real 10k Kaggle sample repeated when
../shared/data is present, random Criteo-format lines otherwise) in a temp dir, then measures in
fresh processes, one file, one worker:
(a) pyarrow.csv streaming parse of the file with prepare's own read/parse options (decode only);
(b) ``prepare_file`` (parse + validate + hex decode + parquet write + distinct-count sketches);
(c) peak RSS of (b) on the file and on a file 4x larger: bounded memory means they stay close.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "criteo_kaggle_10k" / "train_10k.tsv"

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
if mode == "pyarrow":
    import pyarrow as pa, pyarrow.csv as pacsv
    from terarec.data_pipeline.criteo import BLOCK_BYTES, RAW_COLUMNS
    reader = pacsv.open_csv(pa.OSFile(path),
        read_options=pacsv.ReadOptions(column_names=RAW_COLUMNS, use_threads=False, block_size=BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in RAW_COLUMNS}))
    rows = sum(batch.num_rows for batch in reader)
else:
    from terarec.data_pipeline.criteo import FileJob, prepare_file
    Path(out).mkdir(parents=True, exist_ok=True)
    result = prepare_file(FileJob(path, "bench", 1 << 62, out, "fail"))
    rows = sum(result["rows"].values())
seconds = time.perf_counter() - start
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak_rss_mb}))
"""


def write_tsv(path: Path, rows: int) -> None:
    """``rows`` raw Criteo lines: the real sample repeated, or random lines of the same layout."""
    with path.open("w") as out:
        if SAMPLE.is_file():
            lines = SAMPLE.read_text().splitlines(keepends=True)
            for start in range(0, rows, len(lines)):
                out.writelines(lines[: min(len(lines), rows - start)])
            return
        rng = np.random.default_rng(0)
        for _ in range(rows):
            dense = "\t".join(str(v) for v in rng.integers(0, 1000, 13))
            sparse = "\t".join(f"{v:08x}" for v in rng.integers(0, 2**32, 26))
            out.write(f"{int(rng.random() < 0.25)}\t{dense}\t{sparse}\n")


def measure(mode: str, path: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(out)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--input", type=Path, help="an existing raw TSV instead of a generated one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = args.input or Path(tmp) / "small.tsv"
        if args.input is None:
            write_tsv(small, args.rows)
        large = Path(tmp) / "large.tsv"
        with large.open("wb") as out:
            for _ in range(4):
                out.write(small.read_bytes())
        measure("pyarrow", small, Path(tmp) / "warm")  # warm the page cache
        reference = measure("pyarrow", small, Path(tmp) / "unused")
        ours = measure("prepare", small, Path(tmp) / "out_small")
        ours_large = measure("prepare", large, Path(tmp) / "out_large")
    ref_rate, our_rate = reference["rows"] / reference["seconds"], ours["rows"] / ours["seconds"]
    print(
        f"pyarrow.csv parse: {ref_rate:,.0f} rows/s; prepare criteo: {our_rate:,.0f} rows/s (one worker); "
        f"peak RSS {ours['peak_rss_mb']:.0f} MB at {ours['rows']:,} rows, "
        f"{ours_large['peak_rss_mb']:.0f} MB at {ours_large['rows']:,}"
    )
    print(
        json.dumps(
            {
                "prepare_rows_per_s": round(our_rate),
                "pyarrow_csv_rows_per_s": round(ref_rate),
                "ratio": round(our_rate / ref_rate, 3),
                "rows": ours["rows"],
                "peak_rss_mb": round(ours["peak_rss_mb"], 1),
                "peak_rss_mb_4x_rows": round(ours_large["peak_rss_mb"], 1),
                "pyarrow_peak_rss_mb": round(reference["peak_rss_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
