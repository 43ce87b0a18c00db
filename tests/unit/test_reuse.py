"""The one reuse rule of sweeps and compare: a finished run stands in for a new one only when its
resolved config and its dataset's fingerprint are what would run now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from terarec.configs.loader import ConfigError, config_to_dict, load_config
from terarec.launch.reuse import (
    ChangedRunsError,
    Decision,
    Identity,
    Planned,
    decide,
    make_room,
    move_aside,
    stop_on_changes,
)

CONFIG = config_to_dict(load_config("wukong_synth", ["train.max_steps=8", "run.dir=/somewhere"]))


def _finished(run_dir: Path, config: dict, metrics: dict) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "metrics.json").write_text(json.dumps({"logloss": 0.5, **metrics}))
    return run_dir


def test_reused_only_with_the_same_config_and_dataset(tmp_path: Path) -> None:
    run = _finished(tmp_path / "p", CONFIG, {"dataset_fingerprint": "aaaa1111bbbb"})
    assert decide(run, Identity(CONFIG, "aaaa1111bbbb")) == Decision("reuse")
    assert decide(run, Identity(CONFIG, "cccc2222dddd")) == Decision(
        "changed", "dataset changed (fingerprint aaaa1111 -> cccc2222)"
    )
    now = config_to_dict(load_config("wukong_synth", ["train.max_steps=12", "optim.lr=0.5", "run.dir=/somewhere"]))
    assert decide(run, Identity(now, "cccc2222dddd")) == Decision(
        "changed",
        "config optim.lr (0.001 -> 0.5), train.max_steps (8 -> 12); dataset changed (fingerprint aaaa1111 -> cccc2222)",
    )
    # where and how a run starts is not what it computes: a moved output dir or resume=auto still matches
    moved = config_to_dict(load_config("wukong_synth", ["train.max_steps=8", "run.dir=/elsewhere", "resume=auto"]))
    assert decide(run, Identity(moved, "aaaa1111bbbb")) == Decision("reuse")


def test_many_config_differences_are_cut_to_the_first_three(tmp_path: Path) -> None:
    run = _finished(tmp_path / "p", CONFIG, {"dataset_fingerprint": None})
    overrides = ["train.max_steps=9", "train.seed=4", "optim.lr=0.1", "optim.sparse_lr=0.2", "run.dir=/somewhere"]
    detail = decide(run, Identity(config_to_dict(load_config("wukong_synth", overrides)), None)).detail
    assert detail.startswith("config optim.lr (0.001 -> 0.1), optim.sparse_lr (")
    assert detail.endswith(" and 1 more key(s)") and detail.count("->") == 3


def test_datasets_without_fingerprints(tmp_path: Path) -> None:
    """A run that predates recorded fingerprints (no key) matches only a dataset without a manifest."""
    old = _finished(tmp_path / "old", CONFIG, {})
    assert decide(old, Identity(CONFIG, None)) == Decision("reuse")
    assert decide(old, Identity(CONFIG, "aaaa1111")) == Decision(
        "changed", "dataset unknown (the run predates recorded dataset fingerprints)"
    )
    unmanifested = _finished(tmp_path / "none", CONFIG, {"dataset_fingerprint": None})
    assert decide(unmanifested, Identity(CONFIG, None)) == Decision("reuse")
    assert decide(unmanifested, Identity(CONFIG, "aaaa1111")).detail == (
        "dataset changed (it had no manifest.json when the run read it)"
    )
    assert decide(
        _finished(tmp_path / "had", CONFIG, {"dataset_fingerprint": "aaaa"}), Identity(CONFIG, None)
    ).detail == ("dataset changed (it now has no manifest.json)")


def test_absent_unfinished_and_unrecorded_dirs(tmp_path: Path) -> None:
    assert decide(tmp_path / "nothing", Identity(CONFIG, None)).action == "absent"
    (tmp_path / "empty").mkdir()
    assert decide(tmp_path / "empty", Identity(CONFIG, None)).action == "absent"
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "train.log").write_text("Traceback ...")
    assert decide(crashed, Identity(CONFIG, None)).action == "continue"  # no config recorded yet
    (crashed / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    assert decide(crashed, Identity(CONFIG, None)).action == "continue"  # same config: resume=auto
    other = config_to_dict(load_config("wukong_synth", ["train.max_steps=3", "run.dir=/somewhere"]))
    assert decide(crashed, Identity(other, None)) == Decision("restart", "config train.max_steps (8 -> 3)")
    finished_unrecorded = tmp_path / "torchx"
    finished_unrecorded.mkdir()
    (finished_unrecorded / "metrics.json").write_text("{}")
    decision = decide(finished_unrecorded, Identity(CONFIG, None))
    assert decision.action == "changed" and decision.detail.startswith("no readable record of its config in ")


def test_stop_names_every_changed_run_in_one_line(tmp_path: Path) -> None:
    """Runs changed alike are named together (at most 5 names, then a count), once per difference."""
    points = tmp_path / "points"
    planned = [Planned(f"n={n}", points / f"n={n}", Decision("changed", "dataset changed")) for n in range(7)]
    planned += [Planned("n=9", points / "n=9", Decision("reuse"))]
    planned += [Planned("n=8", points / "n=8", Decision("changed", "config train.seed (0 -> 1)"))]
    stop_on_changes(planned, "rerun", "sweep point")  # rerun: nothing to stop for
    stop_on_changes(planned[7:8], "stop", "sweep point")  # nothing changed
    with pytest.raises(ChangedRunsError) as raised:
        stop_on_changes(planned, "stop", "sweep point")
    assert str(raised.value) == (
        f"8 finished sweep point(s) in {points} were made with another config or dataset than this request "
        "(n=0, n=1, n=2, n=3, n=4 and 2 more sweep point(s): dataset changed; n=8: config train.seed (0 -> 1)); "
        "nothing was run: pass --on-change rerun to move them aside and train them again, or choose another --output"
    )
    many = [
        Planned(f"n={n}", points / f"n={n}", Decision("changed", f"config train.seed (0 -> {n})")) for n in range(7)
    ]
    with pytest.raises(ChangedRunsError, match=r"n=4: config train.seed \(0 -> 4\); and 2 other difference\(s\)\)"):
        stop_on_changes(many, "stop", "sweep point")


def test_changed_dirs_are_moved_aside_never_deleted(tmp_path: Path) -> None:
    run = _finished(tmp_path / "num_layers=1", CONFIG, {"dataset_fingerprint": "aaaa"})
    assert make_room(Planned("num_layers=1", run, Decision("changed", "dataset changed"))) is False
    (stale,) = tmp_path.glob("num_layers=1.stale-*")
    assert json.loads((stale / "metrics.json").read_text())["dataset_fingerprint"] == "aaaa" and not run.exists()
    run.mkdir()
    (run / "train.log").write_text("x")
    assert make_room(Planned("num_layers=1", run, Decision("continue"))) is True and run.is_dir()
    # the same second: a second stale dir gets its own name
    (tmp_path / "f").write_text("1")
    first = move_aside(tmp_path / "f")
    (tmp_path / "f").write_text("2")
    second = move_aside(tmp_path / "f")
    assert first != second and first.read_text() == "1" and second.read_text() == "2"


def test_bad_on_change_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--on-change keep: choose from stop, rerun"):
        stop_on_changes([], "keep", "run")


def test_launch_stays_light() -> None:
    """launch imports the dataset contracts (schema, manifest) but never torch: `terarec sweep --help`
    and the reuse checks run before any heavy import."""
    code = (
        "import sys, terarec.launch.sweep, terarec.launch.compare, terarec.launch.reuse;"
        "print(sorted(m for m in ('torch', 'torchrec') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
