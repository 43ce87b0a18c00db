"""``terarec calibrate``: fit a post-hoc calibrator on a run's validation rows; writes ``RUN/calibration.json``.

    terarec calibrate --run RUN [--method temperature|platt|isotonic] [--data DIR] [--nproc N]
    torchrun --nproc_per_node N -m terarec.trainer.calibrate --run-dir RUN [--method M] [...]

The checkpoint is the one ``terarec eval`` loads (``evaluate._load_model``). Only the validation rows
(``trainer.setup.validation_rows``: the dataset's valid split or the run's ``data.valid_fraction``
carve-out) are read, never the eval split, so the eval metrics of ``eval --calibrated`` stay an honest
held-out estimate. Every rank scores its share; the (logit, label) pairs are gathered and each rank fits
the same calibrator (the math is ``trainer.calibration``); rank 0 writes the file.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from terarec.batch import real_rows
from terarec.configs.arguments import add_calibrate_arguments
from terarec.configs.loader import ConfigError
from terarec.data_pipeline.loader import BatchLoader
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetSchema
from terarec.errors import parse_and_run
from terarec.trainer.calibration import (
    CALIBRATION_FILE,
    CALIBRATION_METHODS,
    calibrate_logits,
    fit_calibrator,
    metrics_of,
)
from terarec.trainer.evaluate import checkpoint_session, eval_config
from terarec.trainer.evaluator import forward_outputs, forward_pipeline
from terarec.trainer.setup import valid_loader, validation_rows

log = logging.getLogger("terarec")
REPORTED = ("ece", "mce", "ece_mass", "brier", "logloss", "calibration", "auc")  # valid metrics before/after


def score_rows(dmp: Any, loader: BatchLoader, device: torch.device, bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of this rank's real rows of ``loader`` (float64 and float32, shape ``N``)."""
    logits_out, labels_out = [], []
    for logits, labels, _ in forward_outputs(dmp, loader, forward_pipeline(dmp, device), bf16):
        keep = real_rows(labels).cpu()
        logits_out.append(logits.detach().float().cpu()[keep].double().numpy())
        labels_out.append(labels.cpu()[keep].float().numpy())
    if not logits_out:
        return np.zeros(0, np.float64), np.zeros(0, np.float32)
    return np.concatenate(logits_out), np.concatenate(labels_out)


def _gathered(logits: np.ndarray, labels: np.ndarray, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's (logits, labels), concatenated in rank order, on every rank."""
    if world_size == 1:
        return logits, labels
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, (logits, labels))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check_valid_rows(asked: float, saved: float) -> None:
    """Refuse a ``data.valid_fraction`` override that differs from the run's: those rows were trained on."""
    if asked != saved:
        raise ConfigError(
            f"data.valid_fraction={asked} differs from the run's {saved}: the calibrator would be fitted on "
            f"rows the model trained on (prepare the dataset with --valid-fraction instead)"
        )


def run_calibrate(
    run: str, method: str = "temperature", data: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Fit ``method`` on ``run``'s validation rows; returns (and on rank 0 writes) ``RUN/calibration.json``."""
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"--method {method}: one of {', '.join(CALIBRATION_METHODS)}")
    cfg = eval_config(run, data, overrides)
    _check_valid_rows(cfg.data.valid_fraction, eval_config(run, data).data.valid_fraction)
    schema = DatasetSchema.load(cfg.data.path)
    found = validation_rows(cfg, schema)
    if found is None:
        raise ConfigError(
            f"{cfg.data.path} has no validation rows for {run}: prepare it with --valid-fraction, or train with "
            f"data.valid_fraction > 0"
        )
    with checkpoint_session(cfg, schema) as session:
        info = session.info
        loader = valid_loader(cfg, schema, session.built.table_sizes, info, session.built.vocabularies)
        assert loader is not None  # validation_rows found rows above
        dmp, loaded = session.load()
        logits, labels = _gathered(*score_rows(dmp, loader, info.device, cfg.train.bf16), info.world_size)
        calibrator = fit_calibrator(method, logits, labels)
        after = calibrate_logits(calibrator, torch.from_numpy(logits))
        before_metrics, after_metrics = metrics_of(logits, labels), metrics_of(after, labels)
        result = {
            "calibrator": calibrator,
            "checkpoint": loaded["path"],
            "step": loaded["step"],
            "data": cfg.data.path,
            "dataset_fingerprint": dataset_fingerprint(cfg.data.path),
            "valid": {"split": found[0], "rows": found[1], "count": len(labels), "positives": int(labels.sum())},
            "before": {key: before_metrics[key] for key in REPORTED},
            "after": {key: after_metrics[key] for key in REPORTED},
        }
        if info.is_main:
            (Path(cfg.run.dir) / CALIBRATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
            log.info(
                "calibrate %s (%s) on %d valid rows: ECE %.4f -> %.4f, logloss %.5f -> %.5f -> %s",
                loaded["path"],
                method,
                len(labels),
                before_metrics["ece"],
                after_metrics["ece"],
                before_metrics["logloss"],
                after_metrics["logloss"],
                Path(cfg.run.dir) / CALIBRATION_FILE,
            )
        return result


@record
def main(argv: list[str] | None = None) -> int:
    """torchrun's entry for ``terarec calibrate --nproc N``, inside the one error boundary."""
    return parse_and_run(
        "terarec.trainer.calibrate",
        "fit a calibrator on valid rows",
        lambda parser: add_calibrate_arguments(parser, run_flag="--run-dir"),
        lambda args: run_calibrate(args.run, args.method, args.data, args.overrides),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
