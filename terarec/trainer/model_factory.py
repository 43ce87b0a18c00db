"""Config + schema -> model: resolve the flavor, size the tables, build on ``meta`` (or a device)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.data_pipeline.criteo_layout import CRITEO_1TB_CARDINALITIES, DENSE_NAMES, SPARSE_NAMES
from terarec.data_pipeline.schema import DatasetSchema, SparseFeature
from terarec.embeddings.tables import bag_table_configs, table_rows
from terarec.models import dense_param_count, get_model, list_models, sparse_param_count


@dataclass
class BuiltModel:
    model: nn.Module
    hparams: Any
    rows: dict[str, int]  # feature -> embedding rows (the loader's modulo)

    def summary(self) -> dict[str, int]:
        return {"params_dense": dense_param_count(self.model), "params_sparse": sparse_param_count(self.model),
                "flops_per_example": int(self.model.flops_per_example())}


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
    try:
        rows = table_rows(schema, cfg.embeddings.max_rows, cfg.embeddings.rows)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    ebc = EmbeddingBagCollection(tables=bag_table_configs(rows, hp.embedding_dim), device=torch.device(device))
    model = get_model(cfg.model.name).builder(hp, ebc, len(schema.dense))
    return BuiltModel(model, hp, rows)


def reference_schema() -> DatasetSchema:
    """Criteo 1TB layout (13 dense, 26 sparse with MLPerf-capped cardinalities) for ``terarec models``."""
    return DatasetSchema(dense=list(DENSE_NAMES), sparse=[SparseFeature(n, c) for n, c in zip(SPARSE_NAMES, CRITEO_1TB_CARDINALITIES)])


def describe_models(max_rows: int = 40_000_000) -> list[dict[str, Any]]:
    """One row per (model, flavor): params and FLOPs on the Criteo-1TB layout, built on ``meta``."""
    from terarec.configs.loader import load_config

    rows: list[dict[str, Any]] = []
    for entry in list_models():
        for flavor in entry.flavors:
            cfg = load_config(None, [f"model.name={entry.name}", f"model.flavor={flavor}", f"embeddings.max_rows={max_rows}"])
            built = build_model(cfg, reference_schema(), "meta")
            rows.append({"model": entry.name, "flavor": flavor, **built.summary(), "embedding_dim": built.hparams.embedding_dim})
    return rows
