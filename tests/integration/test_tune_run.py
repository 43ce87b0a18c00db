"""``terarec compare --tune 2`` on tiny synthetic data: trials, resume, budgets, and selection that
never reads the eval split (poisoned eval labels select the same trials)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from terarec.cli import main
from terarec.data_pipeline.manifest import DatasetManifest, PartFile
from terarec.data_pipeline.schema import DatasetSchema

pytestmark = pytest.mark.slow
TINY = ["embeddings.max_rows=1000"]  # 26 small tables: each trial trains in seconds


def _tune(data: Path, out: Path) -> int:
    argv = ["compare", "--data", str(data), "--models", "dlrm", "--baseline", "lightgbm", "--tune", "2"]
    return main([*argv, "--output", str(out), *TINY])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    argv = ["synth", "--preset", "criteo-kaggle", "--rows", "3000", "--output", str(out), "--seed", "3"]
    assert main([*argv, "--eval-fraction", "0.2", "--valid-fraction", "0.1"]) == 0
    return out


@pytest.fixture(scope="module")
def tuned(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tuned")
    assert _tune(data, out) == 0
    return out, json.loads((out / "compare.json").read_text())


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_trials_select_on_valid_and_the_table_states_the_budget(tuned: tuple[Path, dict]) -> None:
    out, report = tuned
    by_name = {r["name"]: r for r in report["results"]}
    for name in ("dlrm", "lightgbm"):
        tuning = by_name[name]["tuning"]
        trials = [_metrics(out / "tune" / name / f"trial_{k}") for k in range(2)]
        valid = [t["early_stop"]["valid"]["logloss"] if name == "dlrm" else t["valid"]["logloss"] for t in trials]
        assert tuning["trials"] == 2 and tuning["trial_valid_logloss"] == valid
        assert tuning["best_trial"] == min(range(2), key=valid.__getitem__)
        assert tuning["best_valid_logloss"] == min(valid)
        final = by_name[name]["runs"][0]
        rounds = [r.get("rounds_trained", 1) for r in (*trials, final)]
        seen = sum(r["samples"] * k for r, k in zip((*trials, final), rounds))
        assert tuning["samples_seen"] == seen > 0
        assert tuning["wall_s"] == pytest.approx(sum(r["wall_s"] for r in (*trials, final)))
    dlrm = by_name["dlrm"]["tuning"]
    trials = [_metrics(out / "tune" / "dlrm" / f"trial_{k}") for k in range(2)]
    final = by_name["dlrm"]["runs"][0]
    assert dlrm["train_flops"] == sum(r["train_flops_per_example"] * r["samples"] for r in (*trials, final))
    assert by_name["lightgbm"]["tuning"]["train_flops"] is None
    # the seeds ran the chosen config, stopping early on valid as the trials did
    config = (out / "runs" / "dlrm" / "seed_0" / "config.yaml").read_text()
    assert "early_stop: logloss" in config
    assert f"batch_size: {dlrm['params']['train.batch_size']}" in config
    assert final["early_stop"]["valid"]["count"] == 300  # the dataset's valid split
    lgbm = by_name["lightgbm"]["runs"][0]
    assert lgbm["params"] == by_name["lightgbm"]["tuning"]["params"] and lgbm["valid"]["count"] == 300
    assert 0 < lgbm["trees"] <= lgbm["rounds_trained"]
    table = (out / "compare.md").read_text()
    assert "## Tuning budgets" in table and "| dlrm | 2 |" in table and "| lightgbm | 2 |" in table


def test_a_rerun_continues_the_study_and_trains_nothing(data: Path, tuned: tuple[Path, dict]) -> None:
    out, report = tuned
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    assert len(stamps) == 6  # 2 trials + 1 seed, per model
    assert _tune(data, out) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")} == stamps
    again = json.loads((out / "compare.json").read_text())
    assert [r["tuning"] for r in again["results"]] == [r["tuning"] for r in report["results"]]
    assert sorted(p.name for p in (out / "tune" / "dlrm").iterdir()) == ["study.journal", "trial_0", "trial_1"]


def _poison_eval(source: Path, target: Path) -> None:
    """A copy of ``source`` with every eval label flipped (and its manifest updated to match)."""
    shutil.copytree(source, target)
    label = DatasetSchema.load(target, check_parts=False).label
    manifest = DatasetManifest.load(target)
    assert manifest is not None
    parts = []
    for part in manifest.parts:
        if part.path.startswith("eval/"):
            table = pq.read_table(target / part.path)
            column = table[label]
            flipped = pc.subtract(pa.scalar(1, column.type), column)
            table = table.set_column(table.schema.get_field_index(label), label, flipped)
            pq.write_table(table, target / part.path)
            part = PartFile.of(target / part.path, target, part.rows)
        parts.append(part)
    replace(manifest, parts=parts).save(target)


def test_poisoned_eval_labels_select_the_same_trials(
    data: Path, tuned: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tuned
    poisoned = tmp_path / "poisoned"
    _poison_eval(data, poisoned)
    # another dataset: the finished trials of the first study are not reused for it
    assert _tune(poisoned, out) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("terarec: error: ") and "finished tuning trial(s)" in err and "dataset changed" in err
    assert _tune(poisoned, tmp_path / "out") == 0
    again = json.loads((tmp_path / "out" / "compare.json").read_text())
    for clean, dirty in zip(report["results"], again["results"]):
        for key in ("best_trial", "params", "trial_valid_logloss", "best_valid_logloss"):
            assert dirty["tuning"][key] == clean["tuning"][key], (clean["name"], key)
        # the eval split really changed: flipped labels turn the AUC around
        assert dirty["runs"][0]["auc"] == pytest.approx(1 - clean["runs"][0]["auc"], abs=1e-3)


def test_calibrate_after_tuning_reuses_the_trials(tuned: tuple[Path, dict], data: Path, tmp_path: Path) -> None:
    """--calibrate changes only the final runs (they keep a final checkpoint to calibrate): trials are reused."""
    out = tmp_path / "copy"
    shutil.copytree(tuned[0], out)
    trials = {p: p.stat().st_mtime_ns for p in (out / "tune").rglob("metrics.json")}
    argv = ["compare", "--data", str(data), "--models", "dlrm", "--baseline", "lightgbm", "--tune", "2"]
    assert main([*argv, "--output", str(out), "--calibrate", "platt", "--on-change", "rerun", *TINY]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "tune").rglob("metrics.json")} == trials
    report = json.loads((out / "compare.json").read_text())
    assert report["calibrate"] == "platt" and not list((out / "tune").rglob("*.stale-*"))
