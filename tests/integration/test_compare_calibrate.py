"""``terarec compare --calibrate`` end to end on a tiny synthetic dataset with a valid split: every model run is
calibrated on its validation rows and evaluated calibrated, the table shows ECE/MCE/Brier before and after,
compare.json keeps both and the reliability bins, and a re-run recomputes nothing. (Baselines' rows of the
table: tests/unit/test_compare_report.py; their ECE/Brier against numpy: test_compare_run.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_dataset

from terarec.cli import main

TINY = ["embeddings.max_rows=2000", "train.batch_size=64", "train.max_steps=15", "logging.tensorboard=false"]


@pytest.mark.slow
def test_compare_calibrate_reports_before_and_after(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = synthetic_dataset(tmp_path_factory, rows=3000, eval_fraction=0.25, valid_fraction=0.2, seed=8)
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(data), "--models", "dcnv2", "--output", str(out)]
    assert main([*args, "--calibrate", "platt", *TINY]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["calibrate"] == "platt"
    (model,) = report["results"]
    assert model["recipe"] == "dcnv2_criteo10k" and model["recipe_choice"] == "size small: 1,650 train rows"
    run, run_dir = model["runs"][0], out / "runs" / "dcnv2" / "seed_0"
    evaluated = json.loads((run_dir / "eval_calibrated.json").read_text())
    fitted = json.loads((run_dir / "calibration.json").read_text())
    assert run["calibrator"] == fitted["calibrator"] == evaluated["calibrator"] and fitted["valid"]["split"] == "valid"
    for key in ("ece", "mce", "brier"):
        assert run[f"calibrated_{key}"] == evaluated[key] and model["mean"][f"calibrated_{key}"] == evaluated[key]
        assert np.isfinite(run[key])
    assert evaluated["auc"] == pytest.approx(run["auc"], abs=1e-4)  # platt is monotone (1e-4: AUC's histogram)
    assert run["calibrated_brier"] != run["brier"]
    for bins in (run["reliability"], run["calibrated_reliability"]):
        assert sum(bins["count"]) == run["eval_rows"] == 750 and len(bins["pred"]) == 10
        assert np.all(np.diff(bins["pred"]) > 0)  # equal-mass bins of sorted scores
    table = (out / "compare.md").read_text()
    assert "| model | ECE | MCE | Brier | calibrator | ECE after | MCE after | Brier after |" in table
    assert f"| dcnv2 | {run['ece']:.4f} | {run['mce']:.4f} | {run['brier']:.4f} | platt |" in table
    assert (out / "compare.png").stat().st_size > 10_000

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.parent != out}
    assert main([*args, "--calibrate", "platt", *TINY]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # runs, calibrations and calibrated evals reused
