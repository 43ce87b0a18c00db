"""Checks of the config against the dataset, run before any process group starts.

The config loader checks each value on its own (``train.batch_size >= 1``); what only the data can
tell is checked here from ``schema.json``'s split row counts and the world size torchrun announces
in ``WORLD_SIZE``. A rank's loader pads every batch to the full batch size, so a batch larger than
a rank's rows buys nothing but padding:

- train: an error naming the largest batch size that fits (``check_batch_fits``, which
  ``terarec compare`` applies too);
- eval: the batch is clamped to a rank's eval rows with one warning (eval metrics do not depend on
  the batch size, and the saved config keeps the value the user asked for).
"""

from __future__ import annotations

import os
import sys

from terarec.configs.loader import check_batch_fits, rows_per_rank
from terarec.configs.schema import Config
from terarec.data_pipeline.schema import DatasetSchema


def announced_world_size() -> int:
    """The number of ranks torchrun will start (``WORLD_SIZE``; 1 for a plain ``terarec train``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def eval_batch_size(cfg: Config, schema: DatasetSchema, world_size: int) -> int:
    """``train.eval_batch_size``, clamped to a rank's share of the eval rows (when schema.json counts any)."""
    rows = schema.rows.get(cfg.data.eval_split, 0)
    return min(cfg.train.eval_batch_size, rows_per_rank(rows, world_size)) if rows > 0 else cfg.train.eval_batch_size


def check_config_against_data(cfg: Config, schema: DatasetSchema, world_size: int | None = None) -> None:
    """Raise :class:`ConfigError` if the train batch cannot be filled; warn once if eval's is clamped."""
    world = world_size or announced_world_size()
    train_rows = schema.rows.get(cfg.data.train_split)
    if train_rows is not None:  # schema.json counts every split it writes; None: nothing to check against
        check_batch_fits(cfg.train.batch_size, cfg.data.train_split, train_rows, world)
    clamped = eval_batch_size(cfg, schema, world)
    if clamped < cfg.train.eval_batch_size and os.environ.get("RANK", "0") == "0":
        eval_rows = schema.rows[cfg.data.eval_split]
        ranks = f"{world} rank{'s' if world > 1 else ''}"
        print(  # logging is set up only once the group exists; this line comes before it, from rank 0 alone
            f"terarec: warning: train.eval_batch_size={cfg.train.eval_batch_size} exceeds the {clamped:,} "
            f"eval rows per rank ({eval_rows:,} rows in '{cfg.data.eval_split}' over {ranks}): using {clamped:,}",
            file=sys.stderr,
        )
