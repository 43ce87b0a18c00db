"""A healthy 2-process run prints progress and results, and not one warning line.

Python warnings are not hidden by the environment here (no PYTHONWARNINGS): what a user would see
from ``make demo`` is what is counted. The recipe mixes data-parallel, table-wise and column-wise
tables, then resumes from the checkpoint, so each path that used to warn is taken.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import synthetic_dataset

from terarec.launch.torchrun import torchrun_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=12000, eval_fraction=0.1, seed=4)


def _train(data: Path, run: Path, *extra: str) -> list[str]:
    """Every output line (stdout and stderr) of a 2-process ``terarec.trainer.main`` run."""
    args = [
        "--config",
        "dcnv2_synth",
        f"data.path={data}",
        f"run.dir={run}",
        "embeddings.max_rows=20000",
        "train.batch_size=256",
        "train.log_every=10",
        "train.eval_every=10",
        "sharding.per_table={cat_0: data_parallel, cat_1: data_parallel, cat_2: column_wise, cat_3: table_wise}",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", OMP_NUM_THREADS="1")
    command = torchrun_command("terarec.trainer.main", args, nproc_per_node=2)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return (done.stdout + done.stderr).splitlines()


def _warning_lines(lines: list[str]) -> list[str]:
    """Lines that say warn, or carry torch's glog-style warning prefix (``W1201 07:54:49.846000 ...``)."""
    return [line for line in lines if re.search(r"warn", line, re.IGNORECASE) or re.match(r"W\d{4} ", line)]


@pytest.mark.slow
@pytest.mark.distributed
def test_healthy_run_prints_progress_and_results_and_no_warning(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    lines = _train(synth_dir, run, "train.max_steps=20")
    assert _warning_lines(lines) == []
    text = "\n".join(lines)
    plan = re.search(r"INFO sharding plan: 26 tables over 2 ranks: (.*)", text)
    assert plan and "data_parallel (dense)" in plan[1] and "column_wise (fused)" in plan[1], text
    for expected in (
        "INFO step 10/20 loss",
        "INFO step 20/20 loss",
        "INFO eval at step 10: auc",
        "INFO done: 20 steps",
    ):
        assert expected in text, expected
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["steps"], metrics["world_size"], metrics["samples"]) == (20, 2, 20 * 2 * 256)
    assert f"final eval auc {metrics['auc']:.4f}" in text  # the result line reports what was written

    # loads the step-20 checkpoint; one epoch is 22 steps (10,800 rows over 2 ranks at 256), so 2 epochs let 30 stop it
    resumed = _train(synth_dir, run, "train.max_steps=30", "train.epochs=2", "resume=auto")
    assert _warning_lines(resumed) == []
    assert any("INFO loaded checkpoint" in line and "step_20" in line for line in resumed)
    assert any("INFO done: 30 steps" in line for line in resumed)
    assert not any("Traceback" in line for line in lines + resumed)

    # what a user runs next: export the run and score a split with the export
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    for command in (
        ["export", "--run", str(run), "--output", str(tmp_path / "export")],
        [
            "score",
            "--model",
            str(tmp_path / "export"),
            "--data",
            str(synth_dir),
            "--output",
            str(tmp_path / "scores.parquet"),
        ],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "terarec.cli", *command], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0 and _warning_lines((done.stdout + done.stderr).splitlines()) == [], done.stderr
