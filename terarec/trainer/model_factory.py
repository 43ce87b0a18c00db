"""Config + schema -> model: resolve the flavor, plan the tables, build on ``meta`` (or a device)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.data_pipeline.criteo_layout import criteo_1tb_reference_schema
from terarec.data_pipeline.id_counts import Vocabulary
from terarec.data_pipeline.schema import DatasetSchema
from terarec.data_pipeline.sequence_sources import taobao_reference_schema
from terarec.embeddings.tables import TablePlan, plan_tables, table_dim
from terarec.models import ModelEntry, RankingModel, dense_param_count, get_model, list_models, sparse_param_count
from terarec.trainer.setup import run_vocabularies


@dataclass
class BuiltModel:
    model: RankingModel
    hparams: Any
    tables: TablePlan
    vocabularies: dict[str, Vocabulary] = field(default_factory=dict)  # embeddings.min_count's; the loaders' too

    @property
    def table_sizes(self) -> dict[str, int]:
        """Feature -> ``num_embeddings``: what the loader reduces raw ids by."""
        return self.tables.table_sizes

    def summary(self) -> dict[str, int]:
        """Sizes recorded in ``metrics.json``: parameters, forward and training FLOPs per example."""
        return {
            "params_dense": dense_param_count(self.model),
            "params_sparse": sparse_param_count(self.model),
            "flops_per_example": int(self.model.flops_per_example()),
            "train_flops_per_example": int(self.model.train_flops_per_example()),
        }


def resolve_hparams(cfg: Config) -> Any:
    """The flavor's hyper-parameters with the config's overrides, at the tables' width."""
    entry = get_model(cfg.model.name)
    overrides = dict(cfg.model.args)
    if cfg.model.num_layers is not None:
        overrides["num_layers"] = cfg.model.num_layers
    hp = entry.resolve(cfg.model.flavor, overrides)
    dim = table_dim(cfg.embeddings.dim, hp.embedding_dim)
    return entry.with_embedding_dim(hp, dim) if dim != hp.embedding_dim else hp


def build_model(cfg: Config, schema: DatasetSchema, device: str | torch.device = "meta") -> BuiltModel:
    """The model with its embedding collection on ``device`` (``meta``: DMP materialises shards)."""
    entry = get_model(cfg.model.name)
    hp = resolve_hparams(cfg)
    if entry.with_history_cap is not None:
        longest = max((s.max_length for s in schema.sequence), default=0)
        hp = entry.with_history_cap(hp, min(longest, cfg.data.max_history))
    check_dim_rule(cfg)
    vocabulary = run_vocabularies(cfg, schema)
    try:
        tables = plan_tables(
            schema,
            hp.embedding_dim,
            cfg.embeddings.max_rows,
            cfg.embeddings.rows,
            {feature: v.rows_needed for feature, v in vocabulary.items()},
            cfg.embeddings.dim_rule,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    model = entry.builder(_embedding_collection(entry, tables, torch.device(device)), len(schema.dense), hp)
    return BuiltModel(model, hp, tables, vocabulary)


def check_dim_rule(cfg: Config) -> None:
    """``embeddings.dim_rule`` other than ``fixed`` on a model that needs equal widths (its registry
    entry's ``mixed_dims``): one line."""
    if cfg.embeddings.dim_rule != "fixed" and not get_model(cfg.model.name).mixed_dims:
        raise ConfigError(
            f"embeddings.dim_rule={cfg.embeddings.dim_rule} needs a model that takes tables of different widths; "
            f"{cfg.model.name} needs one width for every table (use embeddings.dim_rule=fixed)"
        )


def _embedding_collection(entry: ModelEntry, tables: TablePlan, device: torch.device) -> nn.Module:
    if entry.embeddings == "sequence":
        return EmbeddingCollection(tables=tables.sequence_configs(), device=device)
    return EmbeddingBagCollection(tables=tables.bag_configs(), device=device)


def reference_schema(entry: ModelEntry) -> DatasetSchema:
    """The dataset layout ``terarec models`` sizes ``entry`` on: Criteo 1TB for bag models, the full
    Taobao vocabularies (50-item histories) for sequence models."""
    return taobao_reference_schema() if entry.embeddings == "sequence" else criteo_1tb_reference_schema()


def describe_models(max_rows: int = 40_000_000) -> list[dict[str, Any]]:
    """One entry per (model, flavor): params and FLOPs on its reference schema, built on ``meta``."""
    from terarec.configs.loader import load_config

    described: list[dict[str, Any]] = []
    for entry in list_models():
        for flavor in entry.flavors:
            cfg = load_config(
                None, [f"model.name={entry.name}", f"model.flavor={flavor}", f"embeddings.max_rows={max_rows}"]
            )
            with torch.device("meta"):  # dense layers too: the paper-sized flavors hold billions of weights
                built = build_model(cfg, reference_schema(entry), "meta")
            described.append(
                {"model": entry.name, "flavor": flavor, **built.summary(), "embedding_dim": built.hparams.embedding_dim}
            )
    return described
