"""Post-hoc calibrators (``trainer.calibration``) on a deliberately miscalibrated model: logits 3x too
confident. Each method lowers ECE and logloss; the stored form applies without scikit-learn's objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.cli import main
from terarec.errors import UserError
from terarec.trainer.calibration import (
    CALIBRATION_METHODS,
    calibrate_logits,
    fit_calibrator,
    fit_temperature,
    load_calibration,
    metrics_of,
)


def _overconfident(rows: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true logits, labels drawn from them, the logits scaled by 3: an overconfident model)."""
    rng = np.random.default_rng(seed)
    true = rng.normal(-1.0, 1.2, rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-true))).astype(np.float32)
    return true, labels, 3.0 * true


def test_temperature_recovers_the_scale() -> None:
    _, labels, logits = _overconfident()
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.05)
    # a calibrated model keeps T = 1 (within sampling noise)
    true, labels, _ = _overconfident(seed=1)
    assert fit_temperature(true, labels) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
def test_each_method_lowers_ece_on_held_out_rows(method: str) -> None:
    _, fit_labels, fit_logits = _overconfident(seed=2)
    _, labels, logits = _overconfident(seed=3)  # fitted on one sample, judged on another
    calibrator = fit_calibrator(method, fit_logits, fit_labels)
    assert json.loads(json.dumps(calibrator)) == calibrator  # what calibration.json stores
    before = metrics_of(logits, labels)
    after = metrics_of(calibrate_logits(calibrator, torch.from_numpy(logits)), labels)
    assert before["ece"] > 0.05
    assert after["ece"] < 0.02 < before["ece"] / 3
    assert after["logloss"] < before["logloss"] and after["brier"] < before["brier"]
    if method != "isotonic":  # strictly monotone: ranking, hence AUC, unchanged (up to the AUC histogram, 1e-4)
        assert after["auc"] == pytest.approx(before["auc"], abs=1e-4)


def test_platt_parameters_and_isotonic_breakpoints() -> None:
    _, labels, logits = _overconfident(seed=4)
    platt = fit_calibrator("platt", logits, labels)
    assert platt["slope"] == pytest.approx(1 / 3, rel=0.06) and platt["intercept"] == pytest.approx(0.0, abs=0.08)
    iso = fit_calibrator("isotonic", logits, labels)
    assert np.all(np.diff(iso["x"]) >= 0) and np.all(np.diff(iso["y"]) >= 0)
    probs = 1 / (1 + np.exp(-logits))
    mapped = torch.sigmoid(calibrate_logits(iso, torch.from_numpy(logits))).numpy()
    np.testing.assert_allclose(mapped, np.clip(np.interp(probs, iso["x"], iso["y"]), 1e-7, 1 - 1e-7), atol=1e-9)


def test_one_label_only_is_a_user_error() -> None:
    with pytest.raises(UserError, match="both labels"):
        fit_calibrator("temperature", np.zeros(5), np.zeros(5))


def _saved(run: Path, step: int = 20, data: str = "/nowhere") -> None:
    calibrator = {"method": "temperature", "temperature": 2.0}
    record = {"calibrator": calibrator, "step": step, "data": data, "dataset_fingerprint": None}
    (run / "calibration.json").write_text(json.dumps(record))


def test_load_calibration_refuses_another_checkpoint_or_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="calibration.json not found: fit one first with `terarec calibrate"):
        load_calibration(tmp_path, 20, "/nowhere")
    _saved(tmp_path)
    assert load_calibration(tmp_path, 20, "/nowhere") == {"method": "temperature", "temperature": 2.0}
    with pytest.raises(UserError, match="fitted on checkpoint step 20, this run now loads step 30"):
        load_calibration(tmp_path, 30, "/nowhere")
    with pytest.raises(UserError, match="fitted on the dataset /nowhere"):
        load_calibration(tmp_path, 20, "/elsewhere")


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--run", str(tmp_path), "--method", "bogus"]) == 2
    assert main(["calibrate", "--run", str(tmp_path)]) == 2
    assert main(["calibrate", "--run", str(tmp_path), "--nproc", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("terarec: error:")]
    assert len(errors) == 3 and "invalid choice: 'bogus'" in errors[0] and "config.yaml not found" in errors[1]
    assert errors[2] == "terarec: error: --nproc must be >= 1, got 0"


def test_every_calibration_method_names_its_parameters_once() -> None:
    from terarec.configs.arguments import CALIBRATION_METHODS
    from terarec.serving.calibrated import METHOD_PARAMETERS, check_calibrator

    assert tuple(METHOD_PARAMETERS) == tuple(CALIBRATION_METHODS)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=400)
    labels = (rng.random(400) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    for method, names in METHOD_PARAMETERS.items():
        fitted = fit_calibrator(method, logits, labels)
        assert sorted(fitted) == sorted(["method", *names]) and check_calibrator(fitted) is None
