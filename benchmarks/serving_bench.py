"""Exported-model latency and throughput on CPU: fp32 and int8 exports vs the unexported eager model.

    .venv/bin/python benchmarks/serving_bench.py [--model dcnv2] [--calls 200] [--threads 1]

One run: a synthetic Criteo-shaped dataset, a short training (``checkpoint.final=true``), then
``terarec export`` at fp32 and int8. Measured on the same eval rows, interleaved per batch size:

- eager: the trained float model (the fp32 export's module, as ``build_model`` made it) on inputs
  already transformed (dense tensor + KJT): the model alone;
- fp32 / int8 export: ``terarec.serving.load(DIR)(rows)``, raw pyarrow rows in, probabilities out:
  the feature transform (fill, log1p, id modulo) included.

Latency p50/p99 over ``--calls`` calls at batch 1, 64 and 1024; throughput = rows/s at batch 1024.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from terarec import ARROW_PURGE_DELAY_ENV  # noqa: F401  # before pyarrow: importing terarec sets arrow's allocator options, as the CLI runs

# isort: split
import numpy as np
import pyarrow.parquet as pq
import torch

from terarec.cli import main as terarec
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.serving import load

BATCHES = (1, 64, 1024)


def _latencies(call: Callable[[], object], calls: int) -> np.ndarray:
    """Seconds per call, after 5 warm-up calls."""
    for _ in range(5):
        call()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times


def _prepare(work: Path, model: str, rows: int) -> Path:
    """Dataset, a 30-step run and its fp32 / int8 exports under ``work``; the dataset path."""
    data = work / "data"
    write_synthetic(SynthSpec(rows=rows, eval_fraction=0.2, seed=1), data, progress=False)
    run = work / "run"
    args = ["--config", "dcnv2_synth", f"model.name={model}", f"data.path={data}", f"run.dir={run}"]
    quiet = ["logging.progress=false", "logging.tensorboard=false", "logging.level=WARNING"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            terarec(["train", *args, "train.max_steps=30", "train.batch_size=256", *quiet, "checkpoint.final=true"])
            == 0
        )
        for dtype in ("fp32", "int8"):
            assert terarec(["export", "--run", str(run), "--output", str(work / dtype), "--dtype", dtype]) == 0
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dcnv2", choices=["dlrm", "dcnv2", "wukong"])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (serving: one request per core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = _prepare(work, args.model, args.rows)
        rows = pq.read_table(sorted((data / "eval").glob("part-*.parquet"))[0])
        fp32, int8 = load(str(work / "fp32")), load(str(work / "int8"))
        result: dict[str, dict[str, float]] = {"eager": {}, "fp32": {}, "int8": {}}
        for batch in BATCHES:
            sample = rows.slice(0, batch)
            dense, sparse = fp32.transform(sample)

            def eager(dense: torch.Tensor = dense, sparse: object = sparse) -> object:
                with torch.no_grad():
                    return fp32.model(dense, sparse)

            calls = args.calls if batch < 1024 else max(args.calls // 4, 20)
            timed = {
                "eager": _latencies(eager, calls),
                "fp32": _latencies(lambda s=sample: fp32(s), calls),
                "int8": _latencies(lambda s=sample: int8(s), calls),
            }
            for name, seconds in timed.items():
                result[name][f"p50_ms_b{batch}"] = round(float(np.percentile(seconds, 50)) * 1e3, 3)
                result[name][f"p99_ms_b{batch}"] = round(float(np.percentile(seconds, 99)) * 1e3, 3)
                if batch == BATCHES[-1]:
                    result[name]["rows_per_s"] = round(batch / float(np.median(seconds)))
        sizes = {d: (work / d / "model.pt").stat().st_size for d in ("fp32", "int8")}
    for name, row in result.items():
        print(
            f"{name:>5}: "
            + ", ".join(f"b{b} p50 {row[f'p50_ms_b{b}']} ms p99 {row[f'p99_ms_b{b}']} ms" for b in BATCHES)
            + f"; {row['rows_per_s']:,} rows/s at b1024"
        )
    print(json.dumps({"model": args.model, "threads": args.threads, **result, "model_bytes": sizes}))


if __name__ == "__main__":
    main()
