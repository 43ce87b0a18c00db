"""``terarec eval`` apart from training (no train split needed), and user errors of torchrun children
shown as one line: ``eval --nproc 2`` and ``launch`` print the workers' ``terarec: error:`` once, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import synthetic_dataset

from terarec.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1"}
TINY = ["embeddings.max_rows=2000", "train.batch_size=64", "logging.progress=false", "logging.tensorboard=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=4000, eval_fraction=0.25, seed=4)


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    args = ["--config", "dcnv2_synth", f"data.path={data}", f"run.dir={run}", "train.max_steps=20", *TINY]
    assert main(["train", *args, "checkpoint.final=true"]) == 0
    return run


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "terarec: error:" in line]


@pytest.mark.slow
def test_eval_needs_no_train_split(run: Path, data: Path, tmp_path: Path) -> None:
    """A dataset with only its eval rows (no train/ directory) evaluates the run's checkpoint exactly
    as the run's own final eval did."""
    eval_only = tmp_path / "eval_only"
    eval_only.mkdir()
    shutil.copy(data / "schema.json", eval_only)
    shutil.copytree(data / "eval", eval_only / "eval")
    assert main(["eval", "--run", str(run), "--data", str(eval_only)]) == 0
    result = json.loads((run / "eval.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert result["data"] == str(eval_only) and result["step"] == trained["steps"] == 20
    assert (result["count"], result["positives"]) == (trained["eval_rows"], trained["eval_positives"]) == (1000, 250)
    assert (result["auc"], result["logloss"], result["ne"]) == (trained["auc"], trained["logloss"], trained["ne"])


@pytest.mark.slow
@pytest.mark.distributed
def test_eval_nproc_2_user_error_is_one_line(run: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "terarec.cli", "eval", "--run", str(run), "--nproc", "2", "bad.key=1"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    # both workers failed; torchrun's ChildFailedError report is held back
    assert done.stderr.splitlines() == [_error_lines(done.stderr)[0]]
    assert done.stderr.startswith("terarec: error: unknown config key 'bad.key'")


@pytest.mark.slow
@pytest.mark.distributed
def test_launch_worker_user_error_is_one_line(data: Path, tmp_path: Path) -> None:
    """An error the workers find only after the process group formed (a CUDA-only sharding on CPU)."""
    args = ["--config", "dcnv2_synth", f"data.path={data}", f"run.dir={tmp_path / 'run'}", *TINY]
    done = subprocess.run(
        [sys.executable, "-m", "terarec.cli", "launch", "--", "train", *args, "sharding.sharding_type=row_wise"],
        cwd=ROOT,
        env={**ENV, "NGPU": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert _error_lines(done.stderr) == [
        "terarec: error: sharding type 'row_wise' needs CUDA; on CPU use data_parallel, table_wise, "
        "column_wise or table_column_wise"
    ]
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr
