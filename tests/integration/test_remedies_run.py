"""Remedies for one-epoch overfitting through the real stack: DMP tables, fused optimizers, ``terarec train``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.cli import main
from terarec.configs.loader import ConfigError, load_config
from terarec.data_pipeline.schema import DatasetSchema, SparseFeature
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.trainer.distributed import DistInfo, shutdown_distributed
from terarec.trainer.model_factory import build_model
from terarec.trainer.parallelize import parallelize
from terarec.trainer.preflight import check_config_against_data
from terarec.trainer.reinit import fresh_table, reinitialize_tables, table_weights
from terarec.trainer.setup import join_process_group

SCHEMA = DatasetSchema(dense=["d0"], sparse=[SparseFeature("a", 8), SparseFeature("b", 8)])


@pytest.fixture
def group() -> Iterator[DistInfo]:
    info = join_process_group()
    try:
        yield info
    finally:
        shutdown_distributed()


def _table(dmp: torch.nn.Module, name: str) -> torch.Tensor:
    weight = table_weights(dmp)[name]
    return (weight.local_shards()[0].tensor if hasattr(weight, "local_shards") else weight).detach().clone()


def _step(info: DistInfo, overrides: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module, object]:
    """(t_a before, t_a after) one SGD step on a batch that looks up rows 1 and 2 of ``a`` (and 3 of ``b``)."""
    cfg = load_config(None, ["model.name=dlrm", "embeddings.dim=4", "optim.sparse_lr=0.5", *overrides])
    torch.manual_seed(0)
    built = build_model(cfg, SCHEMA, "meta")
    dmp, optimizer = parallelize(built.model, cfg, info, ["a", "b"])
    before = _table(dmp, "t_a")
    kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 3]), torch.tensor([1, 1, 1, 1]))
    dmp(torch.zeros(2, 1), kjt).sum().backward()
    optimizer.step()
    return before, _table(dmp, "t_a"), dmp, optimizer


def test_l2_shrinks_only_the_rows_the_batch_touched(group: DistInfo) -> None:
    common = ["optim.sparse=sgd", "sharding.sharding_type=data_parallel"]
    before, plain, _, _ = _step(group, common)
    before_l2, decayed, _, _ = _step(group, [*common, "embeddings.l2=0.5"])
    assert torch.equal(before, before_l2)  # the same seeded tables
    untouched = [0, 3, 4, 5, 6, 7]
    assert torch.equal(decayed[untouched], before[untouched])
    # same gradient at the first step, so the difference is the decay alone: -lr * l2 * w
    assert torch.allclose(decayed[1:3] - plain[1:3], -0.5 * 0.5 * before[1:3], atol=1e-6)


def test_a_model_trained_with_l2_on_fused_tables_loads_on_cpu_for_eval(group: DistInfo) -> None:
    """Eval/predict/export build the model with training=False: no L2 kernel check, so a GPU run loads on a CPU."""
    cfg = load_config(
        None, ["model.name=dlrm", "embeddings.dim=4", "embeddings.l2=0.01", "sharding.sharding_type=table_wise"]
    )
    with pytest.raises(ConfigError, match="embeddings.l2 on CPU needs"):
        parallelize(build_model(cfg, SCHEMA, "meta").model, cfg, group, ["a", "b"])
    dmp, _ = parallelize(build_model(cfg, SCHEMA, "meta").model, cfg, group, ["a", "b"], training=False)
    assert sorted(table_weights(dmp)) == ["t_a", "t_b"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fbgemm's fused CUDA kernels apply weight_decay_mode=L2")
def test_fused_cuda_l2_shrinks_only_the_rows_the_batch_touched(group: DistInfo) -> None:
    common = ["optim.sparse=adagrad", "optim.sparse_lr=0.5", "sharding.sharding_type=table_wise"]
    before, plain, _, _ = _step(group, common)
    before_l2, decayed, _, _ = _step(group, [*common, "embeddings.l2=0.5"])
    assert torch.equal(before.cpu(), before_l2.cpu())
    untouched = [0, 3, 4, 5, 6, 7]
    assert torch.equal(decayed[untouched].cpu(), before[untouched].cpu())  # rows the batch did not look up
    assert not torch.allclose(decayed[1:3], plain[1:3])  # the looked-up rows felt the decay


def test_l2_on_cpu_is_refused_before_the_run_dir_is_written(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", "dcnv2_synth", f"data.path={synth_dir}", f"run.dir={run}", "embeddings.l2=0.001"]
    if torch.cuda.is_available():
        pytest.skip("the check is about CPU training")
    assert main([*args, "train.max_steps=1", "logging.tensorboard=false"]) == 2
    assert "terarec: error: embeddings.l2 on CPU needs" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("sharding", ["data_parallel", "table_wise"])
def test_reinit_draws_the_seeded_tables_and_zeroes_their_optimizer_state(group: DistInfo, sharding: str) -> None:
    _, _, dmp, optimizer = _step(group, [f"sharding.sharding_type={sharding}"])  # rowwise Adagrad: state is non-zero
    assert reinitialize_tables(dmp, optimizer, seed=3, epoch=1) == ["t_a", "t_b"]
    assert torch.equal(_table(dmp, "t_a"), fresh_table("t_a", 8, 4, seed=3, epoch=1))
    states = [
        v for name, m in optimizer.optimizers if name.startswith("sparse") for s in m.state.values() for v in s.values()
    ]
    tensors = [t.local_shards()[0].tensor if hasattr(t, "local_shards") else t for t in states]
    assert tensors and all(float(t.abs().sum()) == 0.0 for t in tensors if t.dim() > 0)


@pytest.mark.parametrize(
    "sharding",
    [
        "data_parallel",
        pytest.param(
            "table_wise",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="fbgemm-gpu-cpu has no fused Adam"),
        ),
    ],
)
def test_reinit_resets_adams_moments_and_step_counters(group: DistInfo, sharding: str) -> None:
    _, _, dmp, optimizer = _step(group, ["optim.sparse=adam", f"sharding.sharding_type={sharding}"])
    reinitialize_tables(dmp, optimizer, seed=3, epoch=1)
    states = [
        v for name, m in optimizer.optimizers if name.startswith("sparse") for s in m.state.values() for v in s.values()
    ]
    tensors = [t.local_shards()[0].tensor if hasattr(t, "local_shards") else t for t in states]
    assert tensors and all(float(t.abs().sum()) == 0.0 for t in tensors)  # 0-dim step counters included
    if sharding == "data_parallel":  # torch's Adam keeps a 0-dim step per parameter
        assert any(t.dim() == 0 for t in tensors)


def test_reinit_with_a_caching_kernel_is_refused_in_one_line() -> None:
    cfg = load_config(None, ["train.reinit_embeddings_each_epoch=true", "sharding.compute_kernel=fused_uvm_caching"])
    with pytest.raises(ConfigError, match="cannot re-draw tables of sharding.compute_kernel=fused_uvm_caching"):
        check_config_against_data(cfg, DatasetSchema(dense=[], sparse=[], split_rows={"train": 100}), world_size=1)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(rows=3000, eval_fraction=0.2, seed=3), out, progress=False)
    return out


@pytest.mark.slow
def test_train_with_every_remedy(synth_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "dcnv2_synth",
        f"data.path={synth_dir}",
        f"run.dir={run}",
        "data.valid_fraction=0.2",
        "embeddings.max_rows=500",
        "embeddings.min_count=3",
        "embeddings.l2=0.0001",
        "sharding.sharding_type=data_parallel",
        "train.reinit_embeddings_each_epoch=true",
        "train.batch_size=64",
        "train.epochs=2",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 * 30 and 0.0 < metrics["auc"] < 1.0  # 1920 train rows / 64
    err = capfd.readouterr().err
    assert "epoch 1: re-initialised 26 embedding tables (MEDA)" in err
    kept = re.search(r"embeddings.min_count=3: ids kept per table (.*) \(the others share", err)
    assert kept and len(kept[1].split(", ")) == 26 and kept[1].startswith("cat_0 ")  # said, per table
    assert [p.name for p in (synth_dir / "id_counts").glob("*.npz")] == ["train_0_1920.npz"]


def _reinit_run(data: Path, run: Path, *extra: str) -> dict:
    args = [
        "train",
        "--config",
        "dcnv2_synth",
        f"data.path={data}",
        f"run.dir={run}",
        "embeddings.max_rows=500",
        "train.reinit_embeddings_each_epoch=true",
        "train.batch_size=64",
        "train.epochs=2",
        "data.shuffle_buffer=0",
        "logging.progress=false",
        "logging.tensorboard=false",
        *extra,
    ]
    assert main(args) == 0
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_reinit_resumed_at_an_epoch_boundary_matches_the_uninterrupted_run(synth_dir: Path, tmp_path: Path) -> None:
    whole = _reinit_run(synth_dir, tmp_path / "whole")
    _reinit_run(synth_dir, tmp_path / "split", "train.max_steps=38")  # 2400 train rows / 64: 38 steps an epoch
    resumed = _reinit_run(synth_dir, tmp_path / "split", "resume=auto")
    assert resumed["steps"] == whole["steps"] == 76
    assert resumed["auc"] == pytest.approx(whole["auc"], abs=1e-6)
    assert resumed["logloss"] == pytest.approx(whole["logloss"], abs=1e-6)
