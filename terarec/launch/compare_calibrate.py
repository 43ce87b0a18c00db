"""``terarec compare --calibrate METHOD``: post-hoc calibration of every finished model run, before/after.

Off by default: calibrating needs each run's final checkpoint (``checkpoint.final=true``, which changes the
runs' identity, so a plain compare's runs are not reused by a calibrated one) and validation rows (the
dataset's valid split or ``data.valid_fraction``), which many datasets lack; a compare without them must
keep working. With it, each model run gets, in its own directory,

- ``terarec calibrate --run RUN --method METHOD``: the calibrator fitted on the validation rows only;
- ``terarec eval --run RUN --calibrated``: the eval split's metrics of the calibrated scores;

both as child processes (logged to ``RUN/calibrate.log``), and its metrics gain ``calibrated_*`` keys
(``compare_report``). A run whose calibration on disk is the one asked for (same method, the calibrated
eval made with that very calibrator) is not recomputed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from terarec.configs.arguments import CALIBRATION_KEYS, CALIBRATION_METHODS
from terarec.configs.loader import ConfigError, has_validation_rows
from terarec.configs.schema import Config
from terarec.errors import RunFailedError, UserError
from terarec.launch.compare_report import CALIBRATED
from terarec.launch.torchrun import child_user_error, run_child

log = logging.getLogger("terarec")
KEPT = ("auc", "logloss", "ne", "calibration", *CALIBRATION_KEYS, "reliability")  # a calibrated eval's keys


def check_method(method: str | None) -> None:
    """``--calibrate METHOD`` names a method ``terarec calibrate`` knows (None: off)."""
    if method is not None and method not in CALIBRATION_METHODS:
        raise ConfigError(f"--calibrate {method}: one of {', '.join(CALIBRATION_METHODS)}")


def check_valid_rows(data: str, name: str, cfg: Config, rows: dict[str, int]) -> None:
    """``--calibrate`` fits on validation rows only: stop in one line before any run when ``name`` has none."""
    if not has_validation_rows(cfg, rows):
        raise ConfigError(
            f"compare --calibrate: --data {data} has no validation rows for {name} (no '{cfg.data.valid_split}' split, "
            "data.valid_fraction=0): prepare it with --valid-fraction F, or pass data.valid_fraction=F"
        )


def _done(run_dir: Path, method: str) -> dict[str, Any] | None:
    """The calibrated eval on disk when it was made with a ``method`` calibrator fitted for this run."""
    try:
        fitted = json.loads((run_dir / "calibration.json").read_text())
        evaluated = json.loads((run_dir / "eval_calibrated.json").read_text())
    except (OSError, ValueError):
        return None
    same = fitted.get("calibrator", {}).get("method") == method and evaluated.get("calibrator") == fitted["calibrator"]
    return evaluated if same and evaluated.get("step") == fitted.get("step") else None


def _child(run_dir: Path, command: list[str], what: str) -> None:
    log_file = run_dir / "calibrate.log"
    code = run_child([sys.executable, "-m", "terarec.cli", *command], log_file)
    if code != 0:
        mistake = child_user_error(log_file)
        if mistake is not None:
            raise UserError(f"{what}: {mistake} (log: {log_file})")
        raise RunFailedError(f"{what} failed (exit {code}); see {log_file}")


def calibrate_run(run_dir: Path, method: str, nproc: int, what: str) -> dict[str, Any]:
    """``calibrated_*`` metrics of the run in ``run_dir`` (calibrated on valid, evaluated on eval) and the
    calibrator's fit summary (valid rows, ECE/logloss before and after on them)."""
    evaluated = _done(run_dir, method)
    if evaluated is None:
        log.info("%s: calibrate (%s) on the validation rows, then eval --calibrated", what, method)
        common = ["--run", str(run_dir), "--nproc", str(nproc)]
        _child(run_dir, ["calibrate", *common, "--method", method], f"{what} calibrate")
        _child(run_dir, ["eval", *common, "--calibrated"], f"{what} eval --calibrated")
        evaluated = json.loads((run_dir / "eval_calibrated.json").read_text())
    fitted = json.loads((run_dir / "calibration.json").read_text())
    return {
        **{CALIBRATED + key: evaluated[key] for key in KEPT if key in evaluated},
        "calibrator": fitted["calibrator"],
        "calibration_fit": {key: fitted[key] for key in ("step", "valid", "before", "after") if key in fitted},
    }
