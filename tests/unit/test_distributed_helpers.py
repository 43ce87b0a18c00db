"""Distributed-init helper: single process without torchrun, per-rank seeds, rank-prefixed logs."""

from __future__ import annotations

import logging

import pytest
import torch

from terarec.trainer.distributed import init_distributed, seed_everything, setup_logging


def test_single_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, "none", True)
    assert not torch.distributed.is_initialized()


def test_seed_is_per_rank_and_reproducible() -> None:
    assert seed_everything(7, rank=1) == 8
    a = torch.rand(3)
    seed_everything(7, rank=1)
    assert torch.equal(a, torch.rand(3))
    seed_everything(7, rank=0)
    assert not torch.equal(a, torch.rand(3))


def test_logging_prefix_and_levels(capsys: pytest.CaptureFixture[str]) -> None:
    log = setup_logging(rank=0)
    log.info("hello")
    assert "[rank 0] INFO hello" in capsys.readouterr().err
    log = setup_logging(rank=1)
    log.info("quiet")
    log.warning("loud")
    err = capsys.readouterr().err
    assert "quiet" not in err and "[rank 1] WARNING loud" in err
    assert logging.getLogger("terarec").level == logging.WARNING
