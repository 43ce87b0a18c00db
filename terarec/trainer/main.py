"""``terarec train``: one process alone, or every rank under ``torchrun -m terarec.trainer.main``.

torchrun --nproc_per_node 2 -m terarec.trainer.main --config dcnv2_synth train.max_steps=100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from terarec.configs.loader import ConfigError, load_config
from terarec.configs.schema import Config
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.schema import DatasetError, DatasetSchema
from terarec.models import TrainWrapper
from terarec.models.registry import ModelConfigError
from terarec.trainer.checkpoint import CheckpointManager
from terarec.trainer.distributed import DistInfo, init_distributed, seed_everything, setup_logging, shutdown_distributed
from terarec.trainer.loop import Trainer
from terarec.trainer.model_factory import build_model
from terarec.trainer.parallelize import ShardingConfigError, parallelize
from terarec.trainer.run_dir import RunDir, checkpointing_enabled


def join_process_group(timeout_s: float = 600.0) -> DistInfo:
    """torchrun's group, or a one-rank gloo group so DMP runs the same code alone."""
    info = init_distributed(timeout_s)
    if info.backend != "none":
        return info
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return DistInfo(0, 1, 0, info.device, "gloo")


def make_loaders(
    cfg: Config, schema: DatasetSchema, rows: dict[str, int], info: DistInfo
) -> tuple[BatchLoader, BatchLoader | None]:
    common = dict(
        directory=cfg.data.path,
        table_rows=rows,
        dense_fill=cfg.data.dense_fill,
        dense_transform=cfg.data.dense_transform,
        max_history=cfg.data.max_history,
        seed=cfg.train.seed,
    )
    train = BatchLoader(
        LoaderSpec(
            split=cfg.data.train_split,
            batch_size=cfg.train.batch_size,
            shuffle_buffer=cfg.data.shuffle_buffer,
            **common,
        ),
        schema,
        info.rank,
        info.world_size,
        cfg.data.num_workers,
    )
    evaluation = None
    if schema.rows.get(cfg.data.eval_split, 0) > 0:
        evaluation = BatchLoader(
            LoaderSpec(split=cfg.data.eval_split, batch_size=cfg.train.eval_batch_size, shuffle_buffer=0, **common),
            schema,
            info.rank,
            info.world_size,
            0,
        )
    return train, evaluation


def group_key(schema: DatasetSchema, rows: dict[str, int]) -> str | None:
    """The feature that groups eval rows for GAUC (sequence datasets name one), if it has a table."""
    key = schema.extra.get("group_key")
    return key if key in rows else None


def run_training(cfg: Config) -> dict[str, Any]:
    """Train as ``cfg`` says; returns (and on rank 0 writes) ``RUN/metrics.json``."""
    schema = DatasetSchema.load(cfg.data.path)  # bad data or model config fails before any group starts
    torch.manual_seed(cfg.train.seed)  # dense layers are initialised here: the same weights on every run and rank
    built = build_model(cfg, schema, "meta")
    info = join_process_group(cfg.train.collective_timeout_s)
    log = setup_logging(info.rank, cfg.logging.level)
    run = RunDir(Path(cfg.run.dir), info.is_main)
    try:
        run.open_for_training(cfg, schema, info.world_size)  # lock, checks, config record: before any work
        torch.manual_seed(cfg.train.seed)  # the tables DMP materialises: identical on every rank
        summary = built.summary()
        log.info(
            "model %s/%s: %s dense params, %s sparse params, %s FLOPs/example",
            cfg.model.name,
            cfg.model.flavor,
            f"{summary['params_dense']:,}",
            f"{summary['params_sparse']:,}",
            f"{summary['flops_per_example']:,}",
        )
        dmp, optimizer = parallelize(TrainWrapper(built.model), cfg, info, list(built.rows))
        seed_everything(cfg.train.seed, info.rank)
        train_loader, eval_loader = make_loaders(cfg, schema, built.rows, info)
        run_dir = run.path
        wanted = checkpointing_enabled(cfg) or cfg.resume == "auto"  # resume reads them even if no new ones
        checkpoints = CheckpointManager(run_dir, cfg.checkpoint, info.rank, run.record) if wanted else None
        trainer = Trainer(
            cfg,
            info,
            dmp,
            optimizer,
            train_loader,
            eval_loader,
            run_dir,
            summary,
            group_key(schema, built.rows),
            checkpoints,
        )
        if cfg.resume == "auto" and not trainer.restore():
            log.info("resume=auto: no checkpoint in %s yet, starting from scratch", run_dir / "checkpoints")
        return trainer.fit()
    finally:
        run.close()
        shutdown_distributed()


@record
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="terarec.trainer.main", description="terarec trainer entry point (for torchrun)"
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        run_training(cfg)
    except (ConfigError, DatasetError, ModelConfigError, ShardingConfigError) as err:
        print(f"terarec: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
