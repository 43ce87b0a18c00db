"""Shared fixtures: paths to the real data samples in ../shared/data (never copied into the repo) and the
torchrun command builder for multi-process tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from terarec.launch.torchrun import RESTART_SAFE_ENV, torchrun_command

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_sample(relative: str) -> Path:
    """Path of a file under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data sample {path} is absent (../shared/data is not beside this checkout)")
    return path


@pytest.fixture
def criteo_10k() -> Path:
    return shared_sample("criteo_kaggle_10k/train_10k.tsv")


@pytest.fixture
def movielens_dir() -> Path:
    return shared_sample("movielens_100k")


@pytest.fixture
def taobao_csv() -> Path:
    return shared_sample("taobao_userbehavior_head/UserBehavior_head.csv")


@dataclass(frozen=True)
class Torchrun:
    """Command lines for multi-process tests, built by terarec's own torchrun builder
    (``terarec.launch.torchrun``) so tests launch exactly as ``eval --nproc``, sweeps and launch do."""

    env: dict[str, str]  # restart-safe rendezvous, one thread per worker on the 2-core CI machine

    def command(self, module: str, args: Sequence[str], nproc: int = 2, max_restarts: int = 0) -> list[str]:
        return torchrun_command(module, list(args), nproc, max_restarts=max_restarts)


@pytest.fixture(scope="session")
def torchrun() -> Torchrun:
    return Torchrun(env={**os.environ, **RESTART_SAFE_ENV, "OMP_NUM_THREADS": "1"})


@contextmanager
def read_only_directory(path: Path) -> Iterator[None]:
    """``path`` (created) cannot be written to inside the block. Root ignores permission bits, so
    as root the directory is made immutable (``chattr +i``); without chattr the test is skipped."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        path.chmod(0o755)
        pytest.skip("running as root without chattr: cannot make a directory read-only")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def dcnv2_train_args(data: Path, run: Path, *overrides: str) -> list[str]:
    """``terarec train`` arguments of a quiet DCNv2 run on ``data`` into ``run`` (no progress bar, no
    TensorBoard); ``overrides`` size it."""
    return [
        "--config",
        "dcnv2_synth",
        f"data.path={data}",
        f"run.dir={run}",
        "logging.progress=false",
        "logging.tensorboard=false",
        *overrides,
    ]


def checkpoint_weights(checkpoint: Path, scratch: Path) -> dict[str, Any]:
    """The model tensors of a DCP checkpoint directory (converted through a torch.save file in ``scratch``)."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = scratch / f"{checkpoint.parent.parent.name}-{checkpoint.name}.pt"
    dcp_to_torch_save(str(checkpoint), str(out))
    weights: dict[str, Any] = torch.load(out, weights_only=False)["model"]
    return weights


def synthetic_dataset(factory: pytest.TempPathFactory, **spec: Any) -> Path:
    """A fresh synthetic dataset (``terarec synth``) in a new temporary folder; ``spec``: SynthSpec fields."""
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic

    out = factory.mktemp("synth")
    write_synthetic(SynthSpec(**spec), out, progress=False)
    return out


def trained_run(factory: pytest.TempPathFactory, data: Path, config: str, steps: int) -> Path:
    """A tiny ``config`` run of ``steps`` steps on ``data`` with a final checkpoint: what the calibrate,
    eval and export tests start from."""
    from terarec.cli import main

    run = factory.mktemp("runs") / "run"
    tiny = ["embeddings.max_rows=2000", "train.batch_size=64", "logging.progress=false", "logging.tensorboard=false"]
    args = ["--config", config, f"data.path={data}", f"run.dir={run}", f"train.max_steps={steps}", *tiny]
    assert main(["train", *args, "checkpoint.final=true"]) == 0
    return run


def ladder_result(rung: int, train_flops: int, logloss: float, samples: int, **extra: Any) -> dict[str, Any]:
    """One sweep result row, as ``run_sweep`` collects it, of flavor ``ladder_<rung>``: what the fit
    and results tests need (forward FLOPs = training FLOPs / 3, dense params = training FLOPs / 2)."""
    return {
        "point": f"flavor=ladder_{rung}",
        **extra,
        "model.flavor": f"ladder_{rung}",
        "logloss": logloss,
        "auc": 0.8,
        "ne": 0.9,
        "params_dense": train_flops // 2,
        "params_sparse": 10,
        "flops_per_example": train_flops // 3,
        "train_flops_per_example": train_flops,
        "samples": samples,
    }
