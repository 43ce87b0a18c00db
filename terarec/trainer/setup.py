"""What training and evaluation both set up: the process group, the data loaders, the GAUC group key.

Validation rows come from the dataset's ``data.valid_split`` or, with ``data.valid_fraction > 0``, are
carved from the end of the train split (:func:`validation_rows`): the train loader then reads the
rows before the cut, the validation loader the rows after it (``LoaderSpec.rows``).

Kept apart from the entry modules (``trainer/main.py``, ``trainer/evaluate.py``) so that neither
entry imports the other: evaluation needs no train split, no optimizer and no ``Trainer``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.distributed as dist

from terarec.configs.loader import ConfigError, rows_per_rank
from terarec.configs.schema import Config
from terarec.data_pipeline.id_counts import Vocabulary, frequent_ids
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.schema import DatasetSchema
from terarec.trainer.distributed import DistInfo, init_distributed
from terarec.trainer.preflight import eval_batch_size, train_row_fractions


def join_process_group(timeout_s: float = 600.0) -> DistInfo:
    """torchrun's group, or a one-rank gloo group so DMP runs the same code alone."""
    info = init_distributed(timeout_s)
    if info.backend != "none":
        return info
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return DistInfo(0, 1, 0, info.device, "gloo")


Vocabularies = dict[str, Vocabulary]


def run_vocabularies(cfg: Config, schema: DatasetSchema) -> Vocabularies:
    """``embeddings.min_count``'s frequent ids per feature (``data_pipeline.id_counts``), counted over
    exactly the rows the train loader reads (``train_row_fractions``); empty when off. Counted once per
    process by ``build_model`` (``BuiltModel.vocabularies``), which the loaders are given.

    Every rank counts (or reads the cache) itself: a rank-0-counts-others-wait barrier would have to
    outlast a count of the whole train split (hours on Criteo 1TB) within the collective timeout."""
    if cfg.embeddings.min_count <= 0:
        return {}
    rows = train_row_fractions(cfg, schema)
    return frequent_ids(cfg.data.path, schema, cfg.data.train_split, rows, cfg.embeddings.min_count)


def _loader_common(
    cfg: Config, schema: DatasetSchema, table_sizes: dict[str, int], vocabularies: Vocabularies | None
) -> dict[str, Any]:
    """The LoaderSpec fields that the train and eval loaders share (``vocabularies``: the model's, else counted)."""
    return dict(
        directory=cfg.data.path,
        table_sizes=table_sizes,
        vocabularies=run_vocabularies(cfg, schema) if vocabularies is None else vocabularies,
        dense_fill=cfg.data.dense_fill,
        dense_transform=cfg.data.dense_transform,
        max_history=cfg.data.max_history,
        seed=cfg.train.seed,
    )


def validation_rows(cfg: Config, schema: DatasetSchema) -> tuple[str, tuple[float, float], int] | None:
    """Where the validation rows are: (split, row fraction range, row count > 0), or None without any.

    ``data.valid_fraction`` carves the last fraction of the train split (rows in file order, which
    prepare writes in time order): the same rows at every world size and on every run.
    """
    fraction = cfg.data.valid_fraction
    if fraction > 0:
        train_rows = schema.split_rows.get(cfg.data.train_split, 0)
        split, rows, count = (
            cfg.data.train_split,
            (1.0 - fraction, 1.0),
            train_rows - round(train_rows * (1.0 - fraction)),
        )
    else:
        split, rows, count = cfg.data.valid_split, (0.0, 1.0), schema.split_rows.get(cfg.data.valid_split, 0)
    return (split, rows, count) if count > 0 else None


def check_validation(cfg: Config, schema: DatasetSchema) -> None:
    """Early stopping needs validation rows and periodic evaluations: a ConfigError before anything starts."""
    if cfg.train.early_stop == "off":
        return
    if validation_rows(cfg, schema) is None:
        raise ConfigError(
            f"train.early_stop={cfg.train.early_stop} needs validation rows: set data.valid_fraction "
            f"(e.g. 0.1) or prepare the dataset with --valid-fraction ({cfg.data.path} has no "
            f"'{cfg.data.valid_split}' split)"
        )
    if cfg.train.eval_every <= 0:
        raise ConfigError(
            f"train.early_stop={cfg.train.early_stop} needs train.eval_every > 0 (steps between evaluations)"
        )


def train_loader(
    cfg: Config,
    schema: DatasetSchema,
    table_sizes: dict[str, int],
    info: DistInfo,
    vocabularies: Vocabularies | None = None,
) -> BatchLoader:
    """This rank's shuffled batches of ``data.train_split`` (``table_sizes``: feature -> table size),
    without the rows ``data.valid_fraction`` carves out for validation, cut to the first
    ``data.max_train_rows`` when set (a prefix in file order, cut before rows are dealt to ranks)."""
    spec = LoaderSpec(
        split=cfg.data.train_split,
        batch_size=cfg.train.batch_size,
        shuffle_buffer=cfg.data.shuffle_buffer,
        rows=train_row_fractions(cfg, schema),
        **_loader_common(cfg, schema, table_sizes, vocabularies),
    )
    return BatchLoader(spec, schema, info.rank, info.world_size, cfg.data.num_workers)


def valid_loader(
    cfg: Config,
    schema: DatasetSchema,
    table_sizes: dict[str, int],
    info: DistInfo,
    vocabularies: Vocabularies | None = None,
) -> BatchLoader | None:
    """This rank's validation batches in file order (see :func:`validation_rows`), or None without any."""
    own = schema.split_rows.get(cfg.data.valid_split, 0)
    if cfg.data.valid_fraction > 0 and own > 0:  # both asked for: say which rows validate
        logging.getLogger("terarec").info(
            "validation: data.valid_fraction=%s carves the last train rows; the dataset's own '%s' split "
            "(%s rows) is not read (data.valid_fraction=0 uses it)",
            cfg.data.valid_fraction,
            cfg.data.valid_split,
            f"{own:,}",
        )
    found = validation_rows(cfg, schema)
    if found is None:
        return None
    split, rows, count = found
    spec = LoaderSpec(
        split=split,
        batch_size=min(cfg.train.eval_batch_size, rows_per_rank(count, info.world_size)),
        shuffle_buffer=0,
        rows=rows,
        **_loader_common(cfg, schema, table_sizes, vocabularies),
    )
    return BatchLoader(spec, schema, info.rank, info.world_size, 0)


def eval_loader(
    cfg: Config,
    schema: DatasetSchema,
    table_sizes: dict[str, int],
    info: DistInfo,
    vocabularies: Vocabularies | None = None,
) -> BatchLoader | None:
    """This rank's batches of ``data.eval_split`` in file order, or None when the dataset has no eval rows."""
    if schema.split_rows.get(cfg.data.eval_split, 0) <= 0:
        return None
    spec = LoaderSpec(
        split=cfg.data.eval_split,
        batch_size=eval_batch_size(cfg, schema, info.world_size),  # clamped to a rank's eval rows
        shuffle_buffer=0,
        **_loader_common(cfg, schema, table_sizes, vocabularies),
    )
    return BatchLoader(spec, schema, info.rank, info.world_size, 0)


def group_key(schema: DatasetSchema, table_sizes: dict[str, int]) -> str | None:
    """The feature that groups eval rows for GAUC (sequence datasets name one), if it has a table."""
    key = schema.extra.get("group_key")
    return key if key in table_sizes else None
