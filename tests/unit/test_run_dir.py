"""Run dirs: the lock, the config record, what a resume may change, fresh runs into used dirs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from terarec.configs.loader import load_config
from terarec.configs.schema import Config
from terarec.data_pipeline.schema import DatasetSchema, SparseFeature
from terarec.trainer.checkpoint import MANIFEST
from terarec.trainer.run_dir import (
    MAY_CHANGE_ON_RESUME,
    RunDir,
    RunDirError,
    config_leaves,
    may_change_on_resume,
    resume_changes,
)

SCHEMA = DatasetSchema(dense=["d0"], sparse=[SparseFeature("c0", 10)], split_rows={"train": 100, "eval": 10})


def _open(run: Path, *overrides: str, schema: DatasetSchema = SCHEMA) -> RunDir:
    opened = RunDir(run, is_main=True)
    opened.open_for_training(load_config(None, [f"run.dir={run}", *overrides]), schema)
    opened.record_start()
    return opened


def _fake_checkpoint(run: Path, step: int, record: RunDir) -> Path:
    """A step dir with the record a real save stores (manifest contents are not read by RunDir)."""
    path = run / "checkpoints" / f"step_{step}"
    path.mkdir(parents=True)
    for name, text in record.record.items():
        (path / name).write_text(text)
    (path / MANIFEST).write_text("{}")
    return path


def test_every_key_the_table_allows_to_change_exists() -> None:
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    leaves = config_leaves(Config())
    for key in MAY_CHANGE_ON_RESUME:
        assert key in sections or key in leaves, f"MAY_CHANGE_ON_RESUME names no config key: {key}"


def test_resume_may_change_budget_cadence_and_plan_but_not_what_the_checkpoint_holds() -> None:
    assert may_change_on_resume("train.max_steps") and may_change_on_resume("checkpoint.keep_last")
    assert may_change_on_resume("sharding.sharding_type") and may_change_on_resume("logging.level")
    for key in ("model.num_layers", "model.flavor", "embeddings.dim", "embeddings.max_rows", "optim.dense"):
        assert not may_change_on_resume(key), key
    assert not may_change_on_resume("train.batch_size") and not may_change_on_resume("train.seed")
    saved = config_leaves(load_config(None, ["train.max_steps=10"]))
    current = config_leaves(load_config(None, ["train.max_steps=20", "model.num_layers=5", "embeddings.dim=8"]))
    del saved["optim.lr"]  # a key an older terarec did not have is not compared
    refused, allowed = resume_changes(saved, current)
    assert refused == ["embeddings.dim (None -> 8)", "model.num_layers (None -> 5)"]
    assert allowed == ["train.max_steps (10 -> 20)"]


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path: Path) -> None:
    first = _open(tmp_path / "run")
    with pytest.raises(RunDirError, match=rf"in use by another training \(pid {os.getpid()} on "):
        _open(tmp_path / "run")
    first.close()
    _open(tmp_path / "run").close()  # released: the next run may start


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    """A SIGKILLed training leaves no stale lock: the kernel drops a flock with its last descriptor."""
    holder = (
        "import sys, time; from pathlib import Path; from terarec.trainer.run_dir import RunDir; "
        "from terarec.configs.loader import load_config; from tests.unit.test_run_dir import SCHEMA; "
        "r = RunDir(Path(sys.argv[1]), True); r.open_for_training(load_config(None, []), SCHEMA); "
        "print('locked', flush=True); time.sleep(60)"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {proc.pid} "):
            _open(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    _open(tmp_path).close()


def test_config_yaml_is_written_once_and_every_start_is_recorded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _open(run, "train.max_steps=10")
    _fake_checkpoint(run, 10, first)
    first.close()
    _open(run, "train.max_steps=30", "resume=auto", "sharding.sharding_type=column_wise").close()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 10
    starts = sorted(p.name for p in (run / "configs").iterdir())
    assert starts == ["0.yaml", "1.yaml"]
    second = (run / "configs" / "1.yaml").read_text()
    assert second.startswith("# start 1, world size 1: resume=auto from step_10; changed: ")
    assert "sharding.sharding_type (None -> 'column_wise')" in second.splitlines()[0]
    assert "train.max_steps (10 -> 30)" in second.splitlines()[0]
    assert yaml.safe_load(second)["train"]["max_steps"] == 30


def test_opening_records_nothing_until_the_start_has_begun(tmp_path: Path) -> None:
    """The trainer calls record_start after the checkpoint and the loader's position were accepted: a
    start refused in between (a resume under another loader layout) leaves no record of itself."""
    run = tmp_path / "run"
    opened = RunDir(run, is_main=True)
    opened.open_for_training(load_config(None, [f"run.dir={run}"]), SCHEMA)
    assert not (run / "config.yaml").exists() and not (run / "configs").exists()
    opened.record_start()
    assert sorted(p.name for p in (run / "configs").iterdir()) == ["0.yaml"] and (run / "config.yaml").is_file()
    opened.close()
    other_rank = RunDir(tmp_path / "other", is_main=False)  # only rank 0 checks and writes
    other_rank.open_for_training(load_config(None, [f"run.dir={tmp_path / 'other'}"]), SCHEMA)
    other_rank.record_start()
    assert not (tmp_path / "other").exists()


def test_resume_with_other_model_or_data_stops_listing_the_keys(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _open(run)
    _fake_checkpoint(run, 4, first)
    first.close()
    before = (run / "config.yaml").read_text()
    with pytest.raises(RunDirError) as err:
        _open(run, "resume=auto", "model.flavor=parallel", "model.num_layers=5")
    assert "model.flavor ('small' -> 'parallel'), model.num_layers (None -> 5)" in str(err.value)
    assert "\n" not in str(err.value)
    other_data = dataclasses.replace(SCHEMA, split_rows={"train": 200, "eval": 10})
    with pytest.raises(RunDirError, match=r"data \(the dataset's features, cardinalities and rows\)"):
        _open(run, "resume=auto", schema=other_data)
    _open(run, "resume=auto", "data.path=/moved/elsewhere").close()  # same dataset, new place: allowed
    assert (run / "config.yaml").read_text() == before


def test_a_fresh_run_into_a_dir_with_checkpoints_stops_unless_asked_to_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _open(run, "train.max_steps=10")
    _fake_checkpoint(run, 10, first)
    (run / "metrics.json").write_text("{}")
    first.close()
    with pytest.raises(RunDirError, match=r"holds checkpoints of an earlier run \(step_10\): continue it with resume"):
        _open(run, "train.max_steps=4")
    assert (run / "checkpoints" / "step_10").is_dir() and (run / "metrics.json").is_file()
    _open(run, "train.max_steps=4", "run.overwrite=true").close()
    assert not (run / "checkpoints" / "step_10").exists() and not (run / "metrics.json").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 4
    assert [p.name for p in (run / "configs").iterdir()] == ["0.yaml"]


def test_interrupted_saves_are_cleared_and_checkpoints_without_manifest_never_resumed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / ".tmp_step_8").mkdir(parents=True)
    (run / "checkpoints" / "step_6").mkdir()
    with pytest.raises(
        RunDirError, match="no complete checkpoint .*step_6 has no manifest.json: .* resume=none run.overwrite=true"
    ):
        _open(run, "resume=auto")
    assert not (run / "checkpoints" / ".tmp_step_8").exists()


def test_an_unwritable_checkpoints_dir_is_one_error_before_training(tmp_path: Path) -> None:
    from conftest import read_only_directory  # here: a child process imports this module without pytest

    run = tmp_path / "run"
    with read_only_directory(run / "checkpoints"):
        with pytest.raises(RunDirError, match=r"cannot write to .*/checkpoints \(.*\): make it writable"):
            _open(run)
        _open(run, "checkpoint.final=false").close()  # no checkpoints wanted: nothing to write there


def test_checkpoints_record_the_dataset_and_config_they_were_trained_with(tmp_path: Path) -> None:
    opened = _open(tmp_path, "train.max_steps=7", "data.path=/data/x")
    opened.close()
    assert json.loads(opened.record["dataset.json"]) == {  # what tables and positions depend on, not the path
        "dense": ["d0"],
        "sparse": [{"name": "c0", "cardinality": 10, "multi_hot": False}],
        "sequence": [],
        "label": "label",
        "split_rows": {"train": 100, "eval": 10},
    }
    assert yaml.safe_load(opened.record["config.yaml"])["train"]["max_steps"] == 7
