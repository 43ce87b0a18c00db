"""Checks of the config against the dataset, run before any process group starts.

The config loader checks each value on its own (``train.batch_size >= 1``); what only the data can
tell is checked here from ``schema.json``'s split row counts and the world size torchrun announces
in ``WORLD_SIZE``. A rank's loader pads every batch to the full batch size, so a batch larger than
a rank's rows buys nothing but padding (``train.batch_size=10000000`` on 8,000 rows would allocate
10^7-row batches until memory runs out):

- train: an error naming the largest batch size that fits;
- eval: the batch is clamped to a rank's eval rows with one warning (eval metrics do not depend on
  the batch size, and the saved config keeps the value the user asked for).
"""

from __future__ import annotations

import math
import os
import sys

from terarec.configs.loader import ConfigError
from terarec.configs.schema import Config
from terarec.data_pipeline.schema import DatasetSchema


def announced_world_size() -> int:
    """The number of ranks torchrun will start (``WORLD_SIZE``; 1 for a plain ``terarec train``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rows_per_rank(schema: DatasetSchema, split: str, world_size: int) -> int | None:
    """A rank's share of ``split``'s rows (rounded up); None when ``schema.json`` does not count them."""
    rows = schema.rows.get(split)
    return None if rows is None else math.ceil(rows / world_size)


def eval_batch_size(cfg: Config, schema: DatasetSchema, world_size: int) -> int:
    """``train.eval_batch_size``, clamped to a rank's share of the eval rows (never below 1)."""
    share = rows_per_rank(schema, cfg.data.eval_split, world_size)
    return cfg.train.eval_batch_size if not share else min(cfg.train.eval_batch_size, share)


def check_config_against_data(cfg: Config, schema: DatasetSchema, world_size: int | None = None) -> None:
    """Raise :class:`ConfigError` if the train batch cannot be filled; warn once if eval's is clamped."""
    world = world_size or announced_world_size()
    rank_word = "rank" if world == 1 else "ranks"
    train_rows = schema.rows.get(cfg.data.train_split)
    if train_rows == 0:
        raise ConfigError(f"data.train_split '{cfg.data.train_split}' has no rows in {cfg.data.path}")
    share = rows_per_rank(schema, cfg.data.train_split, world)
    if share is not None and cfg.train.batch_size > share:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} exceeds the {share:,} train rows per rank "
            f"({train_rows:,} rows in '{cfg.data.train_split}' over {world} {rank_word}): use at most {share:,}"
        )
    clamped = eval_batch_size(cfg, schema, world)
    if clamped < cfg.train.eval_batch_size and os.environ.get("RANK", "0") == "0":
        eval_rows = schema.rows[cfg.data.eval_split]
        print(  # logging is set up only once the group exists; this line comes before it, from rank 0 alone
            f"terarec: warning: train.eval_batch_size={cfg.train.eval_batch_size} exceeds the {clamped:,} "
            f"eval rows per rank ({eval_rows:,} rows in '{cfg.data.eval_split}' over {world} {rank_word}): "
            f"using {clamped:,}",
            file=sys.stderr,
        )
