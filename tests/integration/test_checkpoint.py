"""Checkpoints: SIGKILL + resume == uninterrupted, fallback past a truncated checkpoint, resharding."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from conftest import checkpoint_weights, dcnv2_train_args, synthetic_dataset

from terarec.cli import main

if TYPE_CHECKING:
    from tests.conftest import Torchrun

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=20000, eval_fraction=0.1, seed=2)


def _args(data: Path, run: Path, *extra: str) -> list[str]:
    return dcnv2_train_args(
        data, run, "embeddings.max_rows=5000", "train.batch_size=64", "checkpoint.every_steps=50", *extra
    )


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "uninterrupted"
    assert main(["train", *_args(synth_dir, run)]) == 0
    return run


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(synth_dir: Path, uninterrupted: Path, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "terarec.trainer.main", *_args(synth_dir, run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step_100").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and not (run / "metrics.json").exists(), (
        "the run ended before it could be killed"
    )
    done = subprocess.run([*cmd, "resume=auto"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded checkpoint" in done.stderr
    a, b = _metrics(uninterrupted), _metrics(run)
    assert (b["samples"], b["steps"]) == (a["samples"], a["steps"]) == (18000, 282)  # every sample exactly once
    assert (b["auc"], b["logloss"], b["ne"]) == (a["auc"], a["logloss"], a["ne"])
    final_a = checkpoint_weights(uninterrupted / "checkpoints" / "step_282", tmp_path)
    final_b = checkpoint_weights(run / "checkpoints" / "step_282", tmp_path)
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key  # bitwise on CPU


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_the_previous(
    synth_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_250", "step_282"]  # keep_last=2
    newest = run / "checkpoints" / "step_282"
    biggest = max(newest.glob("*.distcp"), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    cmd = [sys.executable, "-m", "terarec.trainer.main", *_args(synth_dir, run), "resume=auto"]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    warning = [line for line in done.stderr.splitlines() if "step_282 is unreadable" in line]
    assert warning and "trying the previous one" in warning[0]
    assert "loaded checkpoint" in done.stderr and "step_250" in done.stderr
    assert _metrics(run)["auc"] == _metrics(uninterrupted)["auc"]  # resumed at 250, trained to 282 again
    assert checkpoint_weights(newest, tmp_path).keys()  # and the final checkpoint was rewritten whole


@pytest.mark.slow
@pytest.mark.distributed
def test_checkpoints_reshard_between_world_sizes(
    synth_dir: Path, uninterrupted: Path, tmp_path: Path, torchrun: Torchrun
) -> None:
    run = tmp_path / "two"
    args = _args(synth_dir, run, "train.max_steps=40", "sharding.sharding_type=table_wise")
    done = subprocess.run(
        torchrun.command("terarec.trainer.main", args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trained = _metrics(run)
    for nproc, plan in (
        (1, []),
        (2, []),
        (2, ["sharding.sharding_type=column_wise"]),
    ):  # 2 -> 1, 2 -> 2, 2 -> 2 resharded
        out = subprocess.run(
            [sys.executable, "-m", "terarec.cli", "eval", "--run", str(run), "--nproc", str(nproc), *plan],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads((run / "eval.json").read_text())
        assert result["world_size"] == nproc and result["checkpoint_world_size"] == 2 and result["count"] == 2000
        assert result["auc"] == pytest.approx(trained["auc"], abs=1e-12) and result["logloss"] == pytest.approx(
            trained["logloss"], rel=1e-9
        )
    # 1 -> 2: the single-process run's final checkpoint evaluated on 2 processes
    out = subprocess.run(
        [sys.executable, "-m", "terarec.cli", "eval", "--run", str(uninterrupted), "--nproc", "2"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((uninterrupted / "eval.json").read_text())
    assert result["world_size"] == 2 and result["auc"] == pytest.approx(_metrics(uninterrupted)["auc"], abs=1e-12)


def test_eval_of_a_non_run_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error:") and "not a terarec run directory" in err and "\n" not in err


@pytest.mark.slow
@pytest.mark.distributed
def test_elastic_restart_after_a_worker_is_killed(synth_dir: Path, tmp_path: Path, torchrun: Torchrun) -> None:
    """torchrun --max-restarts: SIGKILL one worker; the group restarts, resumes, and ends as if nothing happened."""

    def launch(run: Path, restarts: int) -> subprocess.Popen:
        args = _args(synth_dir, run, "checkpoint.every_steps=20", "sharding.sharding_type=table_wise", "resume=auto")
        cmd = torchrun.command("terarec.trainer.main", args, max_restarts=restarts)
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    reference = launch(tmp_path / "reference", 0)
    assert reference.wait(timeout=600) == 0, reference.stdout.read()[-3000:]
    job = launch(tmp_path / "elastic", 2)
    deadline = time.monotonic() + 300
    while (
        not (tmp_path / "elastic" / "checkpoints" / "step_40").is_dir()
        and job.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    workers = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "no worker to kill: the job ended early"
    os.kill(int(workers[-1]), signal.SIGKILL)
    output = job.communicate(timeout=600)[0]
    assert job.returncode == 0, output[-3000:]
    assert "loaded checkpoint" in output  # the restarted group resumed instead of starting over
    a, b = _metrics(tmp_path / "reference"), _metrics(tmp_path / "elastic")
    assert (b["samples"], b["steps"], b["auc"], b["logloss"]) == (a["samples"], a["steps"], a["auc"], a["logloss"])
