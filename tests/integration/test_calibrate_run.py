"""``terarec calibrate`` end to end on a tiny run: fitted on the valid split only (a copy of the dataset with
its eval labels flipped gives the same calibration.json), applied by ``eval --calibrated`` and
``predict --calibrated``, refused in one line without a calibration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import synthetic_dataset, trained_run

from terarec.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=4000, eval_fraction=0.25, valid_fraction=0.2, seed=5)


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory, data, "dcnv2_synth", 20)


def _poisoned_eval(data: Path, out: Path) -> Path:
    """A copy of ``data`` (manifest included, so the same fingerprint) with every eval label flipped."""
    shutil.copytree(data, out)
    for part in sorted((out / "eval").glob("*.parquet")):
        table = pq.read_table(part)
        index = table.schema.get_field_index("label")
        field = table.schema.field(index)
        flipped = pa.array(1 - table.column(index).to_numpy(), type=field.type)
        pq.write_table(table.set_column(index, field, flipped), part)
    return out


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("terarec: error:")]


@pytest.mark.slow
def test_calibrate_reads_valid_only_and_eval_applies_it(
    run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--run", str(run), "--calibrated"]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"terarec: error: {run / 'calibration.json'} not found: fit one first with `terarec calibrate --run {run}`"
    ]
    assert main(["calibrate", "--run", str(run), "--method", "isotonic"]) == 0
    fitted = json.loads((run / "calibration.json").read_text())
    assert fitted["step"] == 20 and fitted["calibrator"]["method"] == "isotonic"
    assert fitted["valid"]["split"] == "valid" and fitted["valid"]["count"] == 800  # 20% of 4000 rows
    assert fitted["after"]["ece"] < fitted["before"]["ece"]  # isotonic is calibrated on the rows it fits
    assert fitted["after"]["logloss"] < fitted["before"]["logloss"]

    poisoned = _poisoned_eval(data, tmp_path / "poisoned")
    assert main(["eval", "--run", str(run), "--data", str(poisoned)]) == 0
    poisoned_auc = json.loads((run / "eval.json").read_text())["auc"]
    assert main(["eval", "--run", str(run)]) == 0
    clean_auc = json.loads((run / "eval.json").read_text())["auc"]
    assert main(["calibrate", "--run", str(run), "--method", "isotonic", "--data", str(poisoned)]) == 0
    again = json.loads((run / "calibration.json").read_text())
    assert again.pop("data") == str(poisoned)
    assert again == {key: value for key, value in fitted.items() if key != "data"}
    assert clean_auc > 0.6 and poisoned_auc == pytest.approx(1 - clean_auc, abs=1e-3)  # the poison is real

    assert main(["calibrate", "--run", str(run), "--method", "temperature"]) == 0
    assert main(["eval", "--run", str(run), "--calibrated"]) == 0
    calibrated = json.loads((run / "eval_calibrated.json").read_text())
    plain = json.loads((run / "eval.json").read_text())
    assert calibrated["calibrator"]["method"] == "temperature" and calibrated["count"] == plain["count"] == 1000
    assert calibrated["auc"] == pytest.approx(plain["auc"], abs=1e-4)  # a temperature keeps the ranking


@pytest.mark.slow
def test_predict_calibrated_maps_the_probabilities(run: Path, tmp_path: Path) -> None:
    assert main(["calibrate", "--run", str(run), "--method", "platt"]) == 0
    platt = json.loads((run / "calibration.json").read_text())["calibrator"]
    assert main(["predict", "--run", str(run), "--output", str(tmp_path / "plain.parquet")]) == 0
    assert main(["predict", "--run", str(run), "--output", str(tmp_path / "cal.parquet"), "--calibrated"]) == 0
    plain = pq.read_table(tmp_path / "plain.parquet").column("probability").to_numpy()
    calibrated = pq.read_table(tmp_path / "cal.parquet").column("probability").to_numpy()
    logits = np.log(plain) - np.log1p(-plain)
    expected = 1 / (1 + np.exp(-(platt["slope"] * logits + platt["intercept"])))
    np.testing.assert_allclose(calibrated, expected, rtol=1e-6)


@pytest.mark.slow
def test_another_checkpoint_is_refused(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "run"
    shutil.copytree(run, stale)
    record = json.loads((stale / "calibration.json").read_text())
    (stale / "calibration.json").write_text(json.dumps({**record, "step": 7}))
    assert main(["eval", "--run", str(stale), "--calibrated"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "was fitted on checkpoint step 7, this run now loads step 20" in line
