"""compare's recipe picker (by the dataset's train rows, --recipe-size, an explicit recipe), the calibration
table (before/after) and the reliability panel of compare.png, and ``--calibrate``'s checks before any run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from terarec.cli import main
from terarec.configs.loader import ConfigError, load_config
from terarec.configs.recipe_sizes import RECIPES_BY_SIZE, SIZE_CLASSES, pick_recipe, size_class
from terarec.launch.compare import CompareSpec, render_markdown
from terarec.launch.compare_report import calibration_table, plot_reliability


def _manifest(directory: Path, train_rows: int, valid_rows: int = 0) -> Path:
    """A dataset manifest claiming ``train_rows`` train rows (compare's checks read the counts, not the parts)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = {"train": train_rows, "eval": 1000, **({"valid": valid_rows} if valid_rows else {})}
    (directory / "schema.json").write_text(json.dumps({"dense": [], "sparse": [], "rows": rows}))
    return directory


@pytest.mark.parametrize(
    "rows, size",
    [(0, "small"), (8000, "small"), (199_999, "small"), (200_000, "1m"), (99_999_999, "1m")]
    + [(100_000_000, "1tb"), (4_195_197_692, "1tb")],
)
def test_size_classes_by_train_rows(rows: int, size: str) -> None:
    assert size_class(rows) == size
    assert pick_recipe("dcnv2", rows) == (RECIPES_BY_SIZE["dcnv2"][size], f"size {size}: {rows:,} train rows")


def test_every_size_class_is_comparable() -> None:
    """Within a class the deep models share compare's budget keys, so a picked set never stops compare."""
    for size in SIZE_CLASSES:
        budgets = {
            (cfg.train.batch_size, cfg.train.epochs)
            for cfg in (load_config(RECIPES_BY_SIZE[m][size]) for m in ("dlrm", "dcnv2", "wukong"))
        }
        assert len(budgets) == 1, (size, budgets)
    assert RECIPES_BY_SIZE["dcnv2"]["small"] == "dcnv2_criteo10k" and RECIPES_BY_SIZE["dcnv2"]["1tb"] == "dcnv2_mlperf"


@pytest.mark.parametrize(
    "train_rows, size, expected",
    [
        (8000, None, ["dlrm_criteo10k", "dcnv2_criteo10k", "dcnv2_synth"]),
        (500_000, None, ["dlrm_1m", "dcnv2_1m", "dcnv2_synth"]),
        (500_000, "small", ["dlrm_criteo10k", "dcnv2_criteo10k", "dcnv2_synth"]),
        (200_000_000, None, ["dlrm_criteo1tb", "dcnv2_mlperf", "dcnv2_synth"]),
    ],
)
def test_compare_picks_recipes_by_dataset_size_and_an_explicit_recipe_wins(
    tmp_path: Path, train_rows: int, size: str | None, expected: list[str]
) -> None:
    data = str(_manifest(tmp_path, train_rows))
    batch = "train.batch_size=512"  # one budget for the size-picked recipes and the explicit dcnv2_synth
    spec = CompareSpec.build(data, "dlrm,dcnv2,dcnv2_synth", "", "0", overrides=[batch], recipe_size=size)
    assert [e.recipe for e in spec.entries] == expected
    why = f"--recipe-size {size}" if size else f"size {size_class(train_rows)}: {train_rows:,} train rows"
    assert [e.recipe_choice for e in spec.entries] == [why, why, "given"]


def test_recipe_size_and_calibrate_are_checked_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(_manifest(tmp_path, 8000))
    assert main(["compare", "--data", data, "--models", "dlrm", "--recipe-size", "10k"]) == 2
    assert "argument --recipe-size: invalid choice: '10k'" in capsys.readouterr().err
    assert main(["compare", "--data", data, "--models", "dlrm", "--calibrate", "beta"]) == 2
    assert "argument --calibrate: invalid choice: 'beta'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--recipe-size huge: one of small, 1m, 1tb"):
        pick_recipe("dlrm", 10, "huge")


def test_calibrate_needs_validation_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(_manifest(tmp_path / "plain", 8000))
    assert main(["compare", "--data", data, "--models", "dlrm", "--calibrate", "temperature"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"terarec: error: compare --calibrate: --data {data} has no validation rows for dlrm (no 'valid' split, "
        "data.valid_fraction=0): prepare it with --valid-fraction F, or pass data.valid_fraction=F"
    )
    # a carve-out from train or a valid split: accepted, and the runs keep their final checkpoint to calibrate
    carved = CompareSpec.build(data, "dlrm", "", "0", overrides=["data.valid_fraction=0.1"], calibrate="platt")
    assert "checkpoint.final=true" in carved.model_overrides(0, tmp_path / "run")
    with_valid = str(_manifest(tmp_path / "valid", 8000, 900))
    assert CompareSpec.build(with_valid, "dlrm", "", "0", calibrate="isotonic").calibrate == "isotonic"
    assert "checkpoint.final=false" in CompareSpec.build(with_valid, "dlrm", "", "0").model_overrides(0, tmp_path)


def _result(name: str, kind: str, runs: list[dict], **mean: float) -> dict:
    nan = math.nan
    keys = ("ece", "mce", "brier", "calibrated_ece", "calibrated_mce", "calibrated_brier")
    return {
        "name": name,
        "kind": kind,
        "runs": runs,
        "mean": {k: mean.get(k, nan) for k in keys},
        "std": {k: 0.001 if k in mean else nan for k in keys},
    }


def test_calibration_table_before_and_after() -> None:
    model = _result(
        "dlrm",
        "model",
        [{}, {}],
        ece=0.05,
        mce=0.2,
        brier=0.15,
        calibrated_ece=0.01,
        calibrated_mce=0.05,
        calibrated_brier=0.14,
    )
    baseline = _result("logreg", "baseline", [{}], ece=0.02, mce=0.1, brier=0.16)
    lines = calibration_table({"calibrate": "platt", "results": [model, baseline]})
    assert lines[-2] == (
        "| dlrm | 0.0500 ± 0.0010 | 0.2000 ± 0.0010 | 0.1500 ± 0.0010 | platt | 0.0100 ± 0.0010 | "
        "0.0500 ± 0.0010 | 0.1400 ± 0.0010 |"
    )
    assert lines[-1] == "| logreg | 0.0200 | 0.1000 | 0.1600 | — | — | — | — |"
    plain = calibration_table({"calibrate": None, "results": [baseline]})
    assert plain[-2:] == ["|---|--:|--:|--:|", "| logreg | 0.0200 | 0.1000 | 0.1600 |"]


def test_markdown_carries_the_calibration_table() -> None:
    run = {"auc": 0.7, "logloss": 0.5}
    result = _result("dcnv2", "model", [run], ece=0.03, mce=0.1, brier=0.2)
    result["recipe"] = "dcnv2_criteo10k"
    result["mean"].update(auc=0.7, logloss=0.5, ne=0.9, calibration=1.0, params_dense=1, params_sparse=2)
    result["mean"].update(flops_per_example=3, samples_per_s=4, wall_s=5)
    result["std"].update({k: 0.0 for k in result["mean"] if k not in result["std"]})
    report = {
        "data": "d",
        "train_samples": 10,
        "eval_rows": 5,
        "seeds": [0],
        "nproc": 1,
        "overrides": [],
        "baseline_max_train_rows": 10,
        "auc_standard_error": 0.01,
        "results": [result],
        "calibrate": None,
    }
    text = render_markdown(report)
    assert "## Calibration (eval split" in text and "| dcnv2 | 0.0300 | 0.1000 | 0.2000 |" in text
    assert "LightGBM: 50 trees" in text and "tuned baseline" not in text
    # under --tune a tuned LightGBM's settings are not the defaults the header states: it says so
    tuned = _result("lightgbm", "baseline", [run], ece=0.03, mce=0.1, brier=0.2)
    tuned["mean"], tuned["std"], tuned["recipe"] = result["mean"], result["std"], "lightgbm"
    tuned["tuning"] = {"params": {"num_leaves": 63}, "trials": 2, "best_trial": 1, "best_valid_logloss": 0.5}
    tuned["tuning"].update(samples_per_s=0, samples_seen=1, train_flops=None, wall_s=1.0)
    text = render_markdown({**report, "results": [result, tuned]})
    assert "under --tune a tuned baseline's settings are its chosen ones under Tuning budgets" in text


def test_reliability_panel_plots_each_model_before_and_after() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = {"pred": [0.1, 0.3, 0.6], "obs": [0.05, 0.2, 0.4], "count": [10, 10, 10]}
    after = {"pred": [0.05, 0.2, 0.42], "obs": [0.05, 0.2, 0.4], "count": [10, 10, 10]}
    results = [
        _result("dlrm", "model", [{"reliability": before, "calibrated_reliability": after}]),
        _result("logreg", "baseline", [{"reliability": before}]),
        _result("old", "baseline", [{}]),  # a run from before reliability was recorded: no curve, no failure
    ]
    figure, ax = plt.subplots()
    plot_reliability(ax, results)
    curves = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert curves["dlrm"] == (before["pred"], before["obs"])
    assert curves["dlrm calibrated"] == (after["pred"], after["obs"])
    assert curves["logreg"] == (before["pred"], before["obs"])
    assert set(curves) == {"dlrm", "dlrm calibrated", "logreg", "perfect"}
    assert ax.get_xlim() == pytest.approx((0, 0.63))
    plt.close(figure)
