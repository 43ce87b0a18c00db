"""Launch paths as the README shows them: the torchx CLI on ``local_cwd`` and ``scripts/run_local.sh``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from terarec.data_pipeline.synth import SynthSpec, write_synthetic

REPO = Path(__file__).resolve().parents[2]
# 4,800 train rows over 2 ranks at batch 512 are 5 steps an epoch: 2 epochs so that max_steps=6 is what stops
TINY_RUN = [
    "train.epochs=2",
    "train.max_steps=6",
    "embeddings.max_rows=2000",
    "logging.progress=false",
    "checkpoint.final=false",
]


@pytest.mark.slow
@pytest.mark.distributed
def test_torchx_cli_runs_the_component_on_local_cwd_with_2_processes(tmp_path: Path) -> None:
    """What the README shows: ``torchx run -s local_cwd`` in the repo, ``.torchxconfig`` supplying the
    component and its interpreter, ``-j 1x2`` the job size."""
    write_synthetic(SynthSpec(rows=6000, eval_fraction=0.2, seed=5), tmp_path / "data", progress=False)
    torchx = Path(sys.executable).parent / "torchx"
    done = subprocess.run(
        [
            str(torchx),
            "run",
            "-s",
            "local_cwd",
            "-cfg",
            f"log_dir={tmp_path / 'logs'}",
            "--wait",
            "--",
            "-j",
            "1x2",
            "--python",
            sys.executable,
            "--",
            "--config",
            "dcnv2_synth",
            f"data.path={tmp_path / 'data'}",
            f"run.dir={tmp_path / 'run'}",
            *TINY_RUN,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SUCCEEDED" in done.stdout + done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 6


@pytest.mark.slow
@pytest.mark.distributed
def test_run_local_script_trains_ngpu_processes(tmp_path: Path) -> None:
    write_synthetic(SynthSpec(rows=6000, eval_fraction=0.2, seed=6), tmp_path / "data", progress=False)
    env = {**os.environ, "NGPU": "2", "PYTHON": sys.executable}
    done = subprocess.run(
        [
            "bash",
            "scripts/run_local.sh",
            "--config",
            "dcnv2_synth",
            f"data.path={tmp_path / 'data'}",
            f"run.dir={tmp_path / 'run'}",
            *TINY_RUN,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 6


def test_run_local_script_rejects_a_bad_ngpu_in_one_line() -> None:
    env = {**os.environ, "NGPU": "two", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "scripts/run_local.sh", "--config", "dcnv2_synth"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "terarec: error: environment variable NGPU='two' must be an integer >= 1"
