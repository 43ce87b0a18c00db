"""The stages of ``benchmarks/scale_rehearsal.py``, each run as its own child process and measured with
``os.wait4`` (the child's CPU time, its reaped children's included, and the peak RSS of its largest
process), so every figure belongs to one stage at one size, as ``/usr/bin/time`` would report it.

Also this module's command line: ``python benchmarks/rehearsal_stages.py stream DATA --window W --batch B``
streams one full epoch of DATA's train split through terarec's loader and prints ``{"rows": N, "epoch_cpu_s": S}``
(S: the epoch's own CPU time, imports excluded); ``... pilot DIR`` writes and prepares the disk check's pilot.
Note: a child's ru_maxrss starts at its parent's RSS when it forks, so the orchestrator must stay small.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TERAREC = [sys.executable, "-m", "terarec.cli"]
PILOT_ROWS = 50_000  # rows of the pilot that sizes the disk check (one parquet row group)
STARTUP_LINES = 10  # lines per file of the synth and prepare runs whose CPU is taken as the stage's start-up


@dataclass
class Measured:
    """One stage at one size: what it processed and what it cost (children of children included)."""

    rows: int
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int  # the largest single process of the stage (ru_maxrss), not a sum over processes
    work_cpu_s: float | None = None  # the CPU time of the work itself, start-up excluded, where the stage reports it

    def figures(self) -> dict[str, float]:
        out = {
            "rows": self.rows,
            "wall_s": round(self.wall_s, 2),
            "rows_per_s": round(self.rows / max(self.wall_s, 1e-9)),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_us_per_row": round(self.cpu_s * 1e6 / max(self.rows, 1), 3),
            "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
        }
        if self.work_cpu_s is not None:
            out["work_cpu_us_per_row"] = round(self.work_cpu_s * 1e6 / max(self.rows, 1), 3)
        return out

    def __add__(self, other: Measured) -> Measured:
        """Two processes of one stage (a killed run and its resume): times add, the peak is the larger."""
        return Measured(
            self.rows + other.rows,
            self.wall_s + other.wall_s,
            self.cpu_s + other.cpu_s,
            max(self.peak_rss_bytes, other.peak_rss_bytes),
        )


class StageError(RuntimeError):
    """A stage's process failed; the message ends with the tail of its log."""


class Runner:
    """Runs stage commands one at a time, each in its own session (so a kill reaches its workers too),
    logging into ``logs``; ``stop()`` kills the running one (cleanup on failure or Ctrl-C). Commands start
    from this process's working directory and need ``env``'s PYTHONPATH to find this checkout's terarec."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.pid: int | None = None
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cmd: list[str], kill_when: Callable[[], bool] | None = None) -> tuple[int, Measured]:
        """(exit status, cost) of ``cmd``; ``kill_when``: polled while it runs, True SIGKILLs its process group.
        A status other than 0 (and other than -SIGKILL when it was asked for) raises StageError."""
        log = self.logs / f"{name}.log"
        start = time.perf_counter()
        child = self._spawn(cmd, log)
        killed = False
        while True:
            pid, status, usage = os.wait4(child, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and not killed and kill_when():
                os.killpg(child, signal.SIGKILL)
                killed = True
            time.sleep(0.02)
        self.pid = None
        code = os.waitstatus_to_exitcode(status)
        cost = Measured(0, time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)
        if code != 0 and not (killed and code == -signal.SIGKILL):
            tail = "\n".join(log.read_text().splitlines()[-15:])
            raise StageError(f"stage {name} failed (exit {code}): {' '.join(cmd)}\n{tail}")
        return code, cost

    def _spawn(self, cmd: list[str], log: Path) -> int:
        """Start ``cmd`` in a session of its own, stdout and stderr into ``log``. SIGINT/SIGTERM are held back
        until its pid is recorded (so stop() always finds it); the child starts with them unblocked."""
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.pid = os.posix_spawn(
                cmd[0],
                cmd,
                self.env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
                setsid=True,
                setsigmask=held,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return self.pid

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None


def synth_days(runner: Runner, name: str, rows: int, days: int, seed: int, output: Path) -> Measured:
    """``terarec synth --format tsv``: ``days`` day files of ``rows`` rows in all into ``output``. Its work CPU
    leaves out the start-up: the CPU of the same command for ``STARTUP_LINES`` rows a day."""
    _, cost = runner.run(name, _synth_command(rows, days, seed, output))
    cost.rows = rows
    heads = output.parent / f"{output.name}_startup"
    _less_startup(runner, name, cost, _synth_command(days * STARTUP_LINES, days, seed, heads), heads)
    return cost


def _synth_command(rows: int, days: int, seed: int, output: Path) -> list[str]:
    cmd = [*TERAREC, "synth", "--format", "tsv", "--preset", "criteo-1tb", "--rows", str(rows), "--days", str(days)]
    return [*cmd, "--seed", str(seed), "--output", str(output)]


def prepare(runner: Runner, name: str, inputs: list[Path], eval_file: Path, output: Path, workers: int) -> Measured:
    """``terarec prepare criteo --workers``: the train days (and the one eval day) into a dataset. Its work
    CPU leaves out the start-up: the CPU of the same command on the first ``STARTUP_LINES`` lines of each file."""
    _, cost = runner.run(name, _prepare_command(inputs, eval_file, output, workers))
    cost.rows = sum(json.loads((output / "schema.json").read_text())["rows"].values())  # no pyarrow here
    heads = output.parent / f"{output.name}_startup"
    heads.mkdir()
    for path in [*inputs, eval_file]:  # the same names: the same parts, markers and worker count
        with path.open("rb") as source:
            (heads / path.name).write_bytes(b"".join(itertools.islice(source, STARTUP_LINES)))
    files = [heads / path.name for path in inputs]
    _less_startup(runner, name, cost, _prepare_command(files, heads / eval_file.name, heads / "out", workers), heads)
    return cost


def _less_startup(runner: Runner, name: str, cost: Measured, startup_cmd: list[str], scratch: Path) -> None:
    """``cost``'s work CPU: its CPU less that of ``startup_cmd`` (the same command on a few rows, writing
    under ``scratch``, which is removed after)."""
    _, startup = runner.run(f"{name}_startup", startup_cmd)
    shutil.rmtree(scratch)
    cost.work_cpu_s = max(cost.cpu_s - startup.cpu_s, 0.0)


def _prepare_command(inputs: list[Path], eval_file: Path, output: Path, workers: int) -> list[str]:
    cmd = [*TERAREC, "prepare", "criteo", "--input", *map(str, inputs), "--eval-files", str(eval_file)]
    return [*cmd, "--output", str(output), "--workers", str(workers)]


def stream(runner: Runner, name: str, data: Path, window: int, batch: int, expected_rows: int) -> Measured:
    """One full epoch of the train split through the loader at ``window`` rows (this file's ``stream``)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "stream", str(data), "--window", str(window)]
    _, cost = runner.run(name, [*cmd, "--batch", str(batch)])
    printed = json.loads((runner.logs / f"{name}.log").read_text().splitlines()[-1])
    rows = printed["rows"]
    cost.work_cpu_s = printed["epoch_cpu_s"]
    if rows != expected_rows:
        raise StageError(f"stage {name} streamed {rows} rows, the train split has {expected_rows}")
    cost.rows = rows
    return cost


def train_kill_resume(
    runner: Runner, name: str, data: Path, run: Path, steps: int, batch: int
) -> tuple[Measured, dict]:
    """``dcnv2_synth`` (DCNv2 ``small``, one process) for ``steps`` steps: SIGKILLed once its checkpoint at
    ``steps // 2`` is complete, then ``resume=auto`` to the end. Checks that the resume loaded that
    checkpoint and that the step count continued to ``steps`` with every sample trained once."""
    half = steps // 2
    cmd = [
        sys.executable, "-m", "terarec.trainer.main", "--config", "dcnv2_synth",
        f"data.path={data}", f"run.dir={run}", f"train.max_steps={steps}", f"train.batch_size={batch}",
        f"checkpoint.every_steps={half}", f"train.log_every={max(half // 4, 1)}", "train.eval_every=0",
        "logging.progress=false", "logging.tensorboard=false",
    ]  # fmt: skip
    checkpoint = run / "checkpoints" / f"step_{half}"  # renamed into place after its manifest: complete
    code, killed = runner.run(f"{name}_killed", cmd, kill_when=checkpoint.is_dir)
    if code != -signal.SIGKILL or (run / "metrics.json").exists():
        raise StageError(f"stage {name}: the run ended (exit {code}) before it could be killed")
    _, resumed = runner.run(f"{name}_resumed", [*cmd, "resume=auto"])
    loaded = re.findall(r"loaded checkpoint \S+ \(step (\d+)\)", (runner.logs / f"{name}_resumed.log").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    resume = {
        "killed_after_checkpoint": half,
        "resumed_from_step": int(loaded[-1]) if loaded else 0,
        "final_step": int(metrics["steps"]),
        "samples": int(metrics["samples"]),
        "loop_samples_per_s": round(metrics["samples_per_s"]),
    }
    if resume["resumed_from_step"] < half or resume["final_step"] != steps or resume["samples"] != steps * batch:
        raise StageError(f"stage {name}: the resume did not continue the killed run: {resume}")
    cost = killed + resumed
    cost.rows = resume["samples"]
    return cost, resume


def pilot_bytes_per_row(runner: Runner, scratch: Path) -> tuple[float, float]:
    """(TSV bytes/row, parquet bytes/row) of a PILOT_ROWS-row pilot (this file's ``pilot``, a process of its own:
    a child's peak RSS starts from its parent's at fork, so the orchestrator stays small)."""
    runner.run("pilot", [sys.executable, str(Path(__file__).resolve()), "pilot", str(scratch / "pilot")])
    pilot = json.loads((runner.logs / "pilot.log").read_text().splitlines()[-1])
    shutil.rmtree(scratch / "pilot")
    return pilot["tsv"], pilot["parquet"]


def _pilot_main(scratch: Path) -> None:
    from terarec.data_pipeline.criteo import prepare_criteo
    from terarec.data_pipeline.synth import SynthSpec
    from terarec.data_pipeline.synth_tsv import write_tsv_days

    raw, prepared = scratch / "raw", scratch / "prepared"
    with contextlib.redirect_stdout(io.StringIO()):
        write_tsv_days(SynthSpec(rows=PILOT_ROWS), raw, days=1, progress=False)
        prepare_criteo([str(raw / "day_0")], str(prepared), workers=1, progress=False)
    tsv = (raw / "day_0").stat().st_size / PILOT_ROWS
    parquet = sum(p.stat().st_size for p in prepared.rglob("*.parquet")) / PILOT_ROWS
    print(json.dumps({"tsv": tsv, "parquet": parquet}))


def _stream_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="one epoch of DATA's train split through terarec's loader")
    parser.add_argument("data", type=Path)
    parser.add_argument("--window", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--max-table-rows", type=int, default=40_000_000, help="ids modulo min(cardinality, this)")
    args = parser.parse_args(argv)
    from terarec.batch import real_rows
    from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
    from terarec.data_pipeline.schema import DatasetSchema
    from terarec.embeddings.tables import table_sizes

    schema = DatasetSchema.load(args.data)
    sizes = table_sizes(schema, max_rows=args.max_table_rows)
    spec = LoaderSpec(str(args.data), "train", args.batch, sizes, shuffle_buffer=args.window)
    before = resource.getrusage(resource.RUSAGE_SELF)  # after the imports: the epoch's own CPU time too
    rows = sum(int(real_rows(batch.labels).sum()) for batch in BatchLoader(spec, schema))
    after = resource.getrusage(resource.RUSAGE_SELF)
    epoch_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"rows": rows, "epoch_cpu_s": epoch_cpu}))


def _main(argv: list[str]) -> None:
    if argv[:1] == ["stream"]:
        _stream_main(argv[1:])
    elif argv[:1] == ["pilot"] and len(argv) == 2:
        _pilot_main(Path(argv[1]))
    else:
        sys.exit("usage: rehearsal_stages.py stream DATA --window W --batch B | pilot DIR")


if __name__ == "__main__":
    _main(sys.argv[1:])
