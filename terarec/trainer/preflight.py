"""Checks of the config against the dataset, run before any process group starts.

The config loader checks each value on its own (``train.batch_size >= 1``); what only the data can
tell is checked here from ``schema.json``'s split row counts and the world size torchrun announces
in ``WORLD_SIZE``. A rank's loader pads every batch to the full batch size, so a batch larger than
a rank's rows buys nothing but padding:

- train: an error naming the largest batch size that fits (``check_batch_fits``, which
  ``terarec compare`` applies too);
- eval: the batch is clamped to a rank's eval rows, said in one INFO line. Not a warning: eval
  metrics do not depend on the batch size, and the default 1024 is larger than a rank's share of
  any small eval split, so a healthy run would otherwise always warn. The saved config keeps the
  value the user asked for.
"""

from __future__ import annotations

import logging
import os

import torch

from terarec.configs.loader import ConfigError, check_batch_fits, check_max_train_rows, rows_per_rank
from terarec.configs.loader import train_rows as split_train_rows
from terarec.configs.schema import Config
from terarec.data_pipeline.schema import DatasetSchema
from terarec.trainer.optimizers import check_l2
from terarec.trainer.reinit import check_reinit

log = logging.getLogger("terarec")


def announced_world_size() -> int:
    """The number of ranks torchrun will start (``WORLD_SIZE``; 1 for a plain ``terarec train``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_config_against_data(
    cfg: Config, schema: DatasetSchema, world_size: int | None = None, device_type: str | None = None
) -> None:
    """Raise :class:`ConfigError` if ``data.max_train_rows`` asks for more rows than there are (or the
    dataset does not count its train rows), the train batch is larger than a rank's share of the train
    rows, ``embeddings.l2`` cannot apply on ``device_type`` (default: the one training will use) or
    ``train.reinit_embeddings_each_epoch`` meets a caching kernel: all before any file is written."""
    check_l2(cfg, device_type or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_reinit(cfg)
    world = world_size or announced_world_size()
    split_rows = schema.split_rows.get(cfg.data.train_split)
    if split_rows is None:  # schema.json counts every split it writes; None: nothing to check against
        if cfg.data.max_train_rows > 0:  # the loader's prefix is a fraction of the split's row count
            raise ConfigError(
                f"data.max_train_rows needs the row count of '{cfg.data.train_split}' in {cfg.data.path}/schema.json "
                "(none recorded): prepare the dataset again or unset data.max_train_rows"
            )
        return
    check_max_train_rows(cfg, schema.split_rows)
    if cfg.data.max_train_rows > 0:
        split_rows = cfg.data.max_train_rows  # the batch must fit the prefix that is read
    check_batch_fits(cfg.train.batch_size, cfg.data.train_split, split_rows, world)


def train_rows(cfg: Config, schema: DatasetSchema) -> int:
    """Rows one epoch trains on (all ranks together): ``data.max_train_rows``, else all the carve leaves."""
    return split_train_rows(cfg, schema.split_rows)


def train_row_fractions(cfg: Config, schema: DatasetSchema) -> tuple[float, float]:
    """The train loader's ``rows`` range: the prefix ``[0, max_train_rows)`` or everything before the carve.

    As a fraction the loader turns back into ``round(N * max_train_rows / N)``, exact for any N below 2**52.
    """
    split_rows = schema.split_rows.get(cfg.data.train_split, 0)
    if cfg.data.max_train_rows > 0 and split_rows > 0:
        return (0.0, cfg.data.max_train_rows / split_rows)
    return (0.0, 1.0 - cfg.data.valid_fraction)


def eval_batch_size(cfg: Config, schema: DatasetSchema, world_size: int) -> int:
    """``train.eval_batch_size``, clamped to a rank's share of the eval rows (when schema.json counts any)."""
    rows = schema.split_rows.get(cfg.data.eval_split, 0)
    asked = cfg.train.eval_batch_size
    clamped = min(asked, rows_per_rank(rows, world_size)) if rows > 0 else asked
    if clamped < asked:
        ranks = f"{world_size} rank{'s' if world_size > 1 else ''}"
        log.info(
            "train.eval_batch_size=%d is more than the %s eval rows per rank (%s in '%s' over %s): eval batches of %s",
            asked,
            f"{clamped:,}",
            f"{rows:,}",
            cfg.data.eval_split,
            ranks,
            f"{clamped:,}",
        )
    return clamped
