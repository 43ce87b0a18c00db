"""Early stopping on a carved validation split: the best checkpoint is kept and restored for the final eval."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from terarec.cli import main
from terarec.data_pipeline.synth import SynthSpec, write_synthetic

METRICS = ("auc", "logloss", "ne", "calibration", "brier", "ece", "mce", "ece_mass", "mce_mass", "eval_rows")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(rows=6000, eval_fraction=0.2, seed=7), out, progress=False)
    return out


def _train(data: Path, run: Path, *extra: str) -> dict:
    args = [
        "train",
        "--config",
        "dcnv2_synth",
        f"data.path={data}",
        f"run.dir={run}",
        "data.valid_fraction=0.25",
        "embeddings.max_rows=5000",
        "optim.sparse_lr=0.3",  # a large sparse LR over-fits the embeddings within a few epochs
        "train.batch_size=64",
        "train.epochs=8",
        "train.eval_every=15",
        "checkpoint.keep_last=1",
        "logging.progress=false",
        "logging.tensorboard=false",
        *extra,
    ]
    assert main(args) == 0
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def stopped(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "early"
    lines: list[str] = []

    def keep(record: logging.LogRecord) -> bool:  # a filter: the CLI replaces the logger's handlers
        lines.append(record.getMessage())
        return True

    logging.getLogger("terarec").addFilter(keep)
    try:
        metrics = _train(synth_dir, run, "train.early_stop=logloss", "train.patience=2")
    finally:
        logging.getLogger("terarec").removeFilter(keep)
    return run, {**metrics, "_log": lines}


@pytest.mark.slow
def test_early_stop_restores_the_best_checkpoint(synth_dir: Path, stopped: tuple[Path, dict], tmp_path: Path) -> None:
    run, metrics = stopped
    record = metrics["early_stop"]
    best = record["best_step"]
    assert record["stopped_early"] and 0 < best < metrics["steps"] < 8 * 57
    assert metrics["steps"] == best + 2 * 15  # patience: two evaluations without improvement
    assert metrics["evaluated_step"] == best and record["valid"]["logloss"] == record["best_value"]
    final_line = [line for line in metrics["_log"] if line.startswith("eval at step")][-1]
    assert final_line.startswith(f"eval at step {best} (best checkpoint, trained to step {metrics['steps']}):")
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert kept == sorted({f"step_{best}", f"step_{metrics['steps']}"})  # keep_last=1 never prunes the best
    # a run that simply stops at the best step evaluates the same weights: the same eval numbers
    plain = _train(synth_dir, tmp_path / "plain", f"train.max_steps={best}")
    for key in METRICS:
        assert metrics[key] == pytest.approx(plain[key], rel=1e-12, abs=1e-12), key


@pytest.mark.slow
def test_early_stop_continues_across_resume(synth_dir: Path, stopped: tuple[Path, dict], tmp_path: Path) -> None:
    """Interrupted between evaluations, resume=auto keeps the best-so-far value and the patience count."""
    _, uninterrupted = stopped
    run = tmp_path / "resumed"
    pause = uninterrupted["early_stop"]["best_step"] + 15 + 7  # after one non-improving evaluation
    _train(synth_dir, run, "train.early_stop=logloss", "train.patience=2", f"train.max_steps={pause}")
    resumed = _train(synth_dir, run, "train.early_stop=logloss", "train.patience=2", "resume=auto")
    assert resumed["early_stop"] == uninterrupted["early_stop"]
    for key in (*METRICS, "steps", "evaluated_step"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-12, abs=1e-12), key


@pytest.mark.slow
def test_eval_of_an_early_stopped_run_scores_the_best_checkpoint(stopped: tuple[Path, dict]) -> None:
    """``terarec eval`` reports what the run's own final eval reported: the best weights, not the last."""
    run, metrics = stopped
    assert main(["eval", "--run", str(run)]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["step"] == metrics["early_stop"]["best_step"] and result["selected_by"] == "early_stop"
    for key in ("auc", "logloss", "ne", "calibration"):
        assert result[key] == pytest.approx(metrics[key], rel=1e-12, abs=1e-12), key


@pytest.mark.slow
def test_eval_scores_last_weights_chosen_after_the_final_checkpoint(tmp_path: Path) -> None:
    """A run ending off the eval cadence (25 steps, eval every 10) lets its last weights win after the final
    checkpoint recorded best_step=20: eval must load what metrics.json scored (RUN/selected.json)."""
    data, run = tmp_path / "synth", tmp_path / "run"
    write_synthetic(SynthSpec(rows=3000, eval_fraction=0.2, seed=3), data, progress=False)
    args = ["train", "--config", "dcnv2_synth", f"data.path={data}", f"run.dir={run}", "embeddings.max_rows=500"]
    args += ["train.batch_size=64", "train.max_steps=25", "train.eval_every=10", "train.early_stop=logloss"]
    args += ["train.patience=5", "data.valid_fraction=0.2", "logging.progress=false", "logging.tensorboard=false"]
    assert main([*args, "checkpoint.final=true"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    trainer_state = json.loads((run / "checkpoints" / "step_25" / "trainer.json").read_text())
    assert metrics["evaluated_step"] == 25 and trainer_state["early_stop"]["best_step"] == 20  # the repro's case
    assert json.loads((run / "selected.json").read_text()) == {"step": 25, "selected_by": "early_stop"}
    assert main(["eval", "--run", str(run)]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["step"] == metrics["evaluated_step"] and result["selected_by"] == "early_stop"
    assert result["auc"] == pytest.approx(metrics["auc"], rel=1e-12, abs=1e-12)
