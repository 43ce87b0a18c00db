"""Raw rows -> the model's inputs, by the training loader's own column functions.

The loader turns a parquet window into batches with ``data_pipeline/columns.py`` (dense fill and
``log1p``, ids modulo their table's size) and ``window.jagged_column`` (lists capped to their most
recent items); this module calls the same functions on the rows a caller hands in, so an exported
model sees its inputs exactly as training did. It only leaves out what serving has no use for:
shuffling, padding rows and labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data_pipeline.columns import dense_columns, filled, reduce_ids
from terarec.data_pipeline.loader import LoaderSpec, _feature_columns
from terarec.data_pipeline.schema import DatasetError, DatasetSchema
from terarec.data_pipeline.window import jagged_column

Rows: TypeAlias = pa.Table | dict[str, Any]  # a pyarrow table or a dict of equal-length columns


@dataclass(frozen=True)
class FeatureTransform:
    """What the loader did to a row, as plain data (it is saved in the export manifest)."""

    dense: list[str]  # dense columns, in the model's input order
    dense_fill: float
    dense_transform: str  # "log1p" or "none"
    keys: list[str]  # KJT keys (sparse features, then sequences), the loader's key order
    tables: list[str]  # per key: the feature whose table it uses (a history shares its target's)
    caps: list[int | None]  # per key: how many of a list's most recent items are kept (None: all)
    table_sizes: dict[str, int]  # feature -> num_embeddings: the id modulus
    # per key: whether training read it as a list (multi-hot, history) or one id a row; None in exports
    # made before it was recorded (nothing to check against)
    lists: list[bool] | None = None

    @classmethod
    def from_training(
        cls, schema: DatasetSchema, table_sizes: dict[str, int], dense_fill: float, dense_transform: str, history: int
    ) -> FeatureTransform:
        """The transform the loader applies for this schema and these ``data.*`` settings."""
        spec = LoaderSpec("", "", 1, table_sizes, 0, 0, dense_fill, dense_transform, history)
        columns = _feature_columns(schema, spec)
        return cls(
            dense=list(schema.dense),
            dense_fill=dense_fill,
            dense_transform=dense_transform,
            keys=[name for name, _, _ in columns],
            tables=[table for _, table, _ in columns],
            caps=[cap for _, _, cap in columns],
            table_sizes={table: table_sizes[table] for _, table, _ in columns},
            lists=[f.multi_hot for f in schema.sparse] + [True for _ in schema.sequence],
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureTransform:
        return cls(**raw)

    def __call__(self, rows: Rows) -> tuple[torch.Tensor, KeyedJaggedTensor]:
        """Rows -> (``B x N`` float32 dense, KJT with one key per sparse/sequence feature)."""
        table = rows if isinstance(rows, pa.Table) else pa.table(rows)
        missing = [name for name in [*self.dense, *self.keys] if name not in table.column_names]
        if missing:
            raise DatasetError(f"the rows have no column '{missing[0]}' (the model reads {self.dense + self.keys})")
        dense = dense_columns(table, self.dense, self.dense_fill, self.dense_transform, None)
        values, lengths = [], []
        for index, (key, feature, cap) in enumerate(zip(self.keys, self.tables, self.caps)):
            column = table.column(key)
            modulus = self.table_sizes[feature]
            is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            if self.lists is not None and is_list != self.lists[index]:
                trained = "lists of ids (multi-hot)" if self.lists[index] else "one id a row"
                given = "lists of ids (multi-hot)" if is_list else "one id a row"
                raise DatasetError(f"column '{key}' holds {given}, but the model was trained on {trained}")
            if is_list:
                ids, offsets = jagged_column(column, cap)
                values.append(reduce_ids(ids, modulus).astype(np.int64, copy=False))
                lengths.append(np.diff(offsets))
            else:
                values.append(reduce_ids(filled(column, 0), modulus).astype(np.int64, copy=False))
                lengths.append(np.ones(table.num_rows, np.int64))
        kjt = KeyedJaggedTensor(
            keys=self.keys,
            values=torch.from_numpy(np.concatenate(values) if values else np.zeros(0, np.int64)),
            lengths=torch.from_numpy(np.concatenate(lengths) if lengths else np.zeros(0, np.int64)),
            stride=table.num_rows,
        )
        return torch.from_numpy(np.ascontiguousarray(dense.T)), kjt
