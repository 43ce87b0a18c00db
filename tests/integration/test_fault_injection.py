"""Fault injection: SIGKILL or SIGTERM at seeded random moments (mid-step, mid-save, from outside),
then ``resume=auto`` until done; every trial must end bitwise equal to an uninterrupted run.

Each trial checks the loss bound too: a resume loads exactly the newest checkpoint that was complete
on disk when the process died (so SIGKILL loses only the steps since it), and after SIGTERM the
process itself wrote that checkpoint at a step no earlier than the last one it had logged (at most
the in-flight step lost). Trainer runs are forked from one process that imported terarec once
(``fork_server.py``), which keeps 24 trials at about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from conftest import synthetic_dataset
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from terarec.trainer.checkpoint import checkpoint_dirs, verify_files

if TYPE_CHECKING:
    from tests.conftest import Torchrun

ROOT = Path(__file__).resolve().parents[2]
TOTAL, EVERY = 30, 4  # steps, checkpoint cadence
TRIALS = 24
SAVE_POINTS = ("save_start", "save_files", "save_manifest", "save_renamed")
LOADED = re.compile(r"loaded checkpoint \S+ \(step (\d+)\)")
STOPPED = re.compile(r"stopped by a signal after step (\d+)/")
LOGGED = re.compile(r" step (\d+)/\d+ loss")
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Fault:
    """How one trial is interrupted: by its own fault hook at ``point``/``step``, or from outside
    (``point == "outside"``) once the run has logged ``step``."""

    signal: str  # KILL or TERM
    point: str
    step: int

    @property
    def hook(self) -> str:
        return "" if self.point == "outside" else f"{self.point}:{self.step}:{self.signal}"


def plan(trial: int) -> Fault:
    rng = random.Random(trial)  # seeded: the same 24 faults on every run of the test
    sig = ("KILL", "TERM")[trial % 2]
    kind = ("step", "save", "outside")[(trial // 2) % 3]
    if kind == "save":  # every point of a save gets a KILL and a TERM; the step is random
        return Fault(sig, SAVE_POINTS[(trial // 6) % 4], EVERY * rng.randint(1, TOTAL // EVERY - 1))
    return Fault(sig, kind, rng.randint(1, TOTAL - 8))  # outside: leave the run time to be hit


class Runner:
    """Talks to ``fork_server.py``: start a trainer run, signal it, wait for its exit status."""

    def __init__(self, data: Path, workdir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(Path(__file__).with_name("fork_server.py"))]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.data, self.workdir, self.runs = data, workdir, 0

    def args(self, run: Path, *extra: str) -> list[str]:
        return [
            "--config",
            "dcnv2_synth",
            f"data.path={self.data}",
            f"run.dir={run}",
            "embeddings.max_rows=500",
            "train.batch_size=64",
            f"train.max_steps={TOTAL}",
            f"checkpoint.every_steps={EVERY}",
            "train.log_every=1",
            "logging.progress=false",
            "logging.tensorboard=false",
            *extra,
        ]

    def run(self, run: Path, *extra: str, fault: Fault | None = None) -> tuple[int, str]:
        """One trainer run to its end (or to the fault): (exit status, its log)."""
        self.runs += 1
        log = self.workdir / f"run{self.runs}.log"
        request = {"argv": self.args(run, *extra), "log": str(log), "fault": fault.hook if fault else ""}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]
        if fault is not None and fault.point == "outside":
            _signal_after_step(pid, log, fault)
        status = json.loads(self.proc.stdout.readline())["status"]
        return status, log.read_text()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _signal_after_step(pid: int, log: Path, fault: Fault) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.is_file() and f" step {fault.step}/" in log.read_text():  # the child creates it
            break
        time.sleep(0.002)
    try:
        os.kill(pid, signal.Signals[f"SIG{fault.signal}"])
    except ProcessLookupError:  # it had already finished: the trial checks that
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=3000, eval_fraction=0.1, seed=2)


@pytest.fixture(scope="module")
def runner(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    server = Runner(data, tmp_path_factory.mktemp("logs"))
    yield server
    server.close()


def _weights(run: Path, tmp: Path) -> dict[str, torch.Tensor]:
    out = tmp / f"{run.name}.pt"
    dcp_to_torch_save(str(run / "checkpoints" / f"step_{TOTAL}"), str(out))
    return torch.load(out, weights_only=False)["model"]


def _newest_complete(run: Path) -> int:
    """The step of the newest checkpoint that verifies against its manifest (0: none)."""
    good = [int(p.name[5:]) for p in checkpoint_dirs(run) if verify_files(p) is None]
    return max(good, default=0)


def _check_trial(fault: Fault, status: int, log: str, start: int) -> None:
    """The loss bound of one interrupted run, given the step its resume started from."""
    logged = max((int(s) for s in LOGGED.findall(log)), default=0)  # the last step it reported
    if status == 128 + signal.SIGTERM:  # handled: it stopped after the step in flight, with a checkpoint
        assert fault.signal == "TERM" and int(STOPPED.search(log).group(1)) == start >= logged - 1
    else:  # SIGKILL, or SIGTERM before the handler was installed / after training: the default action
        assert status in (-signal.SIGKILL, -signal.SIGTERM), log[-2000:]
    if fault.point == "step":  # the hook fires after the step, before its log line
        assert logged == fault.step - 1 or fault.signal == "TERM"
    elif fault.point != "outside":
        assert logged == fault.step or fault.signal == "TERM"


def test_every_interrupted_run_resumes_to_the_uninterrupted_result(runner: Runner, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    status, log = runner.run(reference)
    assert status == 0, log[-3000:]
    expected, weights = json.loads((reference / "metrics.json").read_text()), _weights(reference, tmp_path)
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        fault, run = plan(trial), tmp_path / f"trial{trial}"
        status, log = runner.run(run, fault=fault)
        newest = _newest_complete(run) if (run / "checkpoints").is_dir() else 0
        resumed_status, resumed_log = runner.run(run, "resume=auto") if status != 0 else (0, "")
        assert resumed_status == 0, f"{fault}: {resumed_log[-3000:]}"
        loaded = LOADED.search(resumed_log)
        start = int(loaded.group(1)) if loaded else 0
        assert start == newest, f"{fault}: resumed from step {start}, the newest complete checkpoint was {newest}"
        if status != 0:  # 0: an outside signal came after the run had ended
            _check_trial(fault, status, log, start)
        got = json.loads((run / "metrics.json").read_text())
        for key in ("steps", "samples", "auc", "logloss", "ne", "calibration"):
            assert got[key] == expected[key], f"{fault}: {key} {got[key]} != {expected[key]}"
        final = _weights(run, tmp_path)
        assert final.keys() == weights.keys() and all(torch.equal(final[k], weights[k]) for k in final), fault
        key = f"{fault.signal}/{fault.point}/{status}"
        outcomes[key] = outcomes.get(key, 0) + 1
    interrupted = sum(n for key, n in outcomes.items() if not key.endswith("/0"))
    assert interrupted >= TRIALS - 2, outcomes  # outside signals may rarely come after the end
    assert any(key.startswith("TERM/save") and key.endswith("/143") for key in outcomes), outcomes
    assert any(key.startswith("KILL/save") for key in outcomes), outcomes
    print(f"fault injection outcomes (signal/point/exit status: trials): {outcomes}")


def _torchrun(torchrun: Torchrun, runner: Runner, run: Path, *extra: str, fault: str = "") -> subprocess.Popen:
    args = runner.args(run, "sharding.sharding_type=table_wise", "train.epochs=2", *extra)  # 22 batches per rank
    env = {**torchrun.env, "PYTHONPATH": str(ROOT), **({"TERAREC_FAULT_AT": fault} if fault else {})}
    cmd = torchrun.command("terarec.trainer.main", args)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.distributed
def test_two_process_runs_survive_sigterm_to_torchrun_and_a_rank_killed_mid_save(
    runner: Runner, torchrun: Torchrun, tmp_path: Path
) -> None:
    """torchrun forwards SIGTERM to the workers, which stop at the same step and save together; a
    rank SIGKILLed between its files and the manifest leaves the previous checkpoint in charge."""
    reference = tmp_path / "reference"
    out = _torchrun(torchrun, runner, reference).communicate(timeout=600)[0]
    assert (reference / "metrics.json").is_file(), out[-3000:]
    expected, weights = json.loads((reference / "metrics.json").read_text()), _weights(reference, tmp_path)

    termed = tmp_path / "termed"
    job = _torchrun(torchrun, runner, termed)
    assert job.stdout is not None
    seen = []
    for line in job.stdout:  # SIGTERM to torchrun itself once rank 0 logged step 6
        seen.append(line)
        if " step 6/" in line:
            job.send_signal(signal.SIGTERM)
            break
    seen += job.communicate(timeout=600)[0]
    text = "".join(seen)
    assert job.returncode != 0, text[-3000:]
    stopped = int(STOPPED.search(text).group(1))
    assert 6 <= stopped < TOTAL and _newest_complete(termed) == stopped

    killed = tmp_path / "killed"
    out = _torchrun(torchrun, runner, killed, fault="save_files:8:KILL:1").communicate(timeout=600)[0]
    assert not (killed / "metrics.json").exists() and _newest_complete(killed) == 4, out[-3000:]

    for run, start in ((termed, stopped), (killed, 4)):
        out = _torchrun(torchrun, runner, run, "resume=auto").communicate(timeout=600)[0]
        assert [int(step) for step in LOADED.findall(out)] == [start], out[-3000:]
        got = json.loads((run / "metrics.json").read_text())
        assert all(got[k] == expected[k] for k in ("steps", "samples", "auc", "logloss")), (run.name, got)
        final = _weights(run, tmp_path)
        assert all(torch.equal(final[k], weights[k]) for k in weights), run.name
