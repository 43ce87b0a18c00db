"""``terarec eval``: evaluate a run's newest checkpoint at any world size; writes ``RUN/eval.json``.

    terarec eval --run RUN [--data DIR] [--nproc N]
    torchrun --nproc_per_node N -m terarec.trainer.evaluate --run-dir RUN [--data DIR]

The run's own ``config.yaml`` rebuilds the model; the checkpoint (written by any number of
processes, with any sharding plan) is resharded by DCP onto this world size's plan.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from terarec.configs.loader import ConfigError, load_config
from terarec.data_pipeline.schema import DatasetError, DatasetSchema
from terarec.models import TrainWrapper
from terarec.models.registry import ModelConfigError
from terarec.trainer.checkpoint import CheckpointManager, checkpoint_dirs
from terarec.trainer.distributed import setup_logging, shutdown_distributed
from terarec.trainer.loop import Trainer
from terarec.trainer.main import group_key, join_process_group, make_loaders
from terarec.trainer.model_factory import build_model
from terarec.trainer.parallelize import parallelize


def run_eval(run: str, data: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir / 'config.yaml'} not found: not a terarec run directory")
    if not checkpoint_dirs(run_dir):
        raise ConfigError(f"no complete checkpoint in {run_dir / 'checkpoints'} (train with checkpoint.final=true)")
    extra = [
        f"run.dir={run_dir}",
        "logging.tensorboard=false",
        *([f"data.path={data}"] if data else []),
        *(overrides or []),
    ]
    cfg = load_config(str(run_dir / "config.yaml"), extra)
    schema = DatasetSchema.load(cfg.data.path)
    torch.manual_seed(cfg.train.seed)
    built = build_model(cfg, schema, "meta")
    info = join_process_group(cfg.train.collective_timeout_s)
    log = setup_logging(info.rank, cfg.logging.level)
    try:
        dmp, optimizer = parallelize(TrainWrapper(built.model), cfg, info, list(built.table_sizes))
        train_loader, eval_loader = make_loaders(cfg, schema, built.table_sizes, info)
        if eval_loader is None:
            raise DatasetError(f"{cfg.data.path} has no '{cfg.data.eval_split}' rows to evaluate")
        checkpoints = CheckpointManager(run_dir, cfg.checkpoint, info.rank)
        trainer = Trainer(
            cfg,
            info,
            dmp,
            optimizer,
            train_loader,
            eval_loader,
            run_dir,
            built.summary(),
            group_key(schema, built.table_sizes),
            checkpoints,
        )
        state = {"model": dmp.state_dict()}
        loaded = checkpoints.load_newest(state)
        if loaded is None:
            raise ConfigError(f"no loadable checkpoint in {run_dir / 'checkpoints'}")
        dmp.load_state_dict(state["model"])
        trainer.step = int(loaded["step"])
        result = {
            **trainer.evaluate(),
            "checkpoint": loaded["path"],
            "step": loaded["step"],
            "data": cfg.data.path,
            "world_size": info.world_size,
            "checkpoint_world_size": loaded.get("world_size"),
        }
        if info.is_main:
            (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
            log.info(
                "eval of %s: auc %.4f on %d rows -> %s",
                loaded["path"],
                result["auc"],
                result["count"],
                run_dir / "eval.json",
            )
        return result
    finally:
        shutdown_distributed()


@record
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="terarec.trainer.evaluate", description="evaluate a run's newest checkpoint")
    parser.add_argument("--run-dir", required=True, help="(not --run: torchrun would take it for its own --run-path)")
    parser.add_argument("--data")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        run_eval(args.run_dir, args.data, args.overrides)
    except (ConfigError, DatasetError, ModelConfigError) as err:
        print(f"terarec: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
