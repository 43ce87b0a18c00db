"""The table policy: which embedding tables a dataset gets, their sizes, widths, names, and how a
raw id picks its row.

- Tables: one per sparse feature, named ``t_<feature>``. A sequence feature (``hist_item``)
  shares the table of the sparse feature it names (``item``), so history and target live in one
  embedding space.
- Size (``num_embeddings``): ``min(cardinality, embeddings.max_rows)``, at least 1, unless
  ``embeddings.rows`` sets the feature's size. The cap keeps huge vocabularies trainable (MLPerf
  caps Criteo 1TB at 40M).
- Id -> row: raw id ``i`` of a feature reads row ``i mod num_embeddings`` of its table (floor
  modulo: every integer lands in ``[0, num_embeddings)``), so a table never needs more rows than
  the feature's cardinality and a capped table folds ids together instead of failing. Datasets
  store raw ids; the loader applies this reduction with the sizes :attr:`TablePlan.table_sizes`
  gives it (its kernel, ``data_pipeline.columns.reduce_ids``, is tuned for throughput and must
  agree with :func:`embedding_row`).
- Frequency threshold (``embeddings.min_count`` K > 0): the ids seen at least K times in the train
  rows form the feature's vocabulary; its table has ``len(vocabulary) + 1`` rows (capped as above)
  and every other id, including ids never seen in train, reads the shared out-of-vocabulary row 0
  (the mapping lives in ``data_pipeline.id_counts``; this module only receives the vocabulary sizes).
- Width: every table has the same ``dim``: ``embeddings.dim`` when set, else the model flavor's
  ``embedding_dim`` (:func:`table_dim`). ``embeddings.dim_rule=log2`` narrows low-cardinality tables
  (:func:`rule_dim`), for models whose interaction takes tables of different widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig

from terarec.data_pipeline.schema import DatasetSchema


@dataclass(frozen=True)
class TableSpec:
    """One embedding table."""

    feature: str  # the sparse feature that owns it
    num_embeddings: int
    dim: int
    lookups: tuple[str, ...]  # the batch keys it embeds: the feature, then the sequence features sharing it

    @property
    def name(self) -> str:
        return table_name(self.feature)


@dataclass(frozen=True)
class TablePlan:
    """Every table of a dataset, in the schema's sparse-feature order."""

    tables: tuple[TableSpec, ...]

    @property
    def table_sizes(self) -> dict[str, int]:
        """Feature -> ``num_embeddings``: the modulus the loader reduces the feature's raw ids by
        (a sequence feature uses its table feature's entry)."""
        return {t.feature: t.num_embeddings for t in self.tables}

    def bag_configs(self) -> list[EmbeddingBagConfig]:
        """Sum-pooled tables for an EmbeddingBagCollection; a history feature is pooled (a bag of
        its items) with its target feature's table."""
        return [
            EmbeddingBagConfig(
                name=t.name, embedding_dim=t.dim, num_embeddings=t.num_embeddings, feature_names=list(t.lookups)
            )
            for t in self.tables
        ]

    def sequence_configs(self) -> list[EmbeddingConfig]:
        """Unpooled tables for an EmbeddingCollection (``t_item`` looks up ``item`` and ``hist_item``)."""
        return [
            EmbeddingConfig(
                name=t.name, embedding_dim=t.dim, num_embeddings=t.num_embeddings, feature_names=list(t.lookups)
            )
            for t in self.tables
        ]


def table_name(feature: str) -> str:
    return f"t_{feature}"


def embedding_row(raw_id: int, num_embeddings: int) -> int:
    """The row of a table of ``num_embeddings`` rows that raw id ``raw_id`` reads (the definition;
    the loader applies it to whole columns at once)."""
    return raw_id % num_embeddings


def table_dim(configured: int | None, flavor_dim: int) -> int:
    """The tables' width: ``embeddings.dim`` when the config sets it, else the flavor's."""
    return flavor_dim if configured is None else configured


def rule_dim(dim_rule: str, dim: int, num_embeddings: int) -> int:
    """A table's width under ``embeddings.dim_rule``.

    ``fixed``: ``dim``. ``log2``: ``2 * log2(num_embeddings)`` rounded up to a multiple of 4 (fbgemm's
    kernels need it), at least 4 and at most ``dim``: a 4-value feature gets 4, a 100-value one 16,
    anything above ``2 ** (dim / 2)`` values the full ``dim``. Few values need few dimensions to be
    told apart, and every extra dimension of a rare row is one more weight to overfit.
    """
    if dim_rule == "fixed":
        return dim
    wanted = 4 * math.ceil(2 * math.log2(max(num_embeddings, 2)) / 4)
    return max(4, min(dim, wanted))


def table_sizes(
    schema: DatasetSchema,
    max_rows: int,
    overrides: dict[str, int] | None = None,
    vocabulary_rows: dict[str, int] | None = None,
) -> dict[str, int]:
    """Feature -> ``num_embeddings``: ``min(cardinality, max_rows)`` (at least 1) unless overridden;
    with ``vocabulary_rows`` (feature -> frequent ids + 1 out-of-vocabulary row, from
    ``embeddings.min_count``) that count replaces the cardinality.

    Raises ValueError when ``overrides`` names a feature that is not a sparse feature of ``schema``.
    """
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {f.name for f in schema.sparse})
    if unknown:
        raise ValueError(f"embeddings.rows names '{unknown[0]}', which is not a sparse feature of the dataset")
    natural = {f.name: (vocabulary_rows or {}).get(f.name, f.cardinality) for f in schema.sparse}
    return {name: int(overrides.get(name, max(1, min(rows, max_rows)))) for name, rows in natural.items()}


def plan_tables(
    schema: DatasetSchema,
    dim: int,
    max_rows: int,
    overrides: dict[str, int] | None = None,
    vocabulary_rows: dict[str, int] | None = None,
    dim_rule: str = "fixed",
) -> TablePlan:
    """The tables of ``schema`` at width ``dim`` (per table under ``dim_rule``), sized by :func:`table_sizes`."""
    return TablePlan(
        tuple(
            TableSpec(feature, size, rule_dim(dim_rule, dim, size), _lookups(feature, schema))
            for feature, size in table_sizes(schema, max_rows, overrides, vocabulary_rows).items()
        )
    )


def _lookups(feature: str, schema: DatasetSchema) -> tuple[str, ...]:
    """``feature`` and the sequence features that share its table (``item`` -> ``hist_item``)."""
    return (feature, *(s.name for s in schema.sequence if s.table == feature))
