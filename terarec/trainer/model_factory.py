"""Config + schema -> model: resolve the flavor, size the tables, build on ``meta`` (or a device)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.data_pipeline.criteo_layout import CRITEO_1TB_CARDINALITIES, DENSE_NAMES, SPARSE_NAMES
from terarec.data_pipeline.schema import DatasetSchema, SequenceFeature, SparseFeature
from terarec.data_pipeline.sequences import HISTORY_PARTS, HISTORY_PREFIX, TIME_GAP_BUCKETS
from terarec.embeddings.tables import bag_table_configs, sequence_table_configs, table_rows
from terarec.models import dense_param_count, get_model, list_models, sparse_param_count


@dataclass
class BuiltModel:
    model: nn.Module
    hparams: Any
    rows: dict[str, int]  # feature -> embedding rows (the loader's modulo)

    def summary(self) -> dict[str, int]:
        return {
            "params_dense": dense_param_count(self.model),
            "params_sparse": sparse_param_count(self.model),
            "flops_per_example": int(self.model.flops_per_example()),
        }


def resolve_hparams(cfg: Config) -> Any:
    entry = get_model(cfg.model.name)
    overrides = dict(cfg.model.args)
    if cfg.model.num_layers is not None:
        overrides["num_layers"] = cfg.model.num_layers
    hp = entry.resolve(cfg.model.flavor, overrides)
    if cfg.embeddings.dim is not None and cfg.embeddings.dim != hp.embedding_dim:
        # the bottom MLP projects dense features into the embedding space: it follows the dim
        changes: dict[str, Any] = {"embedding_dim": cfg.embeddings.dim}
        if hasattr(hp, "bottom_mlp"):
            changes["bottom_mlp"] = [*hp.bottom_mlp[:-1], cfg.embeddings.dim]
        hp = dataclasses.replace(hp, **changes)
    return hp


def build_model(cfg: Config, schema: DatasetSchema, device: str | torch.device = "meta") -> BuiltModel:
    """The model with its EmbeddingBagCollection on ``device`` (``meta``: DMP materialises shards)."""
    hp = resolve_hparams(cfg)
    if hasattr(hp, "max_history"):  # sequence models count FLOPs at the loader's history cap
        longest = max((s.max_length for s in schema.sequence), default=0)
        hp = dataclasses.replace(hp, max_history=min(longest, cfg.data.max_history))
    try:
        rows = table_rows(schema, cfg.embeddings.max_rows, cfg.embeddings.rows)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    entry = get_model(cfg.model.name)
    if entry.embeddings == "sequence":
        tables: nn.Module = EmbeddingCollection(
            tables=sequence_table_configs(rows, hp.embedding_dim, schema), device=torch.device(device)
        )
    else:
        tables = EmbeddingBagCollection(
            tables=bag_table_configs(rows, hp.embedding_dim, schema), device=torch.device(device)
        )
    model = entry.builder(tables, len(schema.dense), hp)
    return BuiltModel(model, hp, rows)


def reference_schema() -> DatasetSchema:
    """Criteo 1TB layout (13 dense, 26 sparse with MLPerf-capped cardinalities) for ``terarec models``."""
    return DatasetSchema(
        dense=list(DENSE_NAMES), sparse=[SparseFeature(n, c) for n, c in zip(SPARSE_NAMES, CRITEO_1TB_CARDINALITIES)]
    )


def reference_sequence_schema(max_history: int = 50) -> DatasetSchema:
    """Full Taobao UserBehavior vocabularies (988k users, 4.16M items, 9.4k categories) for BST rows."""
    sizes = {"user": 987_995, "item": 4_162_025, "category": 9_440, "time_gap": TIME_GAP_BUCKETS}
    return DatasetSchema(
        dense=[],
        sparse=[SparseFeature(n, c) for n, c in sizes.items()],
        sequence=[SequenceFeature(HISTORY_PREFIX + p, p, max_history) for p in HISTORY_PARTS],
    )


def describe_models(max_rows: int = 40_000_000) -> list[dict[str, Any]]:
    """One row per (model, flavor): params and FLOPs on the Criteo-1TB layout (BST: full Taobao
    vocabularies, 50-item histories), built on ``meta``."""
    from terarec.configs.loader import load_config

    rows: list[dict[str, Any]] = []
    for entry in list_models():
        for flavor in entry.flavors:
            cfg = load_config(
                None, [f"model.name={entry.name}", f"model.flavor={flavor}", f"embeddings.max_rows={max_rows}"]
            )
            schema = reference_sequence_schema() if entry.embeddings == "sequence" else reference_schema()
            built = build_model(cfg, schema, "meta")
            rows.append(
                {"model": entry.name, "flavor": flavor, **built.summary(), "embedding_dim": built.hparams.embedding_dim}
            )
    return rows
