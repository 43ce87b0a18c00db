"""DCP checkpoints of the whole training state: complete only with a verified manifest, loaded whole or not at all.

Layout: ``RUN/checkpoints/step_N/`` holds the DCP files (sharded tables, fused and dense optimizer
state, dense weights), ``trainer.json`` (step, samples, loader position), ``rng_rank{r}.pt`` (each
rank's RNG), the run's record (``config.yaml``, ``dataset.json``: what the checkpoint was trained
with) and ``manifest.json``. Every rank writes into ``.tmp_step_N``; then each rank checksums a
share of the files, rank 0 gathers the sizes and CRC32s, writes the manifest last and renames the
directory. A ``step_N`` without a manifest is incomplete and is never loaded.

Loading verifies every file of the newest checkpoint against its manifest (each rank a share, CRC32
runs at several GB/s), and all ranks agree with one collective on the first checkpoint that
verified on every rank: a corrupt or truncated one (a torn write, a flipped block) is reported and
the previous one is used. A checkpoint that verifies but does not fit the model (other shapes,
missing or extra tensors) stops with one line naming the tensors: nothing is ever loaded partially.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from terarec.configs.loader import ConfigError
from terarec.configs.schema import CheckpointConfig
from terarec.trainer.distributed import any_rank, from_rank0, gather_objects
from terarec.trainer.faults import fault_point

log = logging.getLogger("terarec")
STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
SELECTED = "selected.json"  # RUN/selected.json: the checkpoint the run's own final eval scored
CHUNK = 16 << 20


class CheckpointMismatchError(ConfigError):
    """A complete checkpoint that does not fit the model built from the config: a user error (exit 2)."""


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every ``step_N`` directory (complete or not), newest first."""
    root = run_dir / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints (their manifest, written last, exists), newest first; verified only on load."""
    return [p for _, p in step_dirs(run_dir) if (p / MANIFEST).is_file()]


def file_digest(path: Path) -> dict[str, int]:
    """Size and CRC32 of ``path``: what the manifest records and load compares."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    return {"size": size, "crc32": crc}


def verify_files(checkpoint: Path, rank: int = 0, world_size: int = 1) -> str | None:
    """Why this rank's share of ``checkpoint``'s files does not match the manifest, or None."""
    try:
        files = json.loads((checkpoint / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} unreadable: {type(err).__name__}"
    for name in sorted(files)[rank::world_size]:
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        expected, size = files[name], path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, the manifest says {expected['size']}"
        if file_digest(path) != expected:
            return f"{name} fails its checksum"
    return None


def incompatibilities(state: dict[str, Any], checkpoint: Path) -> list[str]:
    """How ``checkpoint`` differs from ``state``'s tensors (names and global shapes), first ones first,
    the same list on every rank (a collective: call it on all ranks)."""
    with warnings.catch_warnings():  # ShardedTensor.size() warns that ShardedTensor is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        problems, unused = _local_incompatibilities(state, checkpoint)
    ranks = gather_objects((problems, unused))
    # a rank holds optimizer state only for its own tables: a saved key is extra only if no rank wants it
    extra = set.intersection(*(set(u) for _, u in ranks))
    found = list(dict.fromkeys(p for rank_problems, _ in ranks for p in rank_problems))
    return found + [f"{key} is in the checkpoint, not in this model" for key in sorted(extra)]


def _local_incompatibilities(state: dict[str, Any], checkpoint: Path) -> tuple[list[str], list[str]]:
    """(this rank's missing or reshaped tensors, saved keys this rank does not load)."""
    flat, _ = flatten_state_dict(state)
    saved = dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    sections = tuple(f"{key}." for key in state)  # eval loads "model" only: ignore the saved "optim"
    problems: list[str] = []
    for key, value in flat.items():
        meta = saved.get(key)
        if meta is None:
            problems.append(f"{key} is not in the checkpoint")
        elif isinstance(meta, TensorStorageMetadata) and hasattr(value, "size"):
            here, there = tuple(value.size()), tuple(meta.size)
            if here != there:
                problems.append(f"{key} has shape {list(there)} in the checkpoint, {list(here)} in this model")
    return problems, [key for key in saved if key.startswith(sections) and key not in flat]


class CheckpointManager:
    def __init__(self, run_dir: Path, cfg: CheckpointConfig, rank: int, record: dict[str, str] | None = None) -> None:
        """``record``: files (name -> text) stored in every checkpoint, e.g. the config it was trained with."""
        self.run_dir, self.cfg, self.rank, self.record = run_dir, cfg, rank, record or {}
        self.root = run_dir / "checkpoints"
        self._last_save_time = time.monotonic()
        self.protected: int | None = None  # the best checkpoint's step (early stopping): never pruned

    def due(self, step: int) -> bool:
        """Whether to save after ``step`` (same answer on every rank)."""
        by_steps = self.cfg.every_steps > 0 and step % self.cfg.every_steps == 0
        by_time = self.cfg.every_minutes > 0 and time.monotonic() - self._last_save_time >= 60 * self.cfg.every_minutes
        return any_rank(by_steps or (by_time and self.rank == 0))  # rank 0's clock decides time-based saves

    def save(self, step: int, state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
        final, tmp = self.root / f"step_{step}", self.root / f".tmp_step_{step}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        fault_point("save_start", step, self.rank)
        dcp.save(state, checkpoint_id=str(tmp))
        _write_durably(tmp / f"rng_rank{self.rank}.pt", _rng_bytes())
        if self.rank == 0:
            _write_durably(tmp / "trainer.json", (json.dumps(trainer_state, indent=2) + "\n").encode())
            for name, text in self.record.items():
                _write_durably(tmp / name, text.encode())
        _barrier()
        fault_point("save_files", step, self.rank)
        self._write_manifest(tmp, step)
        if self.rank == 0:
            fault_point("save_manifest", step, self.rank)
            _replace_dir(tmp, final)
            fault_point("save_renamed", step, self.rank)
            self._prune(step)
        _barrier()
        self._last_save_time = time.monotonic()
        log.info("checkpoint saved: %s", final)
        return final

    def _write_manifest(self, tmp: Path, step: int) -> None:
        """Each rank checksums a share of the files; rank 0 writes what all ranks found, last."""
        world = dist.get_world_size() if dist.is_initialized() else 1
        names = from_rank0(sorted(p.name for p in tmp.iterdir() if p.is_file()))  # all written and synced
        shares = gather_objects({name: file_digest(tmp / name) for name in names[self.rank :: world]})
        if self.rank == 0:
            files = {name: digest for share in shares for name, digest in share.items()}
            manifest = {"format": 1, "step": step, "files": files}
            _write_durably(tmp / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())

    def _prune(self, written: int) -> None:
        """Keep the one just written and the ``keep_last - 1`` newest older ones. Newer steps can only
        be left by a timeline this run abandoned (it resumed from an older checkpoint): removed."""
        found = step_dirs(self.run_dir)
        older = [(step, path) for step, path in found if step < written]
        newer = [path for step, path in found if step > written]
        beyond_keep_last = [path for step, path in older[max(self.cfg.keep_last - 1, 0) :] if step != self.protected]
        for path in newer + beyond_keep_last:
            shutil.rmtree(path, ignore_errors=True)
        if newer:
            log.warning("removed checkpoints newer than step %d (an abandoned timeline): %s", written, newer)

    def load_newest(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Load the newest checkpoint that verifies on every rank into ``state`` (in place): its trainer
        state, or None when there is none. Raises :class:`CheckpointMismatchError` if it does not fit."""
        return self._load_first(from_rank0([p.name for p in checkpoint_dirs(self.run_dir)]), state)

    def load_step(self, step: int, state: dict[str, Any]) -> dict[str, Any] | None:
        """Load checkpoint ``step_<step>`` into ``state`` (e.g. the best one), as :meth:`load_newest` loads:
        its trainer state, or None when it is absent or does not verify."""
        name = f"step_{step}"
        return self._load_first(from_rank0([name] if (self.root / name / MANIFEST).is_file() else []), state)

    def recorded_best_step(self) -> int:
        """The best validation step recorded by early stopping in the newest checkpoint's trainer state
        (-1: none), read from ``trainer.json`` alone on rank 0, so a caller loads weights once."""
        return int(from_rank0(self.recorded_best_step_local() if self.rank == 0 else -1))

    def recorded_best_step_local(self) -> int:
        """:meth:`recorded_best_step` read on this rank alone (no collective)."""
        for path in checkpoint_dirs(self.run_dir):
            try:
                state = json.loads((path / "trainer.json").read_text())
            except (OSError, ValueError):
                continue  # unreadable: the load falls back past it the same way
            return int((state.get("early_stop") or {}).get("best_step", -1))
        return -1

    def write_selection(self, step: int, selected_by: str) -> None:
        """Rank 0 records (atomically) which checkpoint the final eval scored and what chose it.

        The final decision can come after the last checkpoint was saved (a run ending off the
        evaluation cadence lets its last weights compete): that checkpoint's ``trainer.json`` then
        names an older best step, so eval/predict/export read this file first."""
        if self.rank != 0:
            return
        path = self.run_dir / SELECTED
        tmp = path.with_name(f".{SELECTED}.tmp")
        _write_durably(tmp, (json.dumps({"step": step, "selected_by": selected_by}, indent=2) + "\n").encode())
        tmp.replace(path)

    def clear_selection(self) -> None:
        """Rank 0 removes a previous run's selection (training continues: it no longer holds)."""
        if self.rank == 0:
            (self.run_dir / SELECTED).unlink(missing_ok=True)

    def selected_step(self) -> tuple[int, str]:
        """(step, what chose it) of the checkpoint to score: ``RUN/selected.json``, else the early-stopping
        best step of the newest checkpoint's ``trainer.json`` (runs written before selected.json), else
        (-1, "newest"). Read on rank 0 and broadcast."""
        found: tuple[int, str] = (-1, "newest")
        if self.rank == 0:
            try:
                selection = json.loads((self.run_dir / SELECTED).read_text())
                found = (int(selection["step"]), str(selection["selected_by"]))
            except (OSError, ValueError, KeyError, TypeError):
                best = self.recorded_best_step_local()
                found = (best, "early_stop") if best >= 0 else found
        step, selected_by = from_rank0(found)
        return int(step), str(selected_by)

    def _load_first(self, names: list[str], state: dict[str, Any]) -> dict[str, Any] | None:
        """The first of ``names`` (the same list on every rank) that verifies, loaded into ``state``."""
        world = dist.get_world_size() if dist.is_initialized() else 1
        for name in names:
            path = self.root / name
            problems = [p for p in gather_objects(verify_files(path, self.rank, world)) if p]
            if problems:  # the same decision on every rank: all fall back together
                log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, problems[0])
                continue
            mismatch = incompatibilities(state, path)
            if mismatch:
                more = f" (+{len(mismatch) - 3} more)" if len(mismatch) > 3 else ""
                raise CheckpointMismatchError(
                    f"checkpoint {path} does not fit the model built from this config: {'; '.join(mismatch[:3])}{more}"
                )
            try:
                dcp.load(state, checkpoint_id=str(path), planner=DefaultLoadPlanner(allow_partial_load=False))
            except (Exception, CheckpointException) as err:  # DCP's CheckpointException is a BaseException
                # files changed after they verified: DCP raises on every rank, so all fall back together
                log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, _first_cause(err))
                continue
            trainer_state = json.loads((path / "trainer.json").read_text())
            rng = path / f"rng_rank{self.rank}.pt"
            if rng.is_file():  # absent when the world size grew: seeds stay as set at start
                _set_rng_state(torch.load(rng, weights_only=False))
            log.info("loaded checkpoint %s (step %d)", path, trainer_state["step"])
            return {**trainer_state, "path": str(path)}
        return None


def _replace_dir(tmp: Path, final: Path) -> None:
    """``tmp`` becomes ``final``; an older ``final`` (a re-run of the same step) goes only after."""
    old = final.with_name(f".old_{final.name}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _first_cause(err: BaseException) -> str:
    """A one-line reason: DCP wraps each rank's real error in a CheckpointException."""
    failures = getattr(err, "failures", None)
    if failures:
        err = next(iter(failures.values()))
    if isinstance(err, tuple):  # DCP keeps (exception, traceback summary) pairs per rank
        err = err[0]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _rng_bytes() -> bytes:
    import io
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
