"""The one place where sharding, DMP and optimizers are wired: model -> planner -> DMP -> optimizer.

The planner's inputs (topology, storage estimate, per-table constraints) are built in ``planning``.

Embedding tables get a fused sparse optimizer (applied in the backward pass by fbgemm kernels);
the dense part gets a regular optimizer and is data-parallel (DMP wraps it in DDP).
"""

from __future__ import annotations

from typing import Any

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
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from terarec.configs.schema import Config
from terarec.models.common import embedding_modules
from terarec.trainer.distributed import DistInfo
from terarec.trainer.planning import ShardingConfigError, plan_sharding

SPARSE_OPTIMIZERS: dict[str, type] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
DENSE_OPTIMIZERS: dict[str, type] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


def _sparse_optimizer_kwargs(cfg: Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"lr": cfg.optim.sparse_lr}
    if cfg.optim.sparse in ("rowwise_adagrad", "adagrad", "adam"):
        kwargs["eps"] = cfg.optim.eps
    return kwargs


def parallelize(
    model: nn.Module, cfg: Config, info: DistInfo, features: list[str]
) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """Shard ``model`` (built on ``meta``) over the process group and build its optimizers."""
    tables = embedding_modules(model)
    table_paths = [name for name, m in model.named_modules() if any(m is t for t in tables)]  # before DMP swaps them
    for ebc in tables:
        apply_optimizer_in_backward(
            SPARSE_OPTIMIZERS[cfg.optim.sparse], ebc.parameters(), _sparse_optimizer_kwargs(cfg)
        )
    sharders = [EmbeddingBagCollectionSharder(), EmbeddingCollectionSharder()]
    plan = plan_sharding(model, cfg, info, features, sharders)
    wrapper = FullyShardDense() if cfg.sharding.dense == "fsdp2" else DefaultDataParallelWrapper()
    dmp = DistributedModelParallel(
        module=model, device=info.device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper
    )
    return dmp, _optimizers(dmp, cfg, table_paths)


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


def _optimizers(dmp: DistributedModelParallel, cfg: Config, table_modules: list[str]) -> CombinedOptimizer:
    """Fused sparse optimizer + dense optimizer (+ the sparse optimizer for data-parallel tables).

    Data-parallel tables use TorchRec's dense kernel: their weights are ordinary DDP parameters,
    not fused, so without care they would silently get the dense optimizer and LR. They get the
    configured sparse optimizer here, as every other table does.
    """
    remaining = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    replicated = {name: p for name, p in remaining.items() if any(_under(name, prefix) for prefix in table_modules)}
    dense_params = {name: p for name, p in remaining.items() if name not in replicated}
    dense_cls = DENSE_OPTIMIZERS[cfg.optim.dense]
    dense_kwargs: dict[str, Any] = {"lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay}
    dense = KeyedOptimizerWrapper(dense_params, lambda p: dense_cls(p, **dense_kwargs))
    if cfg.optim.grad_clip > 0:
        dense = GradientClippingOptimizer(dense, clipping=GradientClipping.NORM, max_gradient=cfg.optim.grad_clip)
    optimizers: list[tuple[str, Any]] = [("sparse", dmp.fused_optimizer), ("dense", dense)]
    if replicated:
        sparse_cls = SPARSE_OPTIMIZERS[cfg.optim.sparse]
        optimizers.append(
            ("sparse_dp", KeyedOptimizerWrapper(replicated, lambda p: sparse_cls(p, **_sparse_optimizer_kwargs(cfg))))
        )
    return CombinedOptimizer(optimizers)


def _under(param_name: str, module_path: str) -> bool:
    """Whether a DMP parameter name lies under an (unsharded) module path; DMP inserts wrappers."""
    wanted = module_path.split(".")
    parts = [p for p in param_name.split(".") if p not in ("_dmp_wrapped_module", "module")]
    return parts[: len(wanted)] == wanted


def lr_multiplier(step: int, total_steps: int, warmup: int, decay: str) -> float:
    """Linear warm-up over ``warmup`` steps, then constant / linear / cosine decay to 0 at the end."""
    import math

    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay == "none" or total_steps <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
