"""A rank that hangs without crashing (SIGSTOP) must not hang the job: the others give up after
``train.collective_timeout_s`` and torchrun ends the job with a failure naming the timeout."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from terarec.data_pipeline.synth import SynthSpec, write_synthetic

if TYPE_CHECKING:
    from tests.conftest import Torchrun

ROOT = Path(__file__).resolve().parents[2]


def _worker_pid(local_rank: int) -> int | None:
    """The trainer process of ``local_rank`` (not the torchrun agent), from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline, environ = (entry / "cmdline").read_bytes(), (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"terarec.trainer.main" in cmdline
            and b"torch.distributed.run" not in cmdline
            and f"LOCAL_RANK={local_rank}".encode() in environ
        ):
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc to find the worker")
def test_a_frozen_rank_fails_the_job_after_the_collective_timeout(tmp_path: Path, torchrun: Torchrun) -> None:
    write_synthetic(SynthSpec(rows=40000, eval_fraction=0.1, seed=1), tmp_path / "data", progress=False)
    args = [
        "--config",
        "dcnv2_synth",
        f"data.path={tmp_path / 'data'}",
        f"run.dir={tmp_path / 'run'}",
        "train.batch_size=64",
        "train.epochs=5",
        "train.log_every=1",
        "train.collective_timeout_s=10",
        "embeddings.max_rows=5000",
        "logging.tensorboard=false",
        "logging.progress=false",
    ]
    cmd = torchrun.command("terarec.trainer.main", args)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=torchrun.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    try:
        for line in proc.stdout:  # wait until training is under way
            output.append(line)
            if "step 3/" in line:
                break
        pid = _worker_pid(1)
        assert pid is not None, "".join(output)[-2000:]
        os.kill(pid, signal.SIGSTOP)  # rank 1 freezes: alive, holding its sockets, never answering
        output.append(proc.stdout.read())
        code = proc.wait(timeout=300)  # a job that hung would raise TimeoutExpired here
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(output)
    assert code != 0 and not (tmp_path / "run" / "metrics.json").exists()
    # rank 0 gave up after train.collective_timeout_s (gloo words it either way, depending on the operation)
    assert re.search(r"Timed out waiting 10000ms|Application timeout caused pair closure", log), log[-3000:]
    assert "Root Cause" in log and "rank" in log  # torchrun's failure summary
