"""A run's optimizers: the fused sparse one, the dense one and the LR schedule of the dense one.

Every run has one ``CombinedOptimizer`` whose members are named by :class:`OptimizerGroup`; the
train loop and checkpoint restore find members by group, never by a string of their own.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import torch
from torch import nn
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from terarec.configs.schema import Config

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


class OptimizerGroup(str, Enum):
    """The members of a run's ``CombinedOptimizer``.

    The values prefix the optimizer's state-dict keys (``dense.<param>.exp_avg``), so they are part
    of the checkpoint format: renaming one makes older checkpoints unloadable.
    """

    SPARSE = "sparse"  # fused into the sharded tables' backward pass (fbgemm); keeps its LR
    DENSE = "dense"  # the dense parameters (DDP/FSDP2): the one the LR schedule drives
    SPARSE_DP = "sparse_dp"  # data-parallel tables: plain DDP parameters given the sparse optimizer

    @property
    def lazy_state(self) -> bool:
        """Whether the state is created on the first step (it must be created before a restore
        can load into it); the fused optimizer holds its state from the start."""
        return self is not OptimizerGroup.SPARSE


def combine(members: dict[OptimizerGroup, KeyedOptimizer]) -> CombinedOptimizer:
    """One ``CombinedOptimizer`` of ``members``, named by their group's value, in insertion order."""
    return CombinedOptimizer([(group.value, optimizer) for group, optimizer in members.items()])


def members_of(optimizer: CombinedOptimizer, *groups: OptimizerGroup) -> list[KeyedOptimizer]:
    """The members of ``optimizer`` that belong to any of ``groups``, in the optimizer's order."""
    wanted = {group.value for group in groups}
    return [member for name, member in optimizer.optimizers if name in wanted]


def sparse_optimizer_kwargs(cfg: Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"lr": cfg.optim.sparse_lr}
    if cfg.optim.sparse in ("rowwise_adagrad", "adagrad", "adam"):
        kwargs["eps"] = cfg.optim.eps
    return kwargs


def build_optimizers(dmp: nn.Module, cfg: Config, table_modules: list[str]) -> CombinedOptimizer:
    """Fused sparse optimizer + dense optimizer (+ the sparse optimizer for data-parallel tables).

    ``dmp`` is the ``DistributedModelParallel`` whose tables got their fused optimizer before
    sharding; ``table_modules`` are the embedding modules' paths in the unsharded model.
    Data-parallel tables use TorchRec's dense kernel: their weights are ordinary DDP parameters,
    not fused, so without care they would silently get the dense optimizer and LR. They get the
    configured sparse optimizer here, as every other table does.
    """
    remaining = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    replicated = {name: p for name, p in remaining.items() if any(_under(name, prefix) for prefix in table_modules)}
    dense_params = {name: p for name, p in remaining.items() if name not in replicated}
    dense_cls = DENSE_OPTIMIZERS[cfg.optim.dense]
    dense_kwargs: dict[str, Any] = {"lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay}
    dense: KeyedOptimizer = KeyedOptimizerWrapper(dense_params, lambda p: dense_cls(p, **dense_kwargs))
    if cfg.optim.grad_clip > 0:
        dense = GradientClippingOptimizer(dense, clipping=GradientClipping.NORM, max_gradient=cfg.optim.grad_clip)
    members = {OptimizerGroup.SPARSE: dmp.fused_optimizer, OptimizerGroup.DENSE: dense}
    if replicated:
        sparse_cls = SPARSE_OPTIMIZERS[cfg.optim.sparse]
        members[OptimizerGroup.SPARSE_DP] = KeyedOptimizerWrapper(
            replicated, lambda p: sparse_cls(p, **sparse_optimizer_kwargs(cfg))
        )
    return combine(members)


def _under(param_name: str, module_path: str) -> bool:
    """Whether a DMP parameter name lies under an (unsharded) module path; DMP inserts wrappers."""
    wanted = module_path.split(".")
    parts = [p for p in param_name.split(".") if p not in ("_dmp_wrapped_module", "module")]
    return parts[: len(wanted)] == wanted


def lr_multiplier(step: int, total_steps: int, warmup: int, decay: str) -> float:
    """Linear warm-up over ``warmup`` steps, then constant / linear / cosine decay to 0 at the end."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay == "none" or total_steps <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
