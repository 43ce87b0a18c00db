"""Post-hoc calibrators fitted on (logit, label) pairs of the validation rows, and their use on logits.

- ``temperature``: logit / T, T > 0 minimising the logloss (Newton steps on s = 1/T; convex in s).
- ``platt``: a * logit + b, by scikit-learn's ``LogisticRegression`` on the logit (near-unregularised).
- ``isotonic``: a non-decreasing piecewise-linear map of the probability, by scikit-learn's
  ``IsotonicRegression`` (``out_of_bounds="clip"``); its breakpoints are stored, so applying it needs
  no scikit-learn.

A calibrator is a plain dict (``method`` + parameters), the form ``RUN/calibration.json`` stores it in.
It is applied by ``terarec.serving.calibrated`` (re-exported here), which exports share. Metrics take
logits, so :func:`calibrate_logits` returns the logit of the calibrated probability
(clipped to [EPS, 1 - EPS], isotonic maps can reach 0 and 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terarec.configs.arguments import CALIBRATION_METHODS
from terarec.configs.loader import ConfigError
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.errors import UserError
from terarec.serving.calibrated import calibrate_logits, calibrator_of
from terarec.trainer.metrics import BinaryMetrics

__all__ = [
    "CALIBRATION_FILE",
    "CALIBRATION_METHODS",
    "calibrate_logits",
    "fit_calibrator",
    "fit_temperature",
    "load_calibration",
    "metrics_of",
]
PLATT_C = 1e6  # inverse L2 strength: large, so Platt is the plain maximum-likelihood fit


def fit_calibrator(method: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The calibrator ``method`` fitted on ``logits`` and ``labels`` (shape ``N``, labels 0/1)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    if len(logits) == 0 or len(np.unique(labels)) < 2:
        raise UserError(f"calibration needs validation rows of both labels (got {len(logits)} rows)")
    if method == "temperature":
        return calibrator_of(method, temperature=fit_temperature(logits, labels))
    if method == "platt":
        model = _sklearn("LogisticRegression")(C=PLATT_C, max_iter=1000).fit(logits.reshape(-1, 1), labels)
        return calibrator_of(method, slope=float(model.coef_[0, 0]), intercept=float(model.intercept_[0]))
    if method == "isotonic":
        model = _sklearn("IsotonicRegression")(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(_sigmoid(logits), labels)
        return calibrator_of(
            method, x=[float(x) for x in model.X_thresholds_], y=[float(y) for y in model.y_thresholds_]
        )
    raise UserError(f"--method {method}: one of {', '.join(CALIBRATION_METHODS)}")


def fit_temperature(logits: np.ndarray, labels: np.ndarray, steps: int = 100) -> float:
    """T minimising mean BCE(logits / T, labels): damped Newton on s = 1/T (the loss is convex in s)."""
    s = 1.0
    for _ in range(steps):
        p = _sigmoid(s * logits)
        grad = float(np.mean((p - labels) * logits))
        hess = float(np.mean(p * (1 - p) * logits**2))
        if hess <= 0 or abs(grad) < 1e-12:
            break
        step = grad / hess
        while s - step <= 0 or _logloss(s - step, logits, labels) > _logloss(s, logits, labels) + 1e-15:
            step /= 2  # stay positive and never increase the loss
            if abs(step) < 1e-12:
                return 1.0 / s
        s -= step
    return 1.0 / s


def metrics_of(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> dict[str, float]:
    """``BinaryMetrics`` (the ones eval reports) of one process's arrays."""
    metrics = BinaryMetrics("cpu")
    metrics.update(torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.float64))
    return metrics.compute()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _logloss(s: float, logits: np.ndarray, labels: np.ndarray) -> float:
    z = s * logits
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def _sklearn(name: str) -> Any:
    """A scikit-learn estimator class, imported only when a method needs it."""
    try:
        if name == "IsotonicRegression":
            from sklearn.isotonic import IsotonicRegression

            return IsotonicRegression
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression
    except ImportError:
        raise UserError("platt and isotonic calibration need scikit-learn: pip install 'terarec[baselines]'") from None


CALIBRATION_FILE = "calibration.json"


def load_calibration(run_dir: str | Path, step: int, data: str) -> dict[str, Any]:
    """``RUN/calibration.json``, refused (one line) when missing or fitted on another checkpoint or dataset
    than the ones about to be scored (``step``: the loaded checkpoint's, ``data``: the dataset's path)."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: fit one first with `terarec calibrate --run {run_dir}`")
    try:
        saved = json.loads(path.read_text())
        calibrator, fitted_step = saved["calibrator"], int(saved["step"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: not a terarec calibration ({err})") from None
    if fitted_step != step:
        raise ConfigError(
            f"{path} was fitted on checkpoint step {fitted_step}, this run now loads step {step}: "
            f"re-run `terarec calibrate --run {run_dir}`"
        )
    fingerprint = dataset_fingerprint(data)
    if saved.get("dataset_fingerprint") != fingerprint or (fingerprint is None and saved.get("data") != str(data)):
        raise ConfigError(
            f"{path} was fitted on the dataset {saved.get('data')} (fingerprint {saved.get('dataset_fingerprint')}), "
            f"not on {data} (fingerprint {fingerprint}): re-run `terarec calibrate` with this --data"
        )
    return dict(calibrator)
