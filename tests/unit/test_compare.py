"""``terarec compare`` set-up (checked before any run) and the baselines' building blocks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from terarec.baselines.tabular import CategoryCodes
from terarec.cli import main
from terarec.launch.compare import auc_standard_error, render_markdown


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    (tmp_path / "schema.json").write_text(json.dumps({"dense": [], "sparse": []}))
    return tmp_path


def test_auc_standard_error_matches_hanley_mcneil() -> None:
    # at AUC 0.5 the formula is exactly the Mann-Whitney null variance (n_pos + n_neg + 1) / (12 n_pos n_neg)
    assert auc_standard_error(0.5, 100, 300) == pytest.approx(np.sqrt(401 / (12 * 100 * 300)), rel=1e-12)
    # Hanley & McNeil (1982)'s worked example: A = 0.893, 51 abnormal and 58 normal cases, SE about 0.032
    assert auc_standard_error(0.893, 51, 58) == pytest.approx(0.032, abs=1e-3)
    assert np.isnan(auc_standard_error(0.7, 0, 10))


def test_unequal_budgets_are_refused_naming_the_difference(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # dlrm -> dlrm_criteo10k (batch 128), dcnv2_synth (batch 512)
    assert main(["compare", "--data", str(dataset), "--models", "dlrm,dcnv2_synth"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error: compare: the models' budgets differ (dlrm: train.batch_size=128")
    assert "dcnv2_synth: train.batch_size=512" in err and "\n" not in err
    # the same override for every model makes them equal: then only the (bad) model key would fail
    assert (
        main(
            ["compare", "--data", str(dataset), "--models", "dlrm,dcnv2_synth", "train.batch_size=256", "model.bogus=1"]
        )
        == 2
    )
    assert "unknown config key 'model.bogus'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--baseline", "xgboost"], "--baseline xgboost: unknown (choose from lightgbm, logreg)"),
        (["--seeds", "0,one"], "--seeds '0,one': expected a comma list of integers"),
        (["--models", "dlrm,dlrm"], "named twice"),
        (["--models", "no_such_recipe"], "no_such_recipe"),
    ],
)
def test_bad_compare_arguments_fail_in_one_line(
    dataset: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = ["compare", "--data", str(dataset), "--models", "dlrm", *argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_dataset_and_missing_baseline_library(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["compare", "--data", str(tmp_path / "nope"), "--models", "dlrm"]) == 2
    assert "no schema.json there" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lightgbm" else real(name, *a))
    assert main(["compare", "--data", str(dataset), "--models", "dlrm", "--baseline", "lightgbm"]) == 2
    assert "needs the 'lightgbm' package: pip install 'terarec[baselines]'" in capsys.readouterr().err


def _counted(directory: Path, rows: dict[str, int]) -> Path:
    directory.mkdir()
    (directory / "schema.json").write_text(json.dumps({"dense": [], "sparse": [], "rows": rows}))
    return directory


@pytest.mark.parametrize("rows", [{"train": 8000}, {"train": 8000, "eval": 0}])
def test_data_without_eval_rows_stops_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: dict[str, int]
) -> None:
    data, out = _counted(tmp_path / "data", rows), tmp_path / "out"
    assert main(["compare", "--data", str(data), "--models", "dlrm", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"terarec: error: compare: --data {data} has no eval rows in split 'eval'")
    assert err.count("\n") == 1 and not (out / "runs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--nproc", "2"],
            "train.batch_size=128 exceeds the 100 train rows per rank (200 rows in 'train' over 2 ranks)",
        ),
        (["--seeds", "0,1,0"], "--seeds '0,1,0': a seed is named twice"),
        (["--seeds", "-1"], "config key 'train.seed' must be >= 0, got -1"),
        (["train.log_every=0"], "config key 'train.log_every' must be >= 1, got 0"),
        (["--nproc", "0"], "--nproc >= 1"),
    ],
)
def test_compare_inputs_are_validated_like_a_training_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    data, out = _counted(tmp_path / "data", {"train": 200, "eval": 50}), tmp_path / "out"
    assert main(["compare", "--data", str(data), "--models", "dlrm", "--output", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (out / "runs").exists()


def test_category_codes_by_frequency_unknown_ids_missing() -> None:
    train = np.array([[7, 1], [7, 1], [7, 2], [9, 3], [5, 3]], dtype=np.uint32)
    codes = CategoryCodes(train, max_categories=2)
    # feature 0: 7 (x3) -> 0, then the tie 5/9 (x1) keeps the smaller id 5 -> 1; 9 is past the cap
    assert codes.encode(np.array([[7, 1], [5, 3], [9, 2], [123, 8]], dtype=np.uint32)).tolist() == [
        [0, 0],
        [1, 1],
        [-1, -1],
        [-1, -1],
    ]
    assert codes.sizes == [2, 2]


def test_markdown_marks_the_best_auc_and_states_the_noise() -> None:
    run = {
        "auc": 0.72,
        "logloss": 0.48,
        "ne": 0.9,
        "calibration": 1.0,
        "params_dense": 10,
        "params_sparse": 20,
        "flops_per_example": 30,
        "samples_per_s": 1000.0,
        "wall_s": 2.0,
    }
    results = [
        {"name": n, "kind": k, "recipe": n, "runs": [run, run], "mean": {**run, "auc": a}, "std": {**run, "auc": 0.001}}
        for n, k, a in (("dlrm", "model", 0.72), ("lightgbm", "baseline", 0.73))
    ]
    report = {
        "data": "d",
        "seeds": [0, 1],
        "nproc": 1,
        "overrides": [],
        "train_samples": 8000,
        "eval_rows": 2000,
        "auc_standard_error": 0.0116,
        "baseline_max_train_rows": 100,
        "budget": {"train.batch_size": 128},
        "results": results,
    }
    text = render_markdown(report)
    assert "| dlrm | dlrm | 0.7200 ± 0.0010 |" in text and "| lightgbm | lightgbm | **0.7300 ± 0.0010** |" in text
    assert "standard error of about 0.0116" in text and "`train.batch_size=128`" in text and "Warning" not in text
    assert "before converging" not in text
    results[1]["runs"] = [{**run, "converged": False, "n_iter": 100}] * 2
    assert "lightgbm: the solver stopped at its iteration cap (100) before converging." in render_markdown(report)
    report["warning"] = "runs were scored on different numbers of eval rows [1999, 2000]: the rows are not comparable"
    assert "**Warning: runs were scored on different numbers of eval rows [1999, 2000]" in render_markdown(report)
