"""Process-group set-up from the ``torchrun`` environment, per-rank seeding and rank-aware logging.

A plain ``terarec train`` (no ``torchrun``) is a world of one: no process group is created, so the
same code runs alone or under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from terarec.trainer.quiet import quiet_known_warnings


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str  # "gloo", "nccl" or "none" for a single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def sum_over_ranks(value: int) -> int:
    """``value`` summed over every rank (itself in a world of one)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(tensor)
    return int(tensor.item())


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any rank: one decision all ranks act on together."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank: ``[value]`` in a world of one."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank: one decision (a listing, an error message) all ranks act on."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> torch.device:
    """NCCL reduces only CUDA tensors; gloo only CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(timeout_s: float = 600.0) -> DistInfo:
    """Join the process group that ``torchrun`` describes in RANK/WORLD_SIZE/MASTER_ADDR.

    gloo on CPU, nccl on CUDA (one GPU per local rank). ``timeout_s`` bounds every collective so
    a rank that died leaves the others with an error instead of a silent hang.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size == 1 and "MASTER_ADDR" not in os.environ:
        return DistInfo(0, 1, 0, device, "none")
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch with ``seed + rank``; returns the per-rank seed.

    Per-rank seeds decorrelate dropout/shuffles across ranks; model initialisation that must be
    identical on every rank is seeded separately with the global ``seed``.
    """
    rank_seed = seed + rank
    random.seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    torch.manual_seed(rank_seed)
    return rank_seed


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


def setup_logging(rank: int = 0, level: str = "INFO") -> logging.Logger:
    """``[rank N]``-prefixed logs on stderr: ``level`` on rank 0, WARNING and above elsewhere; the
    known-harmless third-party warnings (``quiet.py``) silenced."""
    logger = logging.getLogger("terarec")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RankFilter(rank))
    handler.setFormatter(logging.Formatter("%(asctime)s [rank %(rank)d] %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level if rank == 0 else "WARNING")
    logger.propagate = False
    quiet_known_warnings()  # third-party warnings a healthy run prints and no user can act on
    return logger
