"""The "trustworthy artifacts" cases end to end: one test per reported case and per reported traceback."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import checkpoint_weights, dcnv2_train_args, read_only_directory, synthetic_dataset

from terarec.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=3000, eval_fraction=0.1, seed=2)


def _args(data: Path, run: Path, *extra: str) -> list[str]:
    sizes = ("embeddings.max_rows=500", "train.batch_size=64", "train.max_steps=10", "checkpoint.every_steps=5")
    return dcnv2_train_args(data, run, *sizes, "train.log_every=1", *extra)


def _train(data: Path, run: Path, *extra: str) -> int:
    return main(["train", *_args(data, run, *extra)])


def _subprocess(data: Path, run: Path, *extra: str, fault: str = "") -> subprocess.Popen:
    env = {**ENV, "PYTHONPATH": str(ROOT), **({"TERAREC_FAULT_AT": fault} if fault else {})}
    cmd = [sys.executable, "-m", "terarec.trainer.main", *_args(data, run, *extra)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The run's stderr ends with exactly one ``terarec: error:`` line and holds no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("terarec: error: ") and err.count("terarec: error:") == 1, err[-3000:]
    return last


def _steps(run: Path) -> list[str]:
    return sorted((p.name for p in (run / "checkpoints").glob("step_*")), key=lambda n: int(n[5:]))


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 steps, checkpoints step_5 and step_10, and its eval.json; tests work on copies."""
    run = tmp_path_factory.mktemp("runs") / "trained"
    assert _train(data, run) == 0
    assert main(["eval", "--run", str(run)]) == 0
    return run


@pytest.fixture
def copy(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns(".lock"))
    return run


def test_case1_a_fresh_run_keeps_off_an_older_runs_checkpoints(
    data: Path, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Used to delete its own fresh step_4 (keep_last kept the older step_10) and overwrite config.yaml."""
    config = (copy / "config.yaml").read_text()
    capsys.readouterr()
    assert _train(data, copy, "train.max_steps=4", "checkpoint.keep_last=1") == 2
    assert "holds checkpoints of an earlier run (step_10, step_5): continue it with resume=auto" in _one_error(capsys)
    assert (copy / "config.yaml").read_text() == config and _steps(copy) == ["step_5", "step_10"]
    assert _train(data, copy, "train.max_steps=4", "checkpoint.keep_last=1", "run.overwrite=true") == 0
    assert _steps(copy) == ["step_4"]  # the checkpoint just written is the one kept
    assert yaml.safe_load((copy / "config.yaml").read_text())["train"]["max_steps"] == 4


def test_case4_resume_or_eval_with_other_layers_stops_instead_of_a_partial_load(
    data: Path, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Used to load what fit (missing layers stayed random, extra ones were dropped) and rewrite eval.json."""
    config, evaluated = (copy / "config.yaml").read_text(), (copy / "eval.json").read_text()
    capsys.readouterr()
    assert _train(data, copy, "resume=auto", "train.max_steps=15", "model.num_layers=5") == 2
    error = _one_error(capsys)
    assert "step_10 was trained with other values of keys that fix what it holds: model.num_layers (None -> 5)" in error
    assert main(["eval", "--run", str(copy), "model.num_layers=1"]) == 2
    error = _one_error(capsys)
    assert "step_10 does not fit the model built from this config" in error
    assert "model.model.inter_arch.crossnet.V_kernels.1 is in the checkpoint, not in this model" in error
    assert (copy / "config.yaml").read_text() == config and (copy / "eval.json").read_text() == evaluated
    assert sorted(p.name for p in (copy / "configs").iterdir()) == ["0.yaml"]  # refused starts are not recorded


def test_mid_epoch_resume_with_other_loader_workers_stops_before_training(
    data: Path, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """step_10 is mid-epoch (2700 train rows, batch 64): under data.num_workers=2 the rest of the
    epoch used to be dealt to 2 streams, silently skipping and repeating rows."""
    capsys.readouterr()
    assert _train(data, copy, "resume=auto", "train.max_steps=15", "data.num_workers=2") == 2
    error = _one_error(capsys)
    assert "mid-epoch (epoch 0, batch 10)" in error and "world size 1 x data.num_workers 1" in error
    assert "world size 1 x data.num_workers 2" in error and _steps(copy) == ["step_5", "step_10"]
    assert sorted(p.name for p in (copy / "configs").iterdir()) == ["0.yaml"]  # the refused start is not recorded
    assert _train(data, copy, "resume=auto", "train.max_steps=15") == 0  # the same layout continues
    assert sorted(p.name for p in (copy / "configs").iterdir()) == ["0.yaml", "1.yaml"]


def test_traceback_resume_with_another_flavor_is_one_line_and_the_run_stays_usable(
    data: Path, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Used to print DCP's "(tuple: (ValueError ... FrameSummary" then a RuntimeError traceback, after
    config.yaml had already been overwritten, so ``eval --run`` broke too."""
    config = (copy / "config.yaml").read_text()
    capsys.readouterr()
    assert _train(data, copy, "resume=auto", "model.flavor=parallel") == 2
    assert "model.flavor ('small' -> 'parallel')" in _one_error(capsys)
    assert (copy / "config.yaml").read_text() == config
    assert main(["eval", "--run", str(copy)]) == 0
    assert json.loads((copy / "eval.json").read_text())["step"] == 10


def test_case8_a_second_training_into_a_busy_dir_stops_at_once(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two trainings into one run.dir used to mix config from one and checkpoints from the other."""
    run = tmp_path / "busy"
    first = _subprocess(data, run, fault="step:3:STOP")  # freezes itself mid-training, holding the dir
    try:
        deadline = time.monotonic() + 120
        while _state(first.pid) != "T" and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(first.pid) == "T", "the first training did not reach step 3"
        capsys.readouterr()
        assert _train(data, run, "train.max_steps=4") == 2
        assert f"run dir {run} is in use by another training (pid {first.pid} on " in _one_error(capsys)
    finally:
        first.kill()
        first.communicate()
    assert _train(data, run, "train.max_steps=4") == 0  # the holder died: its lock went with it
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 4
    assert _steps(run) == ["step_4"]


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def test_case9_a_block_overwritten_in_a_checkpoint_is_caught_and_the_previous_one_used(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """4 KB overwritten inside a .distcp (size unchanged) used to load: eval AUC 0.5000, logloss nan."""
    reference = tmp_path / "reference"
    shutil.copytree(copy, reference)
    shutil.rmtree(reference / "checkpoints" / "step_10")
    assert main(["eval", "--run", str(reference)]) == 0
    expected = json.loads((reference / "eval.json").read_text())
    data_file = max((copy / "checkpoints" / "step_10").glob("*.distcp"), key=lambda p: p.stat().st_size)
    size = data_file.stat().st_size
    with open(data_file, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(4096))
    assert data_file.stat().st_size == size
    capsys.readouterr()
    assert main(["eval", "--run", str(copy)]) == 0
    err = capsys.readouterr().err
    assert f"step_10 is unreadable ({data_file.name} fails its checksum); trying the previous one" in err
    result = json.loads((copy / "eval.json").read_text())
    assert result["step"] == 5 and math.isfinite(result["logloss"])
    assert (result["auc"], result["logloss"]) == (expected["auc"], expected["logloss"])


def test_traceback_a_truncated_rng_file_falls_back_as_the_readme_says(
    data: Path, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = copy / "checkpoints" / "step_10" / "rng_rank0.pt"
    rng.write_bytes(rng.read_bytes()[:200])
    capsys.readouterr()
    assert _train(data, copy, "resume=auto", "train.max_steps=12") == 0
    err = capsys.readouterr().err
    assert "step_10 is unreadable (rng_rank0.pt has 200 bytes, the manifest says" in err
    assert "loaded checkpoint" in err and "step_5 (step 5)" in err
    assert _steps(copy) == ["step_10", "step_12"]  # keep_last=2
    from terarec.trainer.checkpoint import verify_files

    assert verify_files(copy / "checkpoints" / "step_10") is None  # rewritten whole on the way to step 12


# early stopping saves no checkpoint on a cadence but keeps its best one in checkpoints/
EARLY_STOP_ONLY = ("checkpoint.every_steps=0", "checkpoint.final=false", "data.valid_fraction=0.2")
EARLY_STOP_ONLY += ("train.early_stop=logloss", "train.eval_every=5")


@pytest.mark.parametrize("extra", [(), EARLY_STOP_ONLY], ids=["checkpointing", "early_stop_only"])
def test_traceback_a_read_only_checkpoints_dir_is_one_line_before_training(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...]
) -> None:
    run = tmp_path / "ro"
    with read_only_directory(run / "checkpoints"):
        capsys.readouterr()
        assert _train(data, run, *extra) == 2
        err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        f"terarec: error: cannot write to {run / 'checkpoints'} ("
    )
    assert " step 1/" not in err and not (run / "config.yaml").exists()  # stopped before any work


def test_case10_sigint_stops_with_a_checkpoint_and_resume_loses_nothing(
    data: Path, trained: Path, tmp_path: Path
) -> None:
    """SIGINT used to exit 130 with no checkpoint: every step since the last one was lost."""
    run = tmp_path / "interrupted"
    proc = _subprocess(data, run, "checkpoint.every_steps=0", fault="step:7:INT")
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130, err[-3000:]
    assert "SIGINT received: stopping after this step with a checkpoint" in err
    stopped = [line for line in err.splitlines() if "stopped by a signal after step" in line]
    assert len(stopped) == 1 and "continue with resume=auto" in stopped[0], err[-3000:]
    step = int(stopped[0].split("after step ")[1].split("/")[0])
    assert 7 <= step < 10 and _steps(run) == [f"step_{step}"] and not (run / "metrics.json").exists()
    done = _subprocess(data, run, "checkpoint.every_steps=0", "resume=auto")
    err = done.communicate(timeout=300)[1]
    assert done.returncode == 0, err[-3000:]
    assert f"loaded checkpoint {run / 'checkpoints' / f'step_{step}'} (step {step})" in err
    final_a, final_b = (
        checkpoint_weights(trained / "checkpoints" / "step_10", tmp_path),
        checkpoint_weights(run / "checkpoints" / "step_10", tmp_path),
    )
    assert final_a.keys() == final_b.keys() and all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    a, b = json.loads((trained / "metrics.json").read_text()), json.loads((run / "metrics.json").read_text())
    assert (b["steps"], b["samples"]) == (a["steps"], a["samples"])
    # bitwise-equal weights; the eval's float sums run in-process for `trained` and in a subprocess here,
    # whose thread pools may split them differently (seen: logloss equal to 1e-10, not bitwise)
    assert (b["auc"], b["logloss"]) == (pytest.approx(a["auc"], rel=1e-9), pytest.approx(a["logloss"], rel=1e-9))


def test_case10_a_second_signal_exits_at_once(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "impatient"
    second = ",".join(f"save_start:{step}:INT" for step in range(7, 11))  # lands in the preemption save
    proc = _subprocess(data, run, "checkpoint.every_steps=0", fault=f"step:7:INT,{second}")
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == -signal.SIGINT, err[-3000:]
    assert "stopped by a signal" not in err and _steps(run) == []  # killed inside the save: nothing half-written


def test_case10_sigterm_to_every_process_of_the_job_with_loader_workers(data: Path, tmp_path: Path) -> None:
    """slurm and Ctrl-C signal the whole process group: DataLoader workers must leave the stop to the
    trainer (a worker killed by SIGTERM used to fail the main process)."""
    run = tmp_path / "group"
    env = {**ENV, "PYTHONPATH": str(ROOT), "TERAREC_FAULT_AT": "step:3:STOP"}  # frozen at step 3: no race
    cmd = [sys.executable, "-m", "terarec.trainer.main", *_args(data, run, "data.num_workers=1")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while _state(proc.pid) != "T" and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    os.killpg(proc.pid, signal.SIGCONT)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "DataLoader worker" not in err and "stopped by a signal after step" in err
