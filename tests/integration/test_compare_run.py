"""``terarec compare`` on the real Criteo 10k sample: three models and both baselines, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

from terarec.cli import main


@pytest.fixture(scope="module")
def criteo_10k_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import shared_sample

    from terarec.data_pipeline.criteo import prepare_criteo

    out = tmp_path_factory.mktemp("c10k") / "data"
    prepare_criteo([str(shared_sample("criteo_kaggle_10k/train_10k.tsv"))], str(out), eval_fraction=0.2, progress=False)
    return out


def _compare(data: Path, out: Path, models: str, baselines: str) -> int:
    return main(["compare", "--data", str(data), "--models", models, "--baseline", baselines, "--output", str(out)])


@pytest.mark.slow
def test_compare_models_and_baselines_on_criteo_10k(criteo_10k_prepared: Path, tmp_path: Path) -> None:
    """First 8000 rows train, last 2000 eval (time order). The README of the sample gives LightGBM
    (50 trees, lr 0.05, 31 leaves, categoricals as categories) AUC ~0.728 / logloss ~0.476."""
    out = tmp_path / "cmp"
    assert _compare(criteo_10k_prepared, out, "dlrm,dcnv2,wukong", "lightgbm,logreg") == 0
    report = json.loads((out / "compare.json").read_text())
    by_name = {r["name"]: r["runs"][0] for r in report["results"]}
    assert list(by_name) == ["dlrm", "dcnv2", "wukong", "lightgbm", "logreg"]
    assert {r["eval_rows"] for r in by_name.values()} == {2000}  # one eval split for everyone
    assert {r["samples"] for r in by_name.values()} == {
        8000
    }  # one epoch for the models; every train row for the baselines
    for name in ("dlrm", "dcnv2", "wukong"):
        assert by_name[name]["auc"] >= 0.70, (name, by_name[name])
    assert by_name["lightgbm"]["auc"] == pytest.approx(0.728, abs=0.006) and by_name["lightgbm"][
        "logloss"
    ] == pytest.approx(0.476, abs=0.006)
    assert by_name["logreg"]["auc"] >= 0.68
    assert report["budget"] == {
        "train.batch_size": 128,
        "train.epochs": 1,
        "train.max_steps": 0,
        "train.max_minutes": 0.0,
    }
    assert report["auc_standard_error"] == pytest.approx(0.0146, abs=0.001)  # ~420 positives, ~1580 negatives
    table = (out / "compare.md").read_text()
    assert all(f"| {name} |" in table for name in by_name) and table.count("**") == 2  # best AUC in bold, once
    assert (out / "compare.png").stat().st_size > 10_000
    # a re-run with the same settings reuses every run
    stamps = {p: p.stat().st_mtime for p in out.rglob("metrics.json")}
    assert _compare(criteo_10k_prepared, out, "dlrm", "lightgbm") == 0
    assert all(p.stat().st_mtime == t for p, t in stamps.items())


def test_baseline_scores_equal_sklearn_on_its_own_predictions(criteo_10k_prepared: Path) -> None:
    """The baselines are scored by the trainer's metric code: its AUC equals scikit-learn's exact one."""
    import numpy as np

    from terarec.baselines.tabular import LogisticBaseline, _concat, read_blocks, run_baseline
    from terarec.data_pipeline.schema import DatasetSchema

    schema = DatasetSchema.load(criteo_10k_prepared)
    result = run_baseline("logreg", str(criteo_10k_prepared), seed=0)
    model = LogisticBaseline(seed=0)
    model.fit(_concat(list(read_blocks(str(criteo_10k_prepared), "train", schema))))
    evaluation = _concat(list(read_blocks(str(criteo_10k_prepared), "eval", schema)))
    assert result["auc"] == pytest.approx(roc_auc_score(evaluation.labels, model.predict_logits(evaluation)), abs=1e-4)
    probs = 1 / (1 + np.exp(-model.predict_logits(evaluation)))
    assert result["calibration"] == pytest.approx(probs.sum() / evaluation.labels.sum(), rel=1e-6)
    # the calibration errors compare tabulates beside the models': the same definitions, checked directly
    labels = evaluation.labels.astype(np.float64)
    assert result["brier"] == pytest.approx(float(((probs - labels) ** 2).mean()), rel=1e-6)
    width = np.minimum((probs * 10).astype(int), 9)
    gaps = [(abs(probs[width == b].mean() - labels[width == b].mean()), (width == b).sum()) for b in range(10)]
    gaps = [(gap, n) for gap, n in gaps if n]
    assert result["ece"] == pytest.approx(sum(g * n for g, n in gaps) / len(probs), rel=1e-6)
    assert result["mce"] == pytest.approx(max(g for g, _ in gaps), rel=1e-6)
    assert sum(result["reliability"]["count"]) == len(labels) == result["eval_rows"]
    assert (
        result["features"]["categorical"] == [f"cat_{i}" for i in range(26)] and len(result["features"]["dense"]) == 13
    )
