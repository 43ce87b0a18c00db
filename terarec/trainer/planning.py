"""The sharding planner's inputs, built the way torchrec expects them, and its plan in one log line.

- the hardware (``Topology``) goes through ``TopologyFactory``: detected memory as a
  ``HardwareConfig``, the world as a ``TrainerConfig``;
- the storage the dense part will take is estimated here from the model and the dense optimizer
  (torchrec's own heuristic cannot see real sizes when the model is on ``meta``, and says so);
- the per-table policy (``sharding.*`` in the recipe) comes from ``terarec.embeddings.sharding``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import HardwareConfig, KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ModuleSharder, ShardingPlan

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.embeddings.sharding import TableShardingError, sharding_constraints
from terarec.models.common import embedding_modules
from terarec.trainer.distributed import DistInfo

log = logging.getLogger("terarec")

# storage kept free beyond the estimates below (torchrec's default margin for its heuristic)
STORAGE_MARGIN = 0.15
# optimizer state per dense parameter, in copies of the parameter (Adam: two moments; Adagrad: one sum)
DENSE_OPTIMIZER_STATE_COPIES = {"adam": 2, "adamw": 2, "adagrad": 1, "sgd": 0}


class ShardingConfigError(ConfigError):
    """A sharding type the device cannot run, or a table name that does not exist."""


def planner_topology(info: DistInfo) -> Topology:
    """The planner's view of the hardware, from the real devices: GPU memory on CUDA (so tables
    that do not fit are planned row-wise or on the UVM-caching kernel), host memory on CPU."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    hbm = torch.cuda.get_device_properties(info.device).total_memory if info.device.type == "cuda" else None
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    ddr = pages * page_size // max(local, 1)  # host memory shared by the local ranks
    return TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=info.world_size, local_world_size=local),
        hardware_config=HardwareConfig(hbm_cap_bytes=hbm, ddr_cap_bytes=ddr),
        kernel_config=KernelConfig(compute_device=info.device.type),
    )


def dense_tensor_estimate(model: nn.Module, dense_optimizer: str, dense_parallel: str, world_size: int) -> int:
    """Bytes per rank the dense (non-table) part holds while training, for the planner's budget.

    DDP: weights + gradients (DDP's buckets are the gradients: ``gradient_as_bucket_view``) +
    optimizer state, all replicated. FSDP2: the same split over the ranks, plus one full copy of
    the weights gathered for forward/backward. Works on ``meta`` (reads shapes, not data).
    """
    table_params = {id(p) for m in embedding_modules(model) for p in m.parameters()}
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in table_params)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    held = weights * (2 + DENSE_OPTIMIZER_STATE_COPIES.get(dense_optimizer, 2))
    if dense_parallel == "fsdp2":
        held = held // max(world_size, 1) + weights
    return max(1, held + buffers)  # 0 would make torchrec fall back to its own (warned-about) heuristic


def plan_sharding(
    model: nn.Module, cfg: Config, info: DistInfo, features: list[str], sharders: list[ModuleSharder[nn.Module]]
) -> ShardingPlan:
    """One plan for every rank (computed on rank 0, broadcast) under the recipe's table policy."""
    try:
        constraints = sharding_constraints(
            features,
            sharding_type=cfg.sharding.sharding_type,
            per_table=cfg.sharding.per_table,
            compute_kernel=cfg.sharding.compute_kernel,
            device_type=info.device.type,
        )
    except TableShardingError as err:
        raise ShardingConfigError(str(err)) from None
    estimate = dense_tensor_estimate(model, cfg.optim.dense, cfg.sharding.dense, info.world_size)
    planner = EmbeddingShardingPlanner(
        topology=planner_topology(info),
        constraints=constraints,
        storage_reservation=HeuristicalStorageReservation(STORAGE_MARGIN, dense_tensor_estimate=estimate),
    )
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    if info.is_main:
        log.info("%s", plan_summary(plan, info.world_size))
        log.debug("sharding plan:\n%s", plan)
    return plan


def plan_summary(plan: ShardingPlan, world_size: int) -> str:
    """``sharding plan: 26 tables over 2 ranks: 20 table_wise (fused), 6 data_parallel (dense)``."""
    kinds = Counter(
        (sharding.sharding_type, sharding.compute_kernel)
        for module_plan in plan.plan.values()
        for sharding in module_plan.values()
    )
    parts = ", ".join(f"{n} {kind} ({kernel})" for (kind, kernel), n in kinds.most_common())
    ranks = f"{world_size} rank{'s' if world_size != 1 else ''}"
    return f"sharding plan: {sum(kinds.values())} tables over {ranks}: {parts} (the full plan at logging.level=DEBUG)"
