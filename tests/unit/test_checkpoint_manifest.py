"""Checkpoint manifests (verified before load, corrupt -> previous), strict loads, keep_last, signals."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from terarec.configs.schema import CheckpointConfig
from terarec.trainer.checkpoint import (
    MANIFEST,
    CheckpointManager,
    CheckpointMismatchError,
    checkpoint_dirs,
    file_digest,
)
from terarec.trainer.faults import FAULT_ENV, fault_point
from terarec.trainer.preemption import Preempted, PreemptionGuard

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # DCP in a world of one


def _state(step: int) -> dict:
    gen = torch.Generator().manual_seed(step)
    return {"model": {"w": torch.randn(4096, generator=gen), "b": torch.full((3,), float(step))}}


def _save(manager: CheckpointManager, step: int) -> Path:
    return manager.save(step, _state(step), {"step": step, "samples": 64 * step})


@pytest.fixture
def warnings_seen() -> Iterator[list[str]]:
    """terarec's log warnings (its logger does not propagate to pytest's caplog)."""
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("terarec")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


@pytest.fixture
def manager(tmp_path: Path) -> CheckpointManager:
    return CheckpointManager(tmp_path, CheckpointConfig(keep_last=3), rank=0, record={"config.yaml": "a: 1\n"})


def _load(manager: CheckpointManager) -> tuple[dict | None, dict]:
    state = {"model": {"w": torch.zeros(4096), "b": torch.zeros(3)}}
    return manager.load_newest(state), state


def test_the_manifest_lists_every_file_with_size_and_crc32(manager: CheckpointManager, tmp_path: Path) -> None:
    path = _save(manager, 5)
    manifest = json.loads((path / MANIFEST).read_text())
    on_disk = sorted(p.name for p in path.iterdir() if p.name != MANIFEST)
    assert sorted(manifest["files"]) == on_disk
    assert {".metadata", "rng_rank0.pt", "trainer.json", "config.yaml"} <= set(on_disk)
    assert all(manifest["files"][name] == file_digest(path / name) for name in on_disk)
    (tmp_path / "checkpoints" / "step_9").mkdir()  # no manifest: never a checkpoint
    assert checkpoint_dirs(tmp_path) == [path]


def test_a_block_overwritten_inside_a_file_falls_back_to_the_previous(
    manager: CheckpointManager, warnings_seen: list[str]
) -> None:
    _save(manager, 5)
    newest = _save(manager, 10)
    data = max(newest.glob("*.distcp"), key=lambda p: p.stat().st_size)
    with open(data, "r+b") as f:  # 4 KB of zeros in the middle: the size does not change
        f.seek(data.stat().st_size // 2 - 2048)
        f.write(bytes(4096))
    loaded, state = _load(manager)
    assert loaded is not None and loaded["step"] == 5
    assert torch.equal(state["model"]["w"], _state(5)["model"]["w"]) and state["model"]["b"].tolist() == [5.0] * 3
    assert any(f"{newest} is unreadable ({data.name} fails its checksum)" in w for w in warnings_seen)


def test_a_truncated_rng_file_falls_back_too(manager: CheckpointManager, warnings_seen: list[str]) -> None:
    _save(manager, 5)
    rng = _save(manager, 10) / "rng_rank0.pt"
    rng.write_bytes(rng.read_bytes()[:100])
    loaded, _ = _load(manager)
    assert loaded is not None and loaded["step"] == 5
    assert any("rng_rank0.pt has 100 bytes, the manifest says" in w for w in warnings_seen)


def test_nothing_loads_when_every_checkpoint_is_damaged(manager: CheckpointManager) -> None:
    (_save(manager, 5) / "trainer.json").unlink()
    loaded, state = _load(manager)
    assert loaded is None and state["model"]["b"].tolist() == [0.0] * 3


def test_a_checkpoint_that_does_not_fit_is_one_error_naming_the_tensors(manager: CheckpointManager) -> None:
    _save(manager, 5)
    other = {"model": {"w": torch.zeros(10), "extra": torch.zeros(2)}}
    with pytest.raises(CheckpointMismatchError) as err:
        manager.load_newest(other)
    message = str(err.value)
    assert "model.w has shape [4096] in the checkpoint, [10] in this model" in message
    assert "model.extra is not in the checkpoint" in message
    assert "model.b is in the checkpoint, not in this model" in message and "\n" not in message
    assert other["model"]["w"].tolist() == [0.0] * 10  # nothing was loaded


def test_keep_last_never_deletes_the_checkpoint_just_written(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, CheckpointConfig(keep_last=1), rank=0)
    for step in (5, 10, 20):
        _save(manager, step)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_20"]
    # resumed from an older checkpoint (say step_20 was damaged): a newer step is an abandoned timeline
    (tmp_path / "checkpoints" / "step_30").mkdir()
    _save(CheckpointManager(tmp_path, CheckpointConfig(keep_last=2), rank=0), 12)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_12"]  # step_20 and step_30: abandoned
    assert not (tmp_path / "checkpoints" / "step_30").exists()
    _save(CheckpointManager(tmp_path, CheckpointConfig(keep_last=2), rank=0), 14)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_14", "step_12"]


def test_a_step_saved_again_replaces_the_old_directory_whole(manager: CheckpointManager) -> None:
    first = _save(manager, 5)
    (first / "stale.bin").write_bytes(b"x")
    assert not (_save(manager, 5) / "stale.bin").exists()
    assert sorted(p.name for p in first.parent.iterdir()) == ["step_5"]


def test_the_first_signal_is_recorded_and_the_second_one_kills() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is before
    assert Preempted(signal.SIGTERM).code == 143 and Preempted(signal.SIGINT).code == 130


def test_fault_points_fire_only_where_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: fired.append(signum))
    try:
        monkeypatch.setenv(FAULT_ENV, "step:3:USR1,save_files:4:USR1:1")
        fault_point("step", 2)
        fault_point("save_files", 4, rank=0)
        assert fired == []
        fault_point("step", 3)
        fault_point("save_files", 4, rank=1)
        assert fired == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
