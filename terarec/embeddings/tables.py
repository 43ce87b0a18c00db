"""Embedding tables from a dataset schema: one table per sparse feature, sized and named here.

Raw ids are reduced modulo the table's row count by the loader, so a table never needs more
rows than the feature's cardinality, and ``max_rows`` caps the big ones (MLPerf caps at 40M).
"""

from __future__ import annotations

from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig

from terarec.data_pipeline.schema import DatasetSchema


def table_rows(schema: DatasetSchema, max_rows: int, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Feature -> embedding rows: ``min(cardinality, max_rows)`` unless overridden."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {f.name for f in schema.sparse})
    if unknown:
        raise ValueError(f"embeddings.rows names '{unknown[0]}', which is not a sparse feature of the dataset")
    return {f.name: int(overrides.get(f.name, max(1, min(f.cardinality, max_rows)))) for f in schema.sparse}


def table_name(feature: str) -> str:
    return f"t_{feature}"


def _features_of(feature: str, schema: DatasetSchema) -> list[str]:
    """``feature`` and the sequence features that share its table (``item`` -> ``hist_item``)."""
    return [feature, *(s.name for s in schema.sequence if s.table == feature)]


def bag_table_configs(rows: dict[str, int], dim: int, schema: DatasetSchema) -> list[EmbeddingBagConfig]:
    """One sum-pooled EmbeddingBag table per feature (``t_<feature>``), in feature order; a history
    feature is pooled (a bag of its items) with its target feature's table."""
    return [
        EmbeddingBagConfig(
            name=table_name(f), embedding_dim=dim, num_embeddings=n, feature_names=_features_of(f, schema)
        )
        for f, n in rows.items()
    ]


def sequence_table_configs(rows: dict[str, int], dim: int, schema: DatasetSchema) -> list[EmbeddingConfig]:
    """Unpooled tables for an EmbeddingCollection: feature ``f``'s table also serves every sequence
    feature whose ``table`` is ``f`` (``t_item`` looks up ``item`` and ``hist_item``)."""
    return [
        EmbeddingConfig(name=table_name(f), embedding_dim=dim, num_embeddings=n, feature_names=_features_of(f, schema))
        for f, n in rows.items()
    ]
