"""``terarec compare`` set-up (checked before any run) and the baselines' building blocks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from terarec.baselines.tabular import CategoryCodes
from terarec.cli import main
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.launch.compare import auc_standard_error, recorded_bayes_auc, render_markdown


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
    assert "Bayes" not in render_markdown(report)  # real data: no Bayes figure
    report["bayes_auc"] = 0.9  # a synth dataset's: (0.72 - 0.5) / 0.4 and (0.73 - 0.5) / 0.4
    assert "captured: dlrm 55.0%, lightgbm 57.5%." in render_markdown(report)


def test_bayes_auc_is_read_from_a_synth_schema_only(tmp_path: Path, dataset: Path) -> None:
    synth = write_synthetic(SynthSpec(rows=4000, eval_fraction=0.25), tmp_path / "s", progress=False)
    assert recorded_bayes_auc(tmp_path / "s") == synth.extra["planted"]["bayes_auc"]
    assert recorded_bayes_auc(dataset) is None  # a prepared real dataset's schema has no label model


# -- re-runs: a run is reused only with the same config and dataset (issue "Trustworthy artifacts" 5) --


class FakeChild:
    """Stands in for ``run_child``: a trainer run records its resolved config.yaml, a baseline its
    settings, both the dataset fingerprint, as the real ones do; every run gets a new AUC."""

    def __init__(self) -> None:
        self.trained: list[str] = []

    def __call__(self, command: list[str], log_file: Path) -> int:
        from terarec.configs.loader import load_config, save_config
        from terarec.data_pipeline.manifest import dataset_fingerprint

        run_dir = log_file.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics: dict = {"logloss": 0.5, "samples": 300, "eval_rows": 100, "eval_positives": 30}
        if "terarec.trainer.main" in command:
            at = command.index("--config")
            cfg = load_config(command[at + 1], command[at + 2 :])
            save_config(cfg, run_dir / "config.yaml")
            data = cfg.data.path
        else:
            flags = dict(zip(command[3::2], command[4::2]))
            data = flags["--data"]
            metrics.update(kind=flags["--kind"], data=data, seed=int(flags["--seed"]))
            metrics["max_train_rows"] = int(flags["--max-train-rows"])
        self.trained.append(f"{run_dir.parent.name} {run_dir.name}")
        metrics.update(auc=0.6 + len(self.trained) / 100, dataset_fingerprint=dataset_fingerprint(data))
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return 0


@pytest.fixture
def fake_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeChild, list[str], Path]:
    """(child, compare args, output dir): dlrm and logreg on a tiny synthetic dataset, already run once."""
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic
    from terarec.launch import compare

    child = FakeChild()
    monkeypatch.setattr(compare, "run_child", child)
    monkeypatch.setattr(compare, "plot", lambda report, path: None)
    write_synthetic(SynthSpec(rows=400, eval_fraction=0.25, seed=1), tmp_path / "data", progress=False)
    out = tmp_path / "out"
    args = [
        "compare",
        "--data",
        str(tmp_path / "data"),
        "--models",
        "dlrm",
        "--baseline",
        "logreg",
        "--output",
        str(out),
    ]
    assert main(args) == 0
    assert child.trained == ["dlrm seed_0", "logreg seed_0"]
    return child, args, out


def _aucs(out: Path) -> dict[str, float]:
    return {r["name"]: r["runs"][0]["auc"] for r in json.loads((out / "compare.json").read_text())["results"]}


def test_compare_with_other_data_stops_or_reruns(
    fake_compare: tuple[FakeChild, list[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from terarec.data_pipeline.manifest import dataset_fingerprint
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic

    child, args, out = fake_compare
    write_synthetic(SynthSpec(rows=400, eval_fraction=0.25, seed=2), tmp_path / "data", progress=False, overwrite=True)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error: 2 finished run(s) in ") and err.count("\n") == 1
    assert f"2 finished run(s) in {out} were made with another config or dataset" in err
    assert "(dlrm seed 0, logreg seed 0: dataset changed (fingerprint " in err
    assert len(child.trained) == 2 and _aucs(out) == {"dlrm": 0.61, "logreg": 0.62}
    assert main([*args, "--on-change", "rerun"]) == 0
    assert child.trained[2:] == ["dlrm seed_0", "logreg seed_0"]
    report = json.loads((out / "compare.json").read_text())
    assert _aucs(out) == {"dlrm": 0.63, "logreg": 0.64}  # the re-run's numbers only
    assert report["dataset_fingerprint"] == dataset_fingerprint(tmp_path / "data")
    assert {r["runs"][0]["dataset_fingerprint"] for r in report["results"]} == {report["dataset_fingerprint"]}
    assert len(list((out / "runs" / "dlrm").glob("seed_0.stale-*"))) == 1
    assert len(list((out / "baselines" / "logreg").glob("seed_0.stale-*"))) == 1


def test_compare_with_changed_overrides_stops_or_reruns(
    fake_compare: tuple[FakeChild, list[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Model overrides change the model runs only: the baseline (same settings, same data) is reused."""
    child, args, out = fake_compare
    capsys.readouterr()
    assert main([*args, "train.max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "1 finished run(s) in " in err and "(dlrm seed 0: config train.max_steps (0 -> 3))" in err
    assert len(child.trained) == 2
    assert main([*args, "train.max_steps=3", "--on-change", "rerun"]) == 0
    assert child.trained[2:] == ["dlrm seed_0"] and _aucs(out) == {"dlrm": 0.63, "logreg": 0.62}
    assert main([*args, "--baseline-max-train-rows", "100", "train.max_steps=3"]) == 2
    assert "(logreg seed 0: config max_train_rows (10000000 -> 100))" in capsys.readouterr().err


def test_identical_compare_rerun_reuses_every_run(
    fake_compare: tuple[FakeChild, list[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    child, args, out = fake_compare
    capsys.readouterr()
    assert main(args) == 0
    assert len(child.trained) == 2 and _aucs(out) == {"dlrm": 0.61, "logreg": 0.62}
    assert capsys.readouterr().err.count("done earlier with the same config and data, reused") == 2
    assert not list(out.rglob("*.stale-*"))


def test_baseline_records_the_dataset_fingerprint(tmp_path: Path) -> None:
    from terarec.baselines.tabular import run_baseline
    from terarec.data_pipeline.manifest import dataset_fingerprint
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic

    write_synthetic(SynthSpec(rows=400, eval_fraction=0.25, seed=1), tmp_path / "data", progress=False)
    result = run_baseline("logreg", str(tmp_path / "data"))
    assert (
        result["dataset_fingerprint"] == dataset_fingerprint(tmp_path / "data")
        and len(result["dataset_fingerprint"]) == 32
    )


def test_a_tuned_comparison_records_each_result_s_budget_and_marks_the_shared_one_pre_tuning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import terarec.launch.compare as compare

    (tmp_path / "schema.json").write_text(json.dumps({"dense": [], "sparse": [], "rows": {"train": 10000}}))
    entry = compare.Entry("dlrm", "model", "dlrm_criteo10k")
    spec = compare.CompareSpec(str(tmp_path), [entry], [0], tune=2)
    run = {"auc": 0.7, "logloss": 0.5, "ne": 0.9, "samples": 8000, "eval_rows": 2000, "eval_positives": 500}
    monkeypatch.setattr(compare, "_run_model", lambda *args: run)
    monkeypatch.setattr(compare, "_tuning_record", lambda tuned, runs: {"trials": 2})
    chosen = dataclasses.replace(entry, overrides=["train.batch_size=64"])
    planned = iter([compare.Planned("dlrm seed 0", tmp_path / "r", None)])  # type: ignore[arg-type]
    result = compare._entry_result(spec, chosen, planned, object())
    shared = spec.budget(entry.recipe)
    assert result["budget"] == {**shared, "train.batch_size": 64} and shared["train.batch_size"] != 64
    report = compare._report(spec, None, [result])
    assert report["budget"] == shared and report["budget_pre_tuning"] is True
    assert "(before tuning: each tuned model's searched keys" in compare.render_markdown(report)
    untuned = compare._report(dataclasses.replace(spec, tune=0), None, [result])
    assert "budget_pre_tuning" not in untuned and "before tuning" not in compare.render_markdown(untuned)


def test_a_baseline_s_identity_is_the_settings_it_records() -> None:
    from terarec.launch.compare import BASELINE_IDENTITY_KEYS, CompareSpec, Entry, _baseline_settings

    entry = Entry("lightgbm", "baseline", "lightgbm", params={"num_leaves": 8}, valid_fraction=0.1)
    assert tuple(_baseline_settings(CompareSpec("d", [entry], [0]), entry, 0)) == BASELINE_IDENTITY_KEYS


def test_baseline_validation_carve_streams_the_train_prefix_and_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--valid-fraction: train on the first min(keep, max_train_rows) rows, validate on [keep, N): the rows the
    trainer's carve leaves, read in one pass (the middle rows are never kept)."""
    from terarec.baselines import tabular
    from terarec.data_pipeline.schema import DatasetSchema
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic

    write_synthetic(SynthSpec(rows=1000, eval_fraction=0.2, seed=2), tmp_path / "data", progress=False)
    data = str(tmp_path / "data")
    schema = DatasetSchema.load(data)
    monkeypatch.setattr(tabular, "READ_BATCH", 64)  # many blocks: the cuts fall inside blocks
    every = tabular._concat(list(tabular.read_blocks(data, "train", schema)))
    total = len(every.labels)
    keep = round(total * 0.75)
    for cap, expected_train in ((100, 100), (10**9, keep), (0, keep)):
        train, valid, available = tabular.read_train_valid(data, schema, cap, 0.25)
        assert available == keep and len(train.labels) == expected_train and len(valid.labels) == total - keep
        assert np.array_equal(train.sparse, every.sparse[:expected_train])
        assert np.array_equal(valid.sparse, every.sparse[keep:]) and np.array_equal(valid.labels, every.labels[keep:])
