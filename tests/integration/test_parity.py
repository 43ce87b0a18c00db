"""Sharded training under torchrun (2 gloo ranks) == the unsharded model on the same data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import synthetic_dataset

if TYPE_CHECKING:
    from tests.conftest import Torchrun

ROOT = Path(__file__).resolve().parent.parent.parent
WORKER = Path(__file__).resolve().parent / "parity_worker.py"
NATIVE_ABORT = "terminate called without an active exception"  # C++ std::terminate in a rank, then SIGABRT


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, preset="criteo-kaggle", rows=4000, eval_fraction=0.1, seed=3)


def _run(data: Path, recipe: str, sharding: str, out: Path, torchrun: Torchrun, dense: str = "ddp") -> dict:
    args = ["--data", str(data), "--recipe", recipe, "--sharding", sharding, "--steps", "8", "--out", str(out)]
    # the worker runs as a module from its own folder (tests are not an installed package)
    cmd = torchrun.command(WORKER.stem, [*args, "--dense", dense])
    done = subprocess.run(cmd, cwd=WORKER.parent, env=torchrun.env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and NATIVE_ABORT in done.stderr:
        # a rank aborted inside the stack before training (docs/stack.md: seen in 2 of 7 full runs, never
        # alone); one more launch, and the parity assertions below are the same either way
        done = subprocess.run(cmd, cwd=WORKER.parent, env=torchrun.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def _assert_parity(result: dict, sharding: str) -> None:
    assert sharding in result["plan"]
    assert result["sharded"][0] == pytest.approx(result["reference"][0], abs=1e-6)  # same initial weights
    assert result["sharded"] == pytest.approx(result["reference"], abs=2e-5)  # same losses, step by step
    assert result["max_weight_diff"] < 1e-4  # and the same weights after 8 steps
    unmoved = [name for name, change in result["moved"].items() if change == 0.0]
    assert unmoved == [], f"the steps did not update {unmoved}"  # every table and layer trained


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("sharding", ["table_wise", "column_wise", "data_parallel", "table_column_wise"])
def test_sharded_dcnv2_matches_unsharded(synth_dir: Path, tmp_path: Path, sharding: str, torchrun: Torchrun) -> None:
    _assert_parity(_run(synth_dir, "dcnv2_synth", sharding, tmp_path / "parity.json", torchrun), sharding)


@pytest.mark.slow
@pytest.mark.distributed
def test_sharded_bst_embedding_collection_matches_unsharded(
    movielens_dir: Path, tmp_path: Path, torchrun: Torchrun
) -> None:
    from terarec.data_pipeline.sequence_sources import prepare_movielens
    from terarec.data_pipeline.sequences import SequenceOptions

    prepare_movielens(str(movielens_dir), str(tmp_path / "data"), SequenceOptions(max_history=10))
    _assert_parity(
        _run(tmp_path / "data", "bst_movielens", "table_wise", tmp_path / "parity.json", torchrun), "table_wise"
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_dense_matches_unsharded(synth_dir: Path, tmp_path: Path, torchrun: Torchrun) -> None:
    result = _run(synth_dir, "dcnv2_synth", "table_wise", tmp_path / "parity.json", torchrun, dense="fsdp2")
    assert result["dtensor_params"] > 0  # the dense layers really are FSDP2-sharded
    _assert_parity(result, "table_wise")
