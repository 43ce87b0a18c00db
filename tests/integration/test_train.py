"""End-to-end ``terarec train`` in one process and under torchrun (2 gloo ranks)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import synthetic_dataset
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from terarec.cli import main
from terarec.configs import load_config

if TYPE_CHECKING:
    from tests.conftest import Torchrun

ROOT = Path(__file__).resolve().parents[2]
TRAIN_ROWS, EVAL_ROWS = 18000, 2000


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=TRAIN_ROWS + EVAL_ROWS, eval_fraction=0.1, seed=1)


def _scalars(tb_dir: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0}).Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_single_process_run_dir_metrics_and_tensorboard(synth_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "dcnv2_synth",
        f"data.path={synth_dir}",
        f"run.dir={run}",
        "train.batch_size=256",
        "train.epochs=1",
        "train.eval_every=30",
        "train.log_every=10",
        "embeddings.max_rows=5000",
    ]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["samples"] == TRAIN_ROWS and metrics["eval_rows"] == EVAL_ROWS  # nothing dropped or duplicated
    assert metrics["steps"] == -(-TRAIN_ROWS // 256) and metrics["world_size"] == 1
    assert metrics["auc"] > 0.65  # the planted signal is learnable within one small epoch
    for key in (
        "logloss",
        "ne",
        "calibration",
        "samples_per_s",
        "params_dense",
        "params_sparse",
        "flops_per_example",
        "wall_s",
    ):
        assert key in metrics
    assert 0 < metrics["data_wait_fraction"] < 1  # the loader's time on the training thread, measured
    assert load_config(str(run / "config.yaml")) == load_config("dcnv2_synth", args[3:])
    scalars = _scalars(run / "tb")
    for tag in (
        "train/loss",
        "train/lr",
        "perf/samples_per_s",
        "eval/auc",
        "eval/ne",
        "eval/logloss",
        "eval/calibration",
    ):
        assert tag in scalars, tag
    assert len(scalars["eval/auc"]) == 3  # steps 30, 60 and the final one (71)
    assert scalars["eval/auc"][-1] == pytest.approx(metrics["auc"])


def test_missing_dataset_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "dcnv2_synth", f"data.path={tmp_path}/nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error:") and "schema.json not found" in err and "\n" not in err


def test_bad_model_key_fails_before_training(synth_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "dcnv2_synth", f"data.path={synth_dir}", "model.args={cross_layers: 2}"]) == 2
    assert "no hyper-parameter 'cross_layers'" in capsys.readouterr().err


def _two_process_args(data: Path, run: Path, *extra: str) -> list[str]:
    """DCNv2 on 2 ranks, batch 256 per rank; the progress bar stays on (the rank-0 log is asserted)."""
    base = ["--config", "dcnv2_synth", f"data.path={data}", f"run.dir={run}", "train.batch_size=256"]
    return [*base, "embeddings.max_rows=5000", "logging.tensorboard=false", *extra]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("sharding", ["table_wise", "column_wise", "data_parallel"])
def test_two_process_torchrun(synth_dir: Path, tmp_path: Path, sharding: str, torchrun: Torchrun) -> None:
    run = tmp_path / "run"
    args = _two_process_args(synth_dir, run, "train.max_steps=20", f"sharding.sharding_type={sharding}")
    cmd = torchrun.command("terarec.trainer.main", args)
    out = subprocess.run(cmd, cwd=ROOT, env=torchrun.env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 20 and metrics["eval_rows"] == EVAL_ROWS
    assert 20 * 256 * 2 - 256 <= metrics["samples"] <= 20 * 256 * 2
    assert sharding in out.stderr  # the plan printed on rank 0 uses the requested sharding type


@pytest.mark.slow
@pytest.mark.distributed
def test_time_budget_stops_every_rank_at_the_same_step(synth_dir: Path, tmp_path: Path, torchrun: Torchrun) -> None:
    """train.max_minutes: checked every log_every steps, agreed over ranks; 3 epochs would be ~100 steps."""
    run = tmp_path / "run"
    args = _two_process_args(synth_dir, run, "train.epochs=3", "train.max_minutes=0.001", "train.log_every=4")
    cmd = torchrun.command("terarec.trainer.main", args)
    out = subprocess.run(cmd, cwd=ROOT, env=torchrun.env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    # stopped at the first check (step 4); the pipeline then trains the batches it already holds
    assert metrics["out_of_time"] is True and 4 <= metrics["steps"] <= 6, metrics
    assert metrics["samples"] == metrics["steps"] * 256 * 2 and metrics["eval_rows"] == EVAL_ROWS
    assert "train.max_minutes=0.001 reached at step 4: stopping" in out.stderr


@pytest.mark.slow
def test_bst_movielens_history_matters(movielens_dir: Path, tmp_path: Path) -> None:
    """The bst_movielens recipe beats itself with the history removed (data.max_history=0)."""
    from terarec.data_pipeline.sequence_sources import prepare_movielens

    prepare_movielens(str(movielens_dir), str(tmp_path / "data"))
    auc = {}
    for history in (20, 0):
        run = tmp_path / f"run{history}"
        assert (
            main(
                [
                    "train",
                    "--config",
                    "bst_movielens",
                    f"data.path={tmp_path / 'data'}",
                    f"run.dir={run}",
                    f"data.max_history={history}",
                ]
            )
            == 0
        )
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["eval_rows"] == 19_978 and metrics["samples"] == 2 * 80_022
        auc[history] = metrics["auc"]
    assert auc[20] >= auc[0] + 0.005, auc
