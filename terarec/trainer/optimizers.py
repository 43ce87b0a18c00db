"""A run's optimizers: the fused sparse one, the dense one and the LR schedule of the dense one.

Every run has one ``CombinedOptimizer`` whose members are named by :class:`OptimizerGroup`; the
train loop and checkpoint restore find members by group, never by a string of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import Any

import torch
from fbgemm_gpu.tbe.config import WeightDecayMode
from torch import nn
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from terarec.configs.loader import ConfigError
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


# fbgemm's fused SGD (EXACT_SGD) has no weight decay: L2 there would be silently ignored; these also take eps
L2_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "adam")


def sparse_optimizer_kwargs(cfg: Config) -> dict[str, Any]:
    """The sparse optimizer's constructor arguments; ``embeddings.l2`` is its ``weight_decay``."""
    kwargs: dict[str, Any] = {"lr": cfg.optim.sparse_lr}
    if cfg.optim.sparse in L2_OPTIMIZERS:
        kwargs["eps"] = cfg.optim.eps
    if cfg.embeddings.l2 > 0:
        kwargs["weight_decay"] = cfg.embeddings.l2
    return kwargs


def all_tables_data_parallel(cfg: Config) -> bool:
    """Whether every table is data-parallel (then none is fused: L2 comes from :func:`touched_rows_l2`)."""
    return cfg.sharding.sharding_type == "data_parallel" and all(
        kind == "data_parallel" for kind in cfg.sharding.per_table.values()
    )


def check_l2(cfg: Config, device_type: str) -> None:
    """Raise :class:`ConfigError` where ``embeddings.l2`` cannot apply as "L2 on touched rows" when training on
    ``device_type`` ("cpu"/"cuda"); run by preflight before any file is written, and by :func:`sparse_fused_params`."""
    if cfg.embeddings.l2 <= 0 or all_tables_data_parallel(cfg):
        return  # no fused tables: data-parallel ones get the L2 from touched_rows_l2
    if cfg.sharding.compute_kernel == "dense":
        # sharded tables on the dense kernel take the in-backward torch optimizer on dense num_embeddings x dim
        # gradients: its weight_decay would shrink every row, not the rows a batch looked up
        raise ConfigError(
            "embeddings.l2 with sharding.compute_kernel=dense needs sharding.sharding_type=data_parallel (weight "
            "decay on dense gradients shrinks every row)"
        )
    if device_type == "cpu":
        # measured: fbgemm-gpu-cpu 1.8.0's fused rowwise_adagrad/adagrad kernels take weight_decay and
        # weight_decay_mode=L2 and leave rows exactly as without them; data-parallel tables get the L2 here
        raise ConfigError(
            "embeddings.l2 on CPU needs sharding.sharding_type=data_parallel (fbgemm's CPU fused kernels ignore "
            "weight decay)"
        )
    if cfg.optim.sparse not in L2_OPTIMIZERS:
        raise ConfigError(
            f"embeddings.l2 with fused tables needs optim.sparse in {', '.join(L2_OPTIMIZERS)} (fbgemm's fused "
            f"{cfg.optim.sparse} has no weight decay)"
        )


def sparse_fused_params(cfg: Config, device: torch.device, training: bool = True) -> dict[str, Any] | None:
    """The sharders' ``fused_params``: None (torchrec's defaults) unless ``embeddings.l2`` is set, some
    tables may be fused (not every table data-parallel) and the model is built to train; a ConfigError
    where L2 cannot apply (:func:`check_l2`). Eval/predict/export (``training=False``) never step the
    optimizer: a run trained with L2 on a GPU loads on a CPU.

    fbgemm's fused kernels take ``weight_decay`` from the optimizer's arguments but apply it only
    with a ``weight_decay_mode``; L2 adds ``l2 * w`` to the gradient of each row the batch looks up
    (the backward pass visits no other row), the "L2 on touched rows" of the one-epoch remedies.
    """
    if not training or cfg.embeddings.l2 <= 0 or all_tables_data_parallel(cfg):
        return None
    check_l2(cfg, device.type)
    return {"weight_decay_mode": WeightDecayMode.L2}


def touched_rows_l2(l2: float) -> Callable[[torch.optim.Optimizer, Any, Any], None]:
    """A step pre-hook giving data-parallel tables the fused kernels' L2: ``grad += l2 * w`` on the
    rows whose gradient is non-zero (the rows a batch looked up), so untouched rows stay as they are.
    Data-parallel tables get dense ``num_embeddings x dim`` gradients, where the optimizer's own
    ``weight_decay`` would shrink every row."""

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Before each step: ``grad[r] += l2 * w[r]`` for every 2-D parameter's rows ``r`` with a non-zero
        gradient (``num_embeddings x dim`` tables; other parameters are left alone)."""
        with torch.no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    grad = param.grad
                    if grad is None or grad.dim() != 2:
                        continue
                    touched = grad.abs().sum(dim=1) != 0
                    grad[touched] += l2 * param[touched]

    return hook


def data_parallel_table_optimizer(params: Any, cfg: Config) -> torch.optim.Optimizer:
    """The configured sparse optimizer for data-parallel tables, with L2 on touched rows only."""
    kwargs = sparse_optimizer_kwargs(cfg)
    l2 = kwargs.pop("weight_decay", 0.0)
    optimizer: torch.optim.Optimizer = SPARSE_OPTIMIZERS[cfg.optim.sparse](params, **kwargs)
    if l2 > 0:
        optimizer.register_step_pre_hook(touched_rows_l2(l2))
    return optimizer


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
        members[OptimizerGroup.SPARSE_DP] = KeyedOptimizerWrapper(
            replicated, lambda p: data_parallel_table_optimizer(p, cfg)
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
