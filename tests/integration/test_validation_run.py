"""Config checks that need a dataset: the epochs / max_steps budget, batch sizes against a rank's
rows, keep_last, and the embedding-dim rule against the kernels it protects."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from terarec.cli import main
from terarec.configs import load_config
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.trainer.main import run_training

TRAIN_ROWS, EVAL_ROWS, BATCH = 1800, 200, 300  # one epoch = 6 steps
TINY = ["embeddings.max_rows=500", "logging.progress=false", "logging.tensorboard=false", "checkpoint.final=false"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    write_synthetic(SynthSpec(rows=TRAIN_ROWS + EVAL_ROWS, eval_fraction=0.1, seed=7), out, progress=False)
    return out


def _train(data: Path, run: Path, *overrides: str) -> int:
    args = [f"data.path={data}", f"run.dir={run}", f"train.batch_size={BATCH}", *TINY, *overrides]
    return main(["train", "--config", "dcnv2_synth", *args])


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "epochs, max_steps, steps",
    [(1, 18, 6), (3, 8, 8), (2, 0, 12)],  # epochs first; max_steps first; no step cap
)
def test_a_run_stops_at_epochs_or_max_steps_whichever_comes_first(
    tiny_data: Path, tmp_path: Path, epochs: int, max_steps: int, steps: int
) -> None:
    run = tmp_path / "run"
    assert _train(tiny_data, run, f"train.epochs={epochs}", f"train.max_steps={max_steps}") == 0
    metrics = _metrics(run)
    assert metrics["steps"] == steps and metrics["samples"] == steps * BATCH  # 1,800 rows: 6 full batches an epoch


@pytest.mark.slow
def test_a_train_batch_larger_than_the_data_fails_before_training(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(tiny_data, run, "train.batch_size=10000000") == 2
    assert capsys.readouterr().err == (
        "terarec: error: train.batch_size=10000000 exceeds the 1,800 train rows per rank "
        "(1,800 rows in 'train' over 1 rank): use at most 1,800\n"
    )
    assert not run.exists()


@pytest.mark.slow
def test_a_large_eval_batch_is_clamped_and_every_eval_row_is_scored(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(tiny_data, run, "train.max_steps=2", "train.eval_batch_size=100000") == 0
    err = capsys.readouterr().err
    said = [line.split(" INFO ", 1)[1] for line in err.splitlines() if "train.eval_batch_size" in line]
    assert said == [
        "train.eval_batch_size=100000 is more than the 200 eval rows per rank (200 in 'eval' over 1 rank): "
        "eval batches of 200"
    ]
    assert "warn" not in err.lower()  # nothing is wrong: the metrics do not depend on the eval batch size
    assert _metrics(run)["eval_rows"] == EVAL_ROWS
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["eval_batch_size"] == 100000  # as asked


@pytest.mark.slow
def test_keep_last_zero_is_refused_and_keep_last_one_keeps_the_newest(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = tmp_path / "refused"
    assert _train(tiny_data, refused, "checkpoint.every_steps=2", "checkpoint.keep_last=0") == 2
    assert "config key 'checkpoint.keep_last' must be >= 1, got 0" in capsys.readouterr().err
    assert not refused.exists()
    kept = tmp_path / "kept"
    assert _train(tiny_data, kept, "checkpoint.every_steps=2", "checkpoint.keep_last=1") == 0
    assert [p.name for p in (kept / "checkpoints").iterdir()] == ["step_4"]  # saved at 2 and 4 (final=false)


@pytest.mark.slow
def test_the_embedding_dim_rule_is_the_kernels_rule(tiny_data: Path, tmp_path: Path) -> None:
    """Dims the config accepts train on the fused kernel; 6, which it refuses, fails inside torchrec."""
    for dim in (4, 12):
        run = tmp_path / f"dim{dim}"
        assert (
            _train(tiny_data, run, f"embeddings.dim={dim}", "train.max_steps=1", "sharding.compute_kernel=fused") == 0
        )
        assert _metrics(run)["steps"] == 1
    cfg = load_config("dcnv2_synth", [f"data.path={tiny_data}", f"run.dir={tmp_path / 'dim6'}", *TINY])
    cfg = dataclasses.replace(cfg, embeddings=dataclasses.replace(cfg.embeddings, dim=6))  # past the loader's check
    with pytest.raises(AssertionError, match="local_cols=6 not divisible by 4"):
        run_training(cfg)
