"""``terarec export --calibrated``: the export carries the run's calibrator (recorded in its manifest), and
``terarec score`` / ``terarec.serving.load`` give the probabilities ``predict --calibrated`` gives; a
missing or stale calibration is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import synthetic_dataset, trained_run

from terarec.cli import main
from terarec.serving import ExportError, load, read_manifest
from terarec.serving.artifact import CALIBRATED_FORMAT, FORMAT, export_format


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=3000, eval_fraction=0.25, valid_fraction=0.2, seed=6)


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory, data, "dlrm_criteo10k", 15)


def _column(path: Path, name: str) -> np.ndarray:
    return pq.read_table(path).column(name).to_numpy()


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("terarec: error:")]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrated_export_scores_equal_predict_calibrated(method: str, run: Path, data: Path, tmp_path: Path) -> None:
    assert main(["calibrate", "--run", str(run), "--method", method]) == 0
    predicted = tmp_path / "predicted.parquet"
    assert main(["predict", "--run", str(run), "--calibrated", "--output", str(predicted)]) == 0
    assert main(["predict", "--run", str(run), "--output", str(tmp_path / "raw.parquet")]) == 0
    export = tmp_path / "export"
    assert main(["export", "--run", str(run), "--output", str(export), "--calibrated"]) == 0
    manifest = json.loads((export / "manifest.json").read_text())
    fitted = json.loads((run / "calibration.json").read_text())
    assert manifest["calibration"]["calibrator"] == fitted["calibrator"]
    assert manifest["format"] == CALIBRATED_FORMAT  # a reader of terarec-export/1 refuses it
    assert manifest["calibration"]["fitted_step"] == fitted["step"] == manifest["step"] == 15
    assert manifest["calibration"]["dataset_fingerprint"] == fitted["dataset_fingerprint"]

    scored = tmp_path / "scored.parquet"
    assert main(["score", "--model", str(export), "--data", str(data), "--output", str(scored)]) == 0
    np.testing.assert_array_equal(_column(scored, "label"), _column(predicted, "label"))
    calibrated = _column(predicted, "probability")
    assert np.abs(_column(scored, "probability") - calibrated).max() <= 1e-5
    assert np.abs(_column(tmp_path / "raw.parquet", "probability") - calibrated).max() > 1e-3  # it did calibrate

    rows = pq.read_table(sorted((data / "eval").glob("*.parquet"))[0]).slice(0, 50)
    served = load(str(export))(rows).double().numpy()
    assert np.abs(served - calibrated[:50]).max() <= 1e-5


@pytest.mark.slow
def test_calibrated_export_refuses_missing_or_stale_calibration(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = run / "calibration.json"
    target.unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--output", str(tmp_path / "a"), "--calibrated"]) == 2
    assert _errors(capsys) == [
        f"terarec: error: {target} not found: fit one first with `terarec calibrate --run {run}`"
    ]
    assert main(["calibrate", "--run", str(run)]) == 0
    stale = json.loads(target.read_text())
    target.write_text(json.dumps({**stale, "step": 7}))  # as if fitted on an earlier checkpoint
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--output", str(tmp_path / "b"), "--calibrated"]) == 2
    assert _errors(capsys) == [
        f"terarec: error: {target} was fitted on checkpoint step 7, this run now loads step 15: "
        f"re-run `terarec calibrate --run {run}`"
    ]
    target.write_text(json.dumps({**stale, "dataset_fingerprint": "other"}))
    assert main(["export", "--run", str(run), "--output", str(tmp_path / "c"), "--calibrated"]) == 2
    assert "was fitted on the dataset" in _errors(capsys)[0]
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.parametrize(
    "calibration, message",
    [
        ({"calibrator": {"method": "beta"}}, "has no method among temperature, platt, isotonic"),
        ({"calibrator": {"method": "platt", "slope": 1.2}}, "platt calibrator has no 'intercept'"),
        ({}, "calibrator None has no method"),
        ({"calibrator": {"method": "platt", "slope": "1.2", "intercept": 0}}, "platt calibrator's 'slope' is '1.2'"),
        ({"calibrator": {"method": "temperature", "temperature": 0}}, "'temperature' is 0, not > 0"),
        ({"calibrator": {"method": "isotonic", "x": [0.1, 0.5], "y": [0.2]}}, "non-empty lists of equal length"),
        ({"calibrator": {"method": "isotonic", "x": [0.5, 0.1], "y": [0.2, 0.3]}}, "finite numbers, 'x' sorted"),
    ],
)
def test_an_export_with_a_broken_calibrator_is_refused(tmp_path: Path, calibration: dict, message: str) -> None:
    manifest = {"format": CALIBRATED_FORMAT, "model": "dlrm", "dtype": "fp32", "transform": {}, "table_sizes": {}}
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "calibration": calibration}))
    with pytest.raises(ExportError, match=message):
        read_manifest(str(tmp_path))


def test_a_calibrated_export_has_its_own_format(tmp_path: Path) -> None:
    """A reader that knows only terarec-export/1 (no calibration) refuses a calibrated export instead of
    serving raw scores; this reader refuses a format that disagrees with the manifest."""
    manifest = {"model": "dlrm", "dtype": "fp32", "transform": {}, "table_sizes": {}}
    calibration = {"calibrator": {"method": "temperature", "temperature": 1.5}}
    assert (
        export_format(manifest) == FORMAT
        and export_format({**manifest, "calibration": calibration}) == CALIBRATED_FORMAT
    )
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format": FORMAT, "calibration": calibration}))
    with pytest.raises(ExportError, match="format 'terarec-export/1' has a calibration"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format": CALIBRATED_FORMAT}))
    with pytest.raises(ExportError, match="format 'terarec-export/2' has no calibration"):
        read_manifest(str(tmp_path))
