"""The one place where sharding, DMP and optimizers are wired: model -> planner -> DMP -> optimizer
(the optimizers themselves are built by ``terarec.trainer.optimizers``).

The planner's inputs (topology, storage estimate, per-table constraints) are built in ``planning``.

Embedding tables get a fused sparse optimizer (applied in the backward pass by fbgemm kernels);
the dense part gets a regular optimizer and is data-parallel (DMP wraps it in DDP).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DataParallelWrapper, DefaultDataParallelWrapper
from torchrec.distributed.types import ShardedModule, ShardingEnv
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer

from terarec.configs.schema import Config
from terarec.models.common import embedding_modules
from terarec.trainer.distributed import DistInfo
from terarec.trainer.optimizers import (
    SPARSE_OPTIMIZERS,
    build_optimizers,
    sparse_fused_params,
    sparse_optimizer_kwargs,
)
from terarec.trainer.planning import ShardingConfigError, plan_sharding


def parallelize(
    model: nn.Module, cfg: Config, info: DistInfo, features: list[str], training: bool = True
) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """Shard ``model`` (built on ``meta``) over the process group and build its optimizers.

    ``training=False`` (eval, predict, calibrate, export: the optimizers are never stepped) leaves out
    ``embeddings.l2``'s fused weight decay and its device checks."""
    tables = embedding_modules(model)
    table_paths = [name for name, m in model.named_modules() if any(m is t for t in tables)]  # before DMP swaps them
    for ebc in tables:
        apply_optimizer_in_backward(SPARSE_OPTIMIZERS[cfg.optim.sparse], ebc.parameters(), sparse_optimizer_kwargs(cfg))
    fused = sparse_fused_params(cfg, torch.device(info.device), training)  # None unless training with L2
    sharders = [EmbeddingBagCollectionSharder(fused_params=fused), EmbeddingCollectionSharder(fused_params=fused)]
    plan = plan_sharding(model, cfg, info, features, sharders)
    wrapper = FullyShardDense() if cfg.sharding.dense == "fsdp2" else DefaultDataParallelWrapper()
    dmp = DistributedModelParallel(
        module=model, device=info.device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper
    )
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


def sharded_embedding_modules(dmp: nn.Module) -> list[nn.Module]:
    """The embedding modules DMP sharded (those ``embedding_modules`` found in the model before sharding)."""
    return [module for module in dmp.modules() if isinstance(module, ShardedModule)]


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
