"""``terarec train``: one process alone, or every rank under ``torchrun -m terarec.trainer.main``.

torchrun --nproc_per_node 2 -m terarec.trainer.main --config dcnv2_synth train.max_steps=100
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from terarec.configs.arguments import train_config, train_parser
from terarec.configs.schema import Config
from terarec.data_pipeline.id_counts import Vocabulary
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetSchema
from terarec.errors import run_entry
from terarec.models import TrainWrapper
from terarec.trainer.checkpoint import CheckpointManager
from terarec.trainer.distributed import seed_everything, setup_logging, shutdown_distributed
from terarec.trainer.loop import Trainer
from terarec.trainer.model_factory import build_model
from terarec.trainer.parallelize import parallelize
from terarec.trainer.preflight import check_config_against_data, train_rows
from terarec.trainer.run_dir import RunDir, uses_checkpoints
from terarec.trainer.setup import (
    check_validation,
    eval_loader,
    group_key,
    join_process_group,
    train_loader,
    valid_loader,
)


def run_training(cfg: Config) -> dict[str, Any]:
    """Train as ``cfg`` says; returns (and on rank 0 writes) ``RUN/metrics.json``."""
    schema = DatasetSchema.load(cfg.data.path)  # bad data or model config fails before any group starts
    fingerprint = dataset_fingerprint(cfg.data.path)  # the data just verified: what sweeps/compare reuse by
    check_config_against_data(cfg, schema)  # data.max_train_rows, batch sizes vs each rank's share of the rows
    check_validation(cfg, schema)  # early stopping needs validation rows
    torch.manual_seed(cfg.train.seed)  # dense layers are initialised here: the same weights on every run and rank
    built = build_model(cfg, schema, "meta")
    info = join_process_group(cfg.train.collective_timeout_s)
    log = setup_logging(info.rank, cfg.logging.level)
    run = RunDir(Path(cfg.run.dir), info.is_main)
    try:
        run.open_for_training(cfg, schema, info.world_size)  # lock and checks: before any work
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
        _report_vocabularies(cfg, built.vocabularies, info.is_main)
        train_batches = train_loader(cfg, schema, built.table_sizes, info, built.vocabularies)
        train_batches.prefetch()  # its first windows are read while the model is sharded (a resume may move it)
        dmp, optimizer = parallelize(TrainWrapper(built.model), cfg, info, list(built.table_sizes))
        seed_everything(cfg.train.seed, info.rank)
        eval_batches = eval_loader(cfg, schema, built.table_sizes, info, built.vocabularies)
        run_dir = run.path
        uses = uses_checkpoints(cfg)
        checkpoints = CheckpointManager(run_dir, cfg.checkpoint, info.rank, run.record) if uses else None
        trainer = Trainer(
            cfg,
            info,
            dmp,
            optimizer,
            train_batches,
            eval_batches,
            run_dir,
            {**summary, "dataset_fingerprint": fingerprint, "train_rows": train_rows(cfg, schema)},
            group_key(schema, built.table_sizes),
            checkpoints,
            valid_loader(cfg, schema, built.table_sizes, info, built.vocabularies),
        )
        if cfg.resume == "auto" and not trainer.restore():
            log.info("resume=auto: no checkpoint in %s yet, starting from scratch", run_dir / "checkpoints")
        run.record_start()  # the start has begun: its checkpoint and loader position (if any) were accepted
        return trainer.fit()
    finally:
        run.close()
        shutdown_distributed()


def _report_vocabularies(cfg: Config, vocabularies: dict[str, Vocabulary], is_main: bool) -> None:
    """``embeddings.min_count``: how many ids each table keeps (the rest share its out-of-vocabulary row),
    and a warning when some table keeps none, so a threshold above the data's counts is not silent."""
    if not vocabularies or not is_main:
        return
    log = logging.getLogger("terarec")
    kept = {name: len(vocabulary.ids) for name, vocabulary in vocabularies.items()}
    log.info(
        "embeddings.min_count=%d: ids kept per table %s (the others share each table's out-of-vocabulary row)",
        cfg.embeddings.min_count,
        ", ".join(f"{name} {count:,}" for name, count in kept.items()),
    )
    empty = [name for name, count in kept.items() if count == 0]
    if empty:
        log.warning(
            "embeddings.min_count=%d: %d of %d tables keep no id (%s): every id of theirs maps to one row",
            cfg.embeddings.min_count,
            len(empty),
            len(kept),
            ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else ""),
        )


@record
def main(argv: list[str] | None = None) -> int:
    """torchrun's entry: the arguments of ``terarec train``, inside the one error boundary."""
    return run_entry(_train, argv)


def _train(argv: list[str] | None) -> None:
    parser = train_parser("terarec.trainer.main", "terarec trainer entry point (for torchrun)")
    run_training(train_config(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
