"""The one place where sharding, DMP and optimizers are wired: model -> planner -> DMP -> optimizer
(the optimizers themselves are built by ``terarec.trainer.optimizers``).

Embedding tables get a fused sparse optimizer (applied in the backward pass by fbgemm kernels);
the dense part gets a regular optimizer and is data-parallel (DMP wraps it in DDP).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DataParallelWrapper, DefaultDataParallelWrapper
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardedModule, ShardingEnv, ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.embeddings.tables import table_name
from terarec.models.common import embedding_modules
from terarec.trainer.distributed import DistInfo
from terarec.trainer.optimizers import SPARSE_OPTIMIZERS, build_optimizers, sparse_optimizer_kwargs

log = logging.getLogger("terarec")

CUDA_ONLY_SHARDING = {"row_wise", "table_row_wise", "grid_shard"}


class ShardingConfigError(ConfigError):
    """A sharding type the device cannot run, or a table name that does not exist."""


def sharding_constraints(cfg: Config, features: list[str], device: torch.device) -> dict[str, ParameterConstraints]:
    """Per-table planner constraints from ``sharding.sharding_type`` / ``sharding.per_table``."""
    unknown = sorted(set(cfg.sharding.per_table) - set(features))
    if unknown:
        raise ShardingConfigError(
            f"sharding.per_table names '{unknown[0]}', not a sparse feature (features: {', '.join(features)})"
        )
    valid = {t.value for t in ShardingType}
    constraints: dict[str, ParameterConstraints] = {}
    for feature in features:
        kind = cfg.sharding.per_table.get(feature, cfg.sharding.sharding_type)
        if kind is None and cfg.sharding.compute_kernel is None:
            continue
        if kind is not None and kind not in valid:
            raise ShardingConfigError(f"sharding type '{kind}' for '{feature}' is not one of {sorted(valid)}")
        if kind in CUDA_ONLY_SHARDING and device.type != "cuda":
            raise ShardingConfigError(
                f"sharding type '{kind}' needs CUDA; on CPU use data_parallel, table_wise, "
                "column_wise or table_column_wise"
            )
        kernels = [cfg.sharding.compute_kernel] if cfg.sharding.compute_kernel else None
        constraints[table_name(feature)] = ParameterConstraints(
            sharding_types=[kind] if kind else None, compute_kernels=kernels
        )
    return constraints


def planner_topology(info: DistInfo) -> Topology:
    """The planner's view of the hardware, from the real devices: GPU memory on CUDA (so tables
    that do not fit are planned row-wise or on the UVM-caching kernel), host memory on CPU."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    kwargs: dict[str, Any] = {}
    if info.device.type == "cuda":
        kwargs["hbm_cap"] = torch.cuda.get_device_properties(info.device).total_memory
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    kwargs["ddr_cap"] = pages * page_size // max(local, 1)  # host memory shared by the local ranks
    return Topology(world_size=info.world_size, compute_device=info.device.type, local_world_size=local, **kwargs)


def parallelize(
    model: nn.Module, cfg: Config, info: DistInfo, features: list[str]
) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """Shard ``model`` (built on ``meta``) over the process group and build its optimizers."""
    tables = embedding_modules(model)
    table_paths = [name for name, m in model.named_modules() if any(m is t for t in tables)]  # before DMP swaps them
    for ebc in tables:
        apply_optimizer_in_backward(SPARSE_OPTIMIZERS[cfg.optim.sparse], ebc.parameters(), sparse_optimizer_kwargs(cfg))
    topology = planner_topology(info)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=sharding_constraints(cfg, features, info.device))
    sharders = [EmbeddingBagCollectionSharder(), EmbeddingCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    wrapper = FullyShardDense() if cfg.sharding.dense == "fsdp2" else DefaultDataParallelWrapper()
    dmp = DistributedModelParallel(
        module=model, device=info.device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper
    )
    if info.is_main:
        log.info("sharding plan:\n%s", plan)
    return dmp, build_optimizers(dmp, cfg, table_paths)


class FullyShardDense(DataParallelWrapper):
    """FSDP2 for the dense part: ``fully_shard`` on every maximal submodule that holds no sharded
    embedding module (bottom/top MLPs, interaction and transformer layers). Gradients are
    reduce-scattered as averages, so training matches DDP; parameters and optimizer state are
    split across ranks instead of replicated."""

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        mesh = init_device_mesh(device.type, (env.world_size,))
        for module in dense_subtrees(dmp._dmp_wrapped_module):
            fully_shard(module, mesh=mesh)


def dense_subtrees(module: nn.Module) -> list[nn.Module]:
    """The largest submodules with parameters and no ShardedModule inside."""
    if isinstance(module, ShardedModule):
        return []
    if not any(isinstance(m, ShardedModule) for m in module.modules()):
        return [module] if any(True for _ in module.parameters()) else []
    if any(True for _ in module.parameters(recurse=False)):
        raise ShardingConfigError(
            f"{type(module).__name__} holds parameters next to sharded tables: FSDP2 cannot wrap it alone"
        )
    return [sub for child in module.children() for sub in dense_subtrees(child)]
