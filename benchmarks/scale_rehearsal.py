"""Scale rehearsal of the raw Criteo-1TB path: day files -> prepare -> one streamed epoch -> train, killed, resumed.

    nice -n 10 .venv/bin/python benchmarks/scale_rehearsal.py [--sizes 1000000,10000000,50000000] [--workers 2]
        [--project-cores 64] [--project-gpus 8] [--scratch-parent DIR]

Sizes are train rows. The day files are written once, in increments (``terarec synth --format tsv``, one
call per size with its own seed: the rows of size k are those of size k-1 plus the increment), every file
``--day-rows`` rows (default: the smallest size over ``--workers``), plus one fixed eval day shared by all
sizes (as day_23 is for Criteo 1TB), so the files total the largest size. For each size, each stage runs
in its own process (``rehearsal_stages.py``) and is measured by wait4 like /usr/bin/time:

- synth:   the size's increment of day files (its own rows: the first size's, then the differences; its work
           CPU: less the CPU of the same command for 10 rows a day file, the start-up of its process);
- prepare: ``terarec prepare criteo --workers`` on the size's day files and the eval day (its work CPU: less the
           CPU of the same command on the first 10 lines of each file, the start-up of its processes);
- stream:  one full epoch of the train split through terarec's loader at the MLPerf window (``dcnv2_mlperf``'s
           ``data.shuffle_buffer`` and per-rank ``train.batch_size``, ids modulo its 40M-row tables), one process;
- train:   a small model, DCNv2 ``small`` (the ``dcnv2_synth`` recipe), one process, ``--train-steps`` steps:
           SIGKILLed once its mid-way checkpoint is complete, then ``resume=auto`` to the end; the resumed run
           must load that checkpoint and end at the full step count with every sample trained once. Its
           figures cover both processes (start-up, the final eval on the eval day and checkpoints included).

Per stage: rows/s (wall), CPU us/row (process + children CPU / rows) and peak RSS (the largest single process
of the stage, e.g. one prepare worker); then the flatness across sizes (max/min of RSS and of CPU us/row; the
goal is <= 1.2) and a projection of prepare + one training epoch on Criteo 1TB for ``--project-cores`` and
``--project-gpus``. Free disk is checked first from a pilot's bytes per row; the scratch directory is removed
at the end, also on failure or Ctrl-C. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rehearsal_stages as stages  # noqa: E402  (the sibling module, also run as a stage process)

sys.path.insert(0, str(stages.ROOT))
from terarec.configs.loader import load_config  # noqa: E402

STAGES = ("synth", "prepare", "stream", "train")
# Criteo 1TB Click Logs: 24 day files; days 0-22 are the training epoch (README "Criteo 1TB").
CRITEO_1TB_ROWS = 4_373_472_329
CRITEO_1TB_TRAIN_ROWS = 4_195_197_692
CRITEO_1TB_DAY_FILES = 24
MLPERF_SAMPLES_PER_S_PER_GPU = 1.88e6  # MLPerf Training v4.0 DLRMv2, per H200
DISK_MARGIN = 1.3  # the pilot's bytes/row are from 50k rows; larger files compress a little differently
TRAIN_RECIPE = "dcnv2_synth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,50000000", help="train rows, comma-separated")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prepare criteo --workers")
    parser.add_argument("--day-rows", type=int, default=0, help="rows per day file (0: smallest size / workers)")
    parser.add_argument("--eval-rows", type=int, default=50_000, help="rows of the one eval day")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps (killed at half)")
    parser.add_argument("--train-batch", type=int, default=512)
    parser.add_argument("--project-cores", type=int, default=64)
    parser.add_argument("--project-gpus", type=int, default=8, help="0: project training from the CPU cost")
    parser.add_argument("--scratch-parent", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",")})
    except ValueError:
        parser.error(f"--sizes takes comma-separated row counts, got {args.sizes!r}")
    if args.sizes[0] <= 0 or args.workers <= 0 or args.eval_rows <= 0 or args.train_steps < 2:
        parser.error("sizes, --workers and --eval-rows must be positive and --train-steps at least 2")
    args.day_rows = args.day_rows or max(args.sizes[0] // args.workers, 1)
    if any(size % args.day_rows for size in args.sizes):
        parser.error(f"every size must be a multiple of --day-rows {args.day_rows}: {args.sizes}")
    if args.train_steps * args.train_batch > args.sizes[0]:
        parser.error(f"--train-steps x --train-batch is more than the smallest size {args.sizes[0]}: one epoch")
    return args


def check_disk(runner: stages.Runner, args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    """Bytes the run needs at its peak (all day files, the largest prepared set, the run's checkpoints),
    from a pilot's bytes/row; one-line exit if the scratch disk cannot hold them."""
    tsv, parquet = stages.pilot_bytes_per_row(runner, scratch)
    rows = args.sizes[-1] + args.eval_rows
    cfg = load_config(TRAIN_RECIPE)
    dim = cfg.embeddings.dim or 16
    checkpoints = 3 * 26 * cfg.embeddings.max_rows * dim * 4  # keep_last 2 + one being written; fp32 rows
    need = (rows * (tsv + parquet) + checkpoints) * DISK_MARGIN
    free = shutil.disk_usage(scratch).free
    if need > free:
        sys.exit(
            f"scale_rehearsal: error: sizes up to {args.sizes[-1]:,} rows need about {need / 1e9:.1f} GB in "
            f"{scratch.parent} (TSV {tsv:.0f} + parquet {parquet:.0f} bytes/row), {free / 1e9:.1f} GB free"
        )
    return {"tsv_bytes_per_row": round(tsv, 1), "parquet_bytes_per_row": round(parquet, 1), "need_gb": need / 1e9}


def write_days(runner: stages.Runner, args: argparse.Namespace, scratch: Path) -> tuple[dict[int, Any], Path]:
    """The day files of every size (the increments), flat in ``raw/`` as day_0 .. day_{N-1}, and the eval day
    day_N; per size its synth cost."""
    raw = scratch / "raw"
    raw.mkdir()
    costs: dict[int, Any] = {}
    names: list[str] = []
    previous = 0
    for seed, size in enumerate(args.sizes):
        rows = size - previous
        costs[size] = _synth_segment(runner, f"synth_{size}", rows, rows // args.day_rows, seed, scratch, names)
        previous = size
    _synth_segment(runner, "synth_eval", args.eval_rows, 1, len(args.sizes), scratch, names)  # not a stage figure
    return costs, raw / names[-1]


def _synth_segment(
    runner: stages.Runner, name: str, rows: int, days: int, seed: int, scratch: Path, names: list[str]
) -> stages.Measured:
    segment = scratch / name
    cost = stages.synth_days(runner, name, rows, days, seed, segment)
    for day in range(days):  # prepare names output parts after their inputs: one flat, numbered set
        names.append(f"day_{len(names)}")
        (segment / f"day_{day}").rename(scratch / "raw" / names[-1])
    shutil.rmtree(segment)
    return cost


def rehearse_size(runner: stages.Runner, args: argparse.Namespace, scratch: Path, size: int, eval_day: Path) -> dict:
    """prepare, stream and train at one size; the prepared set and the run are deleted afterwards."""
    mlperf = load_config("dcnv2_mlperf")
    days = [scratch / "raw" / f"day_{d}" for d in range(size // args.day_rows)]
    data, run = scratch / f"prepared_{size}", scratch / f"run_{size}"
    costs = {"prepare": stages.prepare(runner, f"prepare_{size}", days, eval_day, data, args.workers)}
    window, batch = mlperf.data.shuffle_buffer, mlperf.train.batch_size
    costs["stream"] = stages.stream(runner, f"stream_{size}", data, window, batch, size)
    costs["train"], resume = stages.train_kill_resume(
        runner, f"train_{size}", data, run, args.train_steps, args.train_batch
    )
    shutil.rmtree(data)
    shutil.rmtree(run)
    return {"costs": costs, "resume": resume, "window": window, "stream_batch": batch}


def flatness(figures: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per stage, max/min across sizes of peak RSS and of CPU us/row (whole processes; for synth, prepare and
    stream also without their start-up): 1.0 is flat."""
    out: dict[str, dict[str, float]] = {}
    for stage, by_size in figures.items():
        out[stage] = {}
        for key in ("peak_rss_mb", "cpu_us_per_row", "work_cpu_us_per_row"):
            values = [f[key] for f in by_size.values() if key in f]
            if len(values) == len(by_size):
                out[stage][key.removesuffix("_mb")] = round(max(values) / max(min(values), 1e-12), 3)
    return out


def cost_line(by_size: dict[int, dict[str, float]]) -> dict[str, float] | None:
    """CPU seconds = fixed + rows x marginal, least squares over the sizes: the start-up every process pays
    (imports, worker spawn) apart from the cost of each row, which is what a 182M-row day file pays."""
    points = [(f["rows"], f["cpu_s"]) for f in by_size.values()]
    if len({rows for rows, _ in points}) < 2:
        return None  # train: the same steps at every size
    mx = sum(r for r, _ in points) / len(points)
    my = sum(c for _, c in points) / len(points)
    slope = sum((r - mx) * (c - my) for r, c in points) / sum((r - mx) ** 2 for r, _ in points)
    return {"fixed_cpu_s": round(my - slope * mx, 2), "marginal_cpu_us_per_row": round(slope * 1e6, 3)}


def projection(figures: dict[str, dict[int, dict[str, float]]], lines: dict, cores: int, gpus: int) -> dict[str, Any]:
    """Criteo 1TB on ``cores`` cores (and ``gpus`` GPUs) from the measured per-row CPU costs.

    prepare: its marginal CPU us/row (start-up is noise on 182M-row files), one worker per day file, so at
    most 24 run at once and the slowest wave sets the time; training: with GPUs, MLPerf's per-GPU rate and
    the cores the loader needs to feed it (the stream epoch's own CPU us/row at the largest size); without,
    the small model's in-loop rate per process (one thread: about one core) spread perfectly over the cores
    (an optimistic bound)."""
    largest = {stage: by_size[max(by_size)] for stage, by_size in figures.items()}
    prepare_us = (lines.get("prepare") or {}).get("marginal_cpu_us_per_row", 0.0)
    if prepare_us <= 0:  # tiny sizes: noise can tilt the fit below zero; the whole-process cost then
        prepare_us = largest["prepare"]["cpu_us_per_row"]
    parallel = min(cores, CRITEO_1TB_DAY_FILES)
    waves = math.ceil(CRITEO_1TB_DAY_FILES / parallel)
    prepare_s = waves * (CRITEO_1TB_ROWS / CRITEO_1TB_DAY_FILES) * prepare_us * 1e-6
    stream_us = largest["stream"].get("work_cpu_us_per_row", largest["stream"]["cpu_us_per_row"])
    out: dict[str, Any] = {"cores": cores, "gpus": gpus, "rows": CRITEO_1TB_ROWS, "train_rows": CRITEO_1TB_TRAIN_ROWS}
    out |= {"prepare_cpu_us_per_row": prepare_us, "prepare_hours": round(prepare_s / 3600, 3)}
    if gpus:
        rate = gpus * MLPERF_SAMPLES_PER_S_PER_GPU
        out["train_basis"] = f"MLPerf v4.0 DLRMv2 {MLPERF_SAMPLES_PER_S_PER_GPU:.3g} samples/s per H200"
        out["loader_cores_needed"] = round(rate * stream_us * 1e-6, 1)  # at the stream stage's CPU us/row
    else:
        rate = cores * largest["train"]["loop_samples_per_s"]
        out["train_basis"] = f"{TRAIN_RECIPE} in-loop samples/s of one process x {cores} cores"
    out["train_epoch_hours"] = round(CRITEO_1TB_TRAIN_ROWS / rate / 3600, 3)
    out["total_hours"] = round(out["prepare_hours"] + out["train_epoch_hours"], 3)
    return out


def report(args: argparse.Namespace, results: dict[int, dict], synth: dict[int, Any], disk: dict) -> dict:
    figures = {stage: {} for stage in STAGES}  # type: dict[str, dict[int, dict[str, float]]]
    for size in args.sizes:
        figures["synth"][size] = synth[size].figures()
        for stage in STAGES[1:]:
            figures[stage][size] = results[size]["costs"][stage].figures()
        figures["train"][size]["loop_samples_per_s"] = results[size]["resume"]["loop_samples_per_s"]
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: a stage's largest process; every child starts from this process's {floor:.0f} MB at fork")
    print(f"{'stage':>8} {'size':>11} {'rows':>11} {'rows/s':>11} {'CPU us/row':>10} {'peak RSS MB':>11} {'wall s':>8}")
    for stage in STAGES:
        for size, f in figures[stage].items():
            print(
                f"{stage:>8} {size:>11,} {f['rows']:>11,} {f['rows_per_s']:>11,} {f['cpu_us_per_row']:>10.3f} "
                f"{f['peak_rss_mb']:>11.1f} {f['wall_s']:>8.1f}"
            )
    flat = flatness(figures)
    lines = {stage: cost_line(by_size) for stage, by_size in figures.items()}
    for stage, ratios in flat.items():
        print(f"flatness {stage:>8} (max/min over sizes): {ratios}; CPU s = fixed + rows x marginal: {lines[stage]}")
    for size in args.sizes:
        print(f"train resume at {size:,}: {results[size]['resume']}")
    proj = projection(figures, lines, args.project_cores, args.project_gpus)
    print(f"projection, Criteo 1TB on {args.project_cores} cores and {args.project_gpus} GPUs: {proj}")
    first = results[args.sizes[0]]
    return {
        "sizes": args.sizes,
        "workers": args.workers,
        "day_rows": args.day_rows,
        "window": first["window"],
        "stream_batch": first["stream_batch"],
        "train": {"recipe": TRAIN_RECIPE, "steps": args.train_steps, "batch": args.train_batch, "processes": 1},
        "stages": {stage: {str(s): f for s, f in by_size.items()} for stage, by_size in figures.items()},
        "flatness": flat,
        "cost_lines": lines,
        "orchestrator_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "resume": {str(s): results[s]["resume"] for s in args.sizes},
        "projection": proj,
        "disk": disk,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scale_rehearsal_", dir=args.scratch_parent)).resolve()
    path = os.pathsep.join(p for p in (str(stages.ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}  # this checkout's terarec in every stage
    runner = stages.Runner(scratch / "logs", env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally below, like Ctrl-C
    try:
        disk = check_disk(runner, args, scratch)
        print(f"scratch {scratch}: needs about {disk.pop('need_gb'):.2f} GB; {disk}", flush=True)
        synth, eval_day = write_days(runner, args, scratch)
        results = {}
        for size in args.sizes:
            print(f"size {size:,}: prepare, stream, train (kill + resume)", flush=True)
            results[size] = rehearse_size(runner, args, scratch, size, eval_day)
        result = report(args, results, synth, disk)
        result["scratch"] = str(scratch)
    except stages.StageError as err:
        sys.exit(f"scale_rehearsal: error: {err}")
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        runner.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
