"""``terarec eval``: evaluate a run's newest checkpoint at any world size; writes ``RUN/eval.json``.

    terarec eval --run RUN [--data DIR] [--calibrated] [--nproc N]
    torchrun --nproc_per_node N -m terarec.trainer.evaluate --run-dir RUN [--data DIR] [--calibrated]

The run's own ``config.yaml`` rebuilds the model; the checkpoint (written by any number of
processes, with any sharding plan) is resharded by DCP onto this world size's plan. Evaluation
reads only the eval split (``--data`` may be a dataset without a train split), loads only the
model part of the checkpoint and builds no ``Trainer``. ``--calibrated`` applies ``RUN/calibration.json``
(``terarec calibrate``) to the logits and writes ``RUN/eval_calibrated.json`` instead, so the
uncalibrated ``eval.json`` stays beside it for a before/after comparison.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torchrec.distributed import DistributedModelParallel

from terarec.configs.arguments import add_eval_arguments
from terarec.configs.loader import ConfigError, load_config
from terarec.configs.schema import Config
from terarec.data_pipeline.schema import DatasetError, DatasetSchema
from terarec.errors import parse_and_run
from terarec.models import TrainWrapper
from terarec.trainer.calibration import calibrate_logits, load_calibration
from terarec.trainer.checkpoint import CheckpointManager, checkpoint_dirs
from terarec.trainer.distributed import DistInfo, setup_logging, shutdown_distributed
from terarec.trainer.evaluator import Evaluator
from terarec.trainer.model_factory import BuiltModel, build_model
from terarec.trainer.parallelize import parallelize
from terarec.trainer.setup import eval_loader, group_key, join_process_group

log = logging.getLogger("terarec")


def eval_config(run: str, data: str | None = None, overrides: list[str] | None = None) -> Config:
    """The run's saved config with ``--data`` and the overrides applied (checks the run has a checkpoint)."""
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
    return load_config(str(run_dir / "config.yaml"), extra)


def _load_model(dmp: DistributedModelParallel, cfg: Config, info: DistInfo) -> dict[str, Any]:
    """The run's model weights into ``dmp`` (DCP reshards them); the loaded checkpoint's trainer state.

    That is the checkpoint the run's own final eval scored (``RUN/selected.json``, or for older runs the
    early-stopping best step of the newest checkpoint), else the newest loadable one, so ``terarec eval``,
    predict and export score what ``metrics.json`` reports."""
    run_dir = Path(cfg.run.dir)
    manager = CheckpointManager(run_dir, cfg.checkpoint, info.rank)
    state = {"model": dmp.state_dict()}  # the model part only: the optimizer state is neither read nor needed
    step, selected_by = manager.selected_step()
    if step >= 0:
        loaded = manager.load_step(step, state)
        if loaded is None:
            raise ConfigError(
                f"the selected checkpoint step_{step} of {run_dir} ({selected_by}) is missing or unreadable"
            )
        loaded = {**loaded, "selected_by": selected_by}
    else:
        loaded = manager.load_newest(state)
        if loaded is None:
            raise ConfigError(f"no loadable checkpoint in {run_dir / 'checkpoints'}")
    dmp.load_state_dict(state["model"])
    return loaded


@dataclass(frozen=True)
class CheckpointSession:
    """A run's model built on ``meta`` for ``cfg``, inside this process group; :meth:`load` shards it and
    loads the run's checkpoint. What eval, predict, calibrate and export all start from."""

    cfg: Config
    schema: DatasetSchema
    built: BuiltModel
    info: DistInfo

    def load(self) -> tuple[DistributedModelParallel, dict[str, Any]]:
        """The sharded model with the checkpoint's weights (:func:`_load_model`) and its trainer state.
        ``parallelize`` also builds the optimizers; they are dropped unused (their state is lazy)."""
        model, tables = TrainWrapper(self.built.model), list(self.built.table_sizes)
        dmp, _ = parallelize(model, self.cfg, self.info, tables, training=False)
        return dmp, _load_model(dmp, self.cfg, self.info)


@contextmanager
def checkpoint_session(cfg: Config, schema: DatasetSchema) -> Iterator[CheckpointSession]:
    """Build ``cfg``'s model (seeded as training seeded it), join the process group and set up logging;
    the group is shut down on leaving, whatever happens inside."""
    torch.manual_seed(cfg.train.seed)
    built = build_model(cfg, schema, "meta")
    info = join_process_group(cfg.train.collective_timeout_s)
    setup_logging(info.rank, cfg.logging.level)
    try:
        yield CheckpointSession(cfg, schema, built, info)
    finally:
        shutdown_distributed()


def run_eval(
    run: str, data: str | None = None, overrides: list[str] | None = None, calibrated: bool = False
) -> dict[str, Any]:
    """Evaluate ``run``'s newest checkpoint on the eval split; returns (and on rank 0 writes) ``RUN/eval.json``
    (``calibrated``: of the calibrated scores, into ``RUN/eval_calibrated.json``)."""
    cfg = eval_config(run, data, overrides)
    schema = DatasetSchema.load(cfg.data.path)
    with checkpoint_session(cfg, schema) as session:
        built, info = session.built, session.info
        batches = eval_loader(cfg, schema, built.table_sizes, info, built.vocabularies)
        if batches is None:
            raise DatasetError(f"{cfg.data.path} has no '{cfg.data.eval_split}' rows to evaluate")
        dmp, loaded = session.load()
        calibrator = load_calibration(cfg.run.dir, int(loaded["step"]), cfg.data.path) if calibrated else None
        transform = (lambda logits: calibrate_logits(calibrator, logits)) if calibrator else None
        key = group_key(schema, built.table_sizes)
        evaluator = Evaluator(dmp, batches, info.device, cfg.train.bf16, key, logit_transform=transform)
        result = {
            **evaluator.evaluate(),
            "reliability": evaluator.reliability,  # the equal-mass bins' mean prediction vs observed rate
            **({"calibrator": calibrator} if calibrator else {}),
            "checkpoint": loaded["path"],
            "step": loaded["step"],
            "selected_by": loaded.get("selected_by", "newest"),  # early_stop: the run's best checkpoint
            "data": cfg.data.path,
            "world_size": info.world_size,
            "checkpoint_world_size": loaded.get("world_size"),
        }
        if info.is_main:
            report = Path(cfg.run.dir) / ("eval_calibrated.json" if calibrated else "eval.json")
            report.write_text(json.dumps(result, indent=2) + "\n")
            log.info("eval of %s: auc %.4f on %d rows -> %s", loaded["path"], result["auc"], result["count"], report)
        return result


@record
def main(argv: list[str] | None = None) -> int:
    """torchrun's entry for ``terarec eval --nproc N``, inside the one error boundary."""
    return parse_and_run(
        "terarec.trainer.evaluate",
        "evaluate a run's newest checkpoint",
        lambda parser: add_eval_arguments(parser, run_flag="--run-dir"),
        lambda args: run_eval(args.run, args.data, args.overrides, args.calibrated),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
