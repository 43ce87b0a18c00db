"""DCP checkpoints of the whole training state, written atomically, loadable at any world size.

Layout: ``RUN/checkpoints/step_N/`` holds the DCP files (sharded tables, fused and dense optimizer
state, dense weights), ``trainer.json`` (step, samples, loader position, LR bases) and
``rng_rank{r}.pt`` (each rank's RNG). Every rank writes into ``.tmp_step_N`` first; rank 0
renames it after a barrier, so a ``step_N`` directory is complete by construction. A directory
is trusted only if it has DCP's ``.metadata`` (written last) and ``trainer.json``; a newest one
that still fails to load (truncated files) is reported and the previous one is used.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from terarec.configs.schema import CheckpointConfig
from terarec.trainer.distributed import any_rank

log = logging.getLogger("terarec")
STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete-looking checkpoints, newest first."""
    root = run_dir / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True) if (p / ".metadata").is_file() and (p / "trainer.json").is_file()]


class CheckpointManager:
    def __init__(self, run_dir: Path, cfg: CheckpointConfig, rank: int) -> None:
        self.run_dir, self.cfg, self.rank = run_dir, cfg, rank
        self.root = run_dir / "checkpoints"
        self._last_save_time = time.monotonic()

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
        dcp.save(state, checkpoint_id=str(tmp))
        torch.save(_rng_state(), tmp / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
        _barrier()
        if self.rank == 0:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in checkpoint_dirs(self.run_dir)[self.cfg.keep_last :]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        self._last_save_time = time.monotonic()
        log.info("checkpoint saved: %s", final)
        return final

    def load_newest(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Load the newest loadable checkpoint into ``state`` (in place); its trainer state, or None."""
        for path in checkpoint_dirs(self.run_dir):
            try:
                dcp.load(state, checkpoint_id=str(path), planner=DefaultLoadPlanner(allow_partial_load=True))
                trainer_state = json.loads((path / "trainer.json").read_text())
            except (Exception, CheckpointException) as err:  # truncated or corrupt files: fall back to the previous one
                # (DCP's CheckpointException derives from BaseException, not Exception)
                log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, _first_cause(err))
                _barrier()
                continue
            rng = path / f"rng_rank{self.rank}.pt"
            if rng.is_file():  # absent when the world size changed: seeds stay as set at start
                _set_rng_state(torch.load(rng, weights_only=False))
            log.info("loaded checkpoint %s (step %d)", path, trainer_state["step"])
            return {**trainer_state, "path": str(path)}
        return None


def _first_cause(err: BaseException) -> str:
    """A one-line reason: DCP wraps each rank's real error in a CheckpointException."""
    failures = getattr(err, "failures", None)
    if failures:
        err = next(iter(failures.values()))
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
