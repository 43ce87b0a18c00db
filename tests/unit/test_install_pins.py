"""The installed torch / fbgemm / torchrec triple is the one pinned in requirements/stack.txt."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "requirements"))
from install import read_pins  # noqa: E402


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def test_installed_triple_is_pinned() -> None:
    pins = read_pins()
    assert set(pins) == {"torch", "fbgemm-gpu", "torchrec"}
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert _version("torchrec") == pins["torchrec"]
    cuda = torch.version.cuda is not None and torch.cuda.is_available()
    fbgemm_dist = "fbgemm-gpu" if cuda else "fbgemm-gpu-cpu"
    other = "fbgemm-gpu-cpu" if cuda else "fbgemm-gpu"
    assert _version(fbgemm_dist) == pins["fbgemm-gpu"]
    assert _version(other) is None, f"{other} is installed beside {fbgemm_dist}: their files collide"


def test_stack_imports_and_fbgemm_ops_load() -> None:
    import fbgemm_gpu  # noqa: F401
    import torchrec  # noqa: F401

    assert importlib.util.find_spec("terarec") is not None
    # the CPU kernels really loaded (a broken .so leaves the op namespace empty)
    assert hasattr(torch.ops.fbgemm, "asynchronous_complete_cumsum")
    lengths = torch.tensor([1, 2, 3])
    assert torch.ops.fbgemm.asynchronous_complete_cumsum(lengths).tolist() == [0, 1, 3, 6]
