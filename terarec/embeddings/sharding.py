"""Per-table sharding policy: which sharding types and compute kernels the planner may give each table.

The trainer passes plain values (the recipe's ``sharding`` section) in; this module turns them into
torchrec ``ParameterConstraints`` keyed by table name, and rejects what cannot run on the device
with one clear message before the planner sees it (the planner's own failure is a long traceback).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.planner import ParameterConstraints
from torchrec.distributed.types import ShardingType

from terarec.embeddings.tables import table_name

# torchrec's embedding-bag sharder offers these only for compute_device="cuda"; on CPU the planner
# would fail with "No available sharding type"
CUDA_ONLY_SHARDING = frozenset({"row_wise", "table_row_wise", "grid_shard"})
CPU_SHARDING = ("data_parallel", "table_wise", "column_wise", "table_column_wise")
SHARDING_TYPES = frozenset(t.value for t in ShardingType)
COMPUTE_KERNELS = frozenset(k.value for k in EmbeddingComputeKernel)


class TableShardingError(ValueError):
    """A sharding type or compute kernel the device cannot run, or a table that does not exist.

    A user mistake in the recipe: the trainer reports it as one ``terarec: error:`` line."""


def sharding_constraints(
    features: Sequence[str],
    *,
    sharding_type: str | None,
    per_table: Mapping[str, str],
    compute_kernel: str | None,
    device_type: str,
) -> dict[str, ParameterConstraints]:
    """Planner constraints per table (``t_<feature>``) from the recipe's sharding choices.

    ``per_table`` (feature -> sharding type) overrides ``sharding_type`` (every table); a table
    with neither, and no ``compute_kernel``, gets no constraint: the planner chooses freely.
    ``device_type`` is ``"cpu"`` or ``"cuda"``; CUDA-only sharding types are rejected elsewhere.
    """
    unknown = sorted(set(per_table) - set(features))
    if unknown:
        raise TableShardingError(
            f"sharding.per_table names '{unknown[0]}', not a sparse feature (features: {', '.join(features)})"
        )
    if compute_kernel is not None and compute_kernel not in COMPUTE_KERNELS:
        raise TableShardingError(
            f"sharding.compute_kernel '{compute_kernel}' is not one of {', '.join(sorted(COMPUTE_KERNELS))}"
        )
    constraints: dict[str, ParameterConstraints] = {}
    for feature in features:
        kind = per_table.get(feature, sharding_type)
        if kind is None and compute_kernel is None:
            continue
        if kind is not None:
            _check_sharding_type(kind, feature, device_type)
        constraints[table_name(feature)] = ParameterConstraints(
            sharding_types=[kind] if kind else None, compute_kernels=[compute_kernel] if compute_kernel else None
        )
    return constraints


def _check_sharding_type(kind: str, feature: str, device_type: str) -> None:
    if kind not in SHARDING_TYPES:
        raise TableShardingError(f"sharding type '{kind}' for '{feature}' is not one of {sorted(SHARDING_TYPES)}")
    if kind in CUDA_ONLY_SHARDING and device_type != "cuda":
        raise TableShardingError(
            f"sharding type '{kind}' needs CUDA; on CPU use {', '.join(CPU_SHARDING[:-1])} or {CPU_SHARDING[-1]}"
        )
