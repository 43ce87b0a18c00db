"""``train.reinit_embeddings_each_epoch``: re-draw the embedding tables at every epoch boundary.

MEDA ("Multi-Epoch learning with Data Augmentation for deep CTR models", Liu et al. 2024,
arXiv:2407.01607) traces the one-epoch phenomenon (Zhang et al. 2022, "Towards Understanding the
Overfitting Phenomenon of Deep Click-Through Rate Prediction Models", CIKM 2022) to the dense layers
fitting one particular set of embeddings: re-initialising the embeddings at the start of each
epoch, while the dense layers keep training, lets later epochs help instead of overfit. The sparse
optimizer's state (Adagrad sums, Adam moments and step counters) is zeroed with the rows it belonged
to, so the new rows start at the full learning rate as the first epoch's did. Caching kernels are
refused (:func:`check_reinit`): their rows are not all in the shard this overwrites.

The new weights are a function of (``train.seed``, epoch, table) only: each table is drawn whole from
its own generator, uniform in ``±sqrt(1 / num_embeddings)`` (torchrec's default table init), and
each rank copies the rows of its shards, so every world size and sharding plan gets the same tables.
Memory: one full table at a time on every rank (fine for the tables this is meant for, small data;
not for 1TB-sized tables).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.optim.keyed import CombinedOptimizer

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.trainer.optimizers import OptimizerGroup, members_of
from terarec.trainer.parallelize import sharded_embedding_modules

# kernels whose rows live partly outside the local shard tensor (a UVM cache, a key-value or SSD store):
# overwriting the shard would leave the cached or stored rows as they were
UNCACHED_ONLY_KERNELS = (
    "fused_uvm_caching",
    "quant_uvm_caching",
    "key_value",
    "ssd_virtual_table",
    "dram_virtual_table",
    "dram_ssd_virtual_table",
)


def check_reinit(cfg: Config) -> None:
    """Raise :class:`ConfigError` when ``train.reinit_embeddings_each_epoch`` asks for a caching kernel."""
    if cfg.train.reinit_embeddings_each_epoch and cfg.sharding.compute_kernel in UNCACHED_ONLY_KERNELS:
        raise ConfigError(
            f"train.reinit_embeddings_each_epoch cannot re-draw tables of sharding.compute_kernel="
            f"{cfg.sharding.compute_kernel} (rows cached or stored outside the shard): use fused or dense"
        )


def table_weights(dmp: nn.Module) -> dict[str, Any]:
    """Table name -> its weight (ShardedTensor or plain tensor, sharing storage), from the sharded
    embedding modules themselves (their state dict: ``embedding_bags.<table>.weight`` /
    ``embeddings.<table>.weight``), not from markers in the whole model's keys."""
    out: dict[str, Any] = {}
    for module in sharded_embedding_modules(dmp):
        for key, value in module.state_dict().items():
            _, table, leaf = key.split(".")
            if leaf == "weight":
                out[table] = value
    return out


def fresh_table(name: str, rows: int, dim: int, seed: int, epoch: int) -> torch.Tensor:
    """``rows x dim`` uniform in ``±sqrt(1 / rows)``, drawn from a generator of (seed, epoch, table)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + zlib.crc32(name.encode()))
    bound = (1.0 / rows) ** 0.5
    return torch.rand(rows, dim, generator=generator) * (2 * bound) - bound


def reinitialize_tables(dmp: nn.Module, optimizer: CombinedOptimizer, seed: int, epoch: int) -> list[str]:
    """Overwrite every table's rows with :func:`fresh_table` and zero its sparse optimizer state;
    returns the tables' names."""
    with torch.no_grad():
        tables = table_weights(dmp)
        for name, weight in tables.items():
            # the global size from the metadata: ShardedTensor.size() warns that ShardedTensor is deprecated
            size = weight.metadata().size if isinstance(weight, ShardedTensor) else weight.size()
            rows, dim = size
            fresh = fresh_table(name, rows, dim, seed, epoch)
            if isinstance(weight, ShardedTensor):
                for shard in weight.local_shards():
                    (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    shard.tensor.copy_(fresh[r0 : r0 + nr, c0 : c0 + nc])
            else:
                weight.copy_(fresh)
        for member in members_of(optimizer, OptimizerGroup.SPARSE, OptimizerGroup.SPARSE_DP):
            for state in member.state.values():
                for value in state.values():
                    _zero(value)
    return sorted(tables)


def _zero(value: Any) -> None:
    """Zero optimizer state, the 0-dim step counters too (Adam's bias correction restarts with the rows)."""
    if isinstance(value, ShardedTensor):
        for shard in value.local_shards():
            shard.tensor.zero_()
    elif isinstance(value, torch.Tensor):
        value.zero_()
