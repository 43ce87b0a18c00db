"""Per-table sharding policy (embeddings/sharding.py) and the planner's inputs (trainer/planning.py)."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from torch import nn
from torchrec.distributed.types import EmbeddingModuleShardingPlan, ParameterSharding, ShardingPlan
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.embeddings.sharding import TableShardingError, sharding_constraints
from terarec.trainer.distributed import DistInfo
from terarec.trainer.parallelize import ShardingConfigError as ReExported
from terarec.trainer.planning import (
    ShardingConfigError,
    dense_tensor_estimate,
    plan_sharding,
    plan_summary,
    planner_topology,
)

FEATURES = ["cat_0", "cat_1", "cat_2"]
CPU_INFO = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), backend="gloo")


def _constraints(device_type: str = "cpu", **kwargs: object) -> dict:
    policy: dict = {"sharding_type": None, "per_table": {}, "compute_kernel": None, **kwargs}
    return sharding_constraints(FEATURES, device_type=device_type, **policy)


def test_no_choice_leaves_the_planner_free() -> None:
    assert _constraints() == {}


def test_per_table_overrides_the_default_type_and_the_kernel_applies_to_all() -> None:
    got = _constraints(sharding_type="table_wise", per_table={"cat_1": "data_parallel"}, compute_kernel="fused")
    assert {name: c.sharding_types for name, c in got.items()} == {
        "t_cat_0": ["table_wise"],
        "t_cat_1": ["data_parallel"],
        "t_cat_2": ["table_wise"],
    }
    assert all(c.compute_kernels == ["fused"] for c in got.values())


def test_kernel_alone_constrains_only_the_kernel() -> None:
    got = _constraints(compute_kernel="dense")
    assert sorted(got) == ["t_cat_0", "t_cat_1", "t_cat_2"]
    assert all(c.sharding_types is None and c.compute_kernels == ["dense"] for c in got.values())


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"per_table": {"cat_9": "table_wise"}}, "sharding.per_table names 'cat_9', not a sparse feature"),
        ({"sharding_type": "diagonal"}, "sharding type 'diagonal' for 'cat_0' is not one of"),
        ({"per_table": {"cat_2": "row_wise"}}, "sharding type 'row_wise' needs CUDA; on CPU use data_parallel,"),
        ({"compute_kernel": "turbo"}, "sharding.compute_kernel 'turbo' is not one of"),
    ],
)
def test_user_mistakes_are_one_line_errors(policy: dict, message: str) -> None:
    with pytest.raises(TableShardingError) as err:
        _constraints(**policy)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_cuda_only_types_are_allowed_on_cuda() -> None:
    assert _constraints("cuda", sharding_type="row_wise")["t_cat_0"].sharding_types == ["row_wise"]


def test_trainer_reports_policy_errors_as_config_errors() -> None:
    cfg = Config()
    cfg.sharding.sharding_type = "grid_shard"
    with pytest.raises(ShardingConfigError, match="needs CUDA") as err:
        plan_sharding(nn.Module(), cfg, CPU_INFO, FEATURES, [])  # fails before any collective
    assert isinstance(err.value, ConfigError) and ReExported is ShardingConfigError


def test_topology_comes_from_the_factory_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with caplog.at_level(logging.WARNING):
        topology = planner_topology(CPU_INFO)
    assert caplog.records == []  # "constructed directly rather than via TopologyFactory" is gone
    assert (topology.world_size, topology.local_world_size, topology.compute_device) == (2, 2, "cpu")
    host_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert [d.storage.ddr for d in topology.devices] == [host_bytes // 2] * 2  # host memory split by local ranks
    assert topology.devices[0].storage.hbm == 0


class _Tiny(nn.Module):
    """One 1000x8 table (never counted as dense) and a Linear(10, 4): 44 float32 weights = 176 B."""

    def __init__(self) -> None:
        super().__init__()
        table = EmbeddingBagConfig(name="t_cat_0", embedding_dim=8, num_embeddings=1000, feature_names=["cat_0"])
        self.ebc = EmbeddingBagCollection(tables=[table], device=torch.device("meta"))
        self.linear = nn.Linear(10, 4, device="meta")


@pytest.mark.parametrize(
    ("optimizer", "parallel", "world", "expected"),
    [
        ("adam", "ddp", 2, 176 * 4),  # weights + gradients + two moments
        ("adagrad", "ddp", 2, 176 * 3),
        ("sgd", "ddp", 8, 176 * 2),  # replicated: the world size does not matter
        ("adam", "fsdp2", 2, 176 * 4 // 2 + 176),  # split over ranks + one gathered copy
    ],
)
def test_dense_tensor_estimate(optimizer: str, parallel: str, world: int, expected: int) -> None:
    assert dense_tensor_estimate(_Tiny(), optimizer, parallel, world) == expected


def test_plan_summary_counts_tables_by_type_and_kernel() -> None:
    plan = ShardingPlan(
        {
            "model.ebc": EmbeddingModuleShardingPlan(
                {
                    "t_a": ParameterSharding(sharding_type="table_wise", compute_kernel="fused", ranks=[0]),
                    "t_b": ParameterSharding(sharding_type="data_parallel", compute_kernel="dense", ranks=[0, 1]),
                    "t_c": ParameterSharding(sharding_type="table_wise", compute_kernel="fused", ranks=[1]),
                }
            )
        }
    )
    assert plan_summary(plan, 2).startswith(
        "sharding plan: 3 tables over 2 ranks: 2 table_wise (fused), 1 data_parallel (dense)"
    )
    assert "over 1 rank:" in plan_summary(plan, 1)
