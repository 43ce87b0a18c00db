"""Train / eval loop on ``TrainPipelineSparseDist``: LR schedule, bf16, eval, logs, TensorBoard.

Periodic evaluations (``train.eval_every``) read the validation rows when there are any (model
selection must not see the eval split), else the eval split. With ``train.early_stop`` every
improving validation evaluation is checkpointed and kept; the run stops after ``train.patience``
evaluations without improvement, and the final eval on the eval split runs on the best checkpoint's
weights.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim.keyed import CombinedOptimizer
from tqdm import tqdm

from terarec.batch import real_rows
from terarec.configs.loader import ConfigError, config_to_dict
from terarec.configs.schema import Config
from terarec.data_pipeline.loader import BatchLoader
from terarec.errors import stderr_is_terminal
from terarec.trainer.checkpoint import CheckpointManager, checkpoint_dirs
from terarec.trainer.distributed import DistInfo, any_rank, from_rank0, gather_objects, sum_over_ranks
from terarec.trainer.early_stop import EarlyStopper
from terarec.trainer.evaluator import METRIC_KEYS, Evaluator
from terarec.trainer.faults import fault_point
from terarec.trainer.metrics import CALIBRATION_KEYS
from terarec.trainer.optimizers import OptimizerGroup, lr_multiplier, members_of
from terarec.trainer.preemption import Preempted, PreemptionGuard
from terarec.trainer.reinit import reinitialize_tables

log = logging.getLogger("terarec")


class Trainer:
    def __init__(
        self,
        cfg: Config,
        info: DistInfo,
        dmp: DistributedModelParallel,
        optimizer: CombinedOptimizer,
        train_loader: BatchLoader,
        eval_loader: BatchLoader | None,
        run_dir: Path,
        summary: dict[str, Any],  # what the run records about itself: sizes, FLOPs, dataset fingerprint
        group_key: str | None = None,
        checkpoints: CheckpointManager | None = None,
        valid_loader: BatchLoader | None = None,
    ) -> None:
        self.cfg, self.info, self.dmp, self.optimizer = cfg, info, dmp, optimizer
        self.train_loader, self.eval_loader, self.run_dir, self.summary = train_loader, eval_loader, run_dir, summary
        self.pipeline = TrainPipelineSparseDist(dmp, optimizer, info.device, execute_all_batches=True)
        self.evaluator = (  # the training pipeline: a second pipeline must not rewrite the same model
            Evaluator(dmp, eval_loader, info.device, cfg.train.bf16, group_key, self.pipeline)
            if eval_loader is not None
            else None
        )
        self.validator = (  # model selection reads these rows only
            Evaluator(dmp, valid_loader, info.device, cfg.train.bf16, group_key, self.pipeline)
            if valid_loader is not None
            else None
        )
        self.early_stop = (
            EarlyStopper(cfg.train.early_stop, cfg.train.patience) if cfg.train.early_stop != "off" else None
        )
        self.writer = SummaryWriter(str(run_dir / "tb")) if info.is_main and cfg.logging.tensorboard else None
        self.checkpoints, self._saved_step = checkpoints, -1
        self.step, self.samples, self._samples_before = 0, 0, 0  # _samples_before: from a resumed checkpoint
        self._window_t, self._window_samples, self._local_samples = time.perf_counter(), 0, 0
        self._train_start, self.out_of_time = time.perf_counter(), False  # fit() resets the start; train.max_minutes
        self._data_wait_s = 0.0  # time this rank's training loop waited for the loader's next batch
        self.preemption, self.preempted = PreemptionGuard(), False  # SIGTERM/SIGINT: stop with a checkpoint
        epoch_steps = cfg.train.epochs * len(train_loader)  # the run ends at epochs or max_steps, whichever is first
        self.total_steps = min(epoch_steps, cfg.train.max_steps) if cfg.train.max_steps > 0 else epoch_steps
        self.dense_optimizers = members_of(optimizer, OptimizerGroup.DENSE)
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.dense_optimizers]

    # -- helpers ------------------------------------------------------------------------
    def _set_lr(self) -> float:
        """Dense LR schedule (the fused sparse optimizer keeps its LR)."""
        mult = lr_multiplier(self.step, self.total_steps, self.cfg.optim.warmup_steps, self.cfg.optim.decay)
        for opt, bases in zip(self.dense_optimizers, self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * mult
        return self.cfg.optim.lr * mult

    def _autocast(self):
        if not self.cfg.train.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)

    def _scalar(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, global_step=self.step)

    # -- phases -------------------------------------------------------------------------
    def evaluate(self, split: str = "eval", weights_step: int | None = None) -> dict[str, float]:
        """The eval (or ``"valid"``) metrics of the current weights, logged and written to TensorBoard ({}
        without rows); ``weights_step`` names the step they come from when it is not this one (a restored
        best checkpoint)."""
        evaluator = self.validator if split == "valid" else self.evaluator
        if evaluator is None:
            return {}
        result = evaluator.evaluate()
        for key in METRIC_KEYS:
            if key in result:
                self._scalar(f"{split}/{key}", result[key])
        log.info(
            "%s at step %d%s: auc %.4f ne %.4f logloss %.4f calibration %.3f ece %.4f%s (%d rows)",
            split,
            self.step if weights_step is None else weights_step,
            "" if weights_step in (None, self.step) else f" (best checkpoint, trained to step {self.step})",
            result["auc"],
            result["ne"],
            result["logloss"],
            result["calibration"],
            result["ece"],
            f" gauc {result['gauc']:.4f}" if "gauc" in result else "",
            result["count"],
        )
        return result

    def _next_stop(self) -> int:
        """The step at which training pauses next: an eval or checkpoint point, or the end.
        Time-based checkpoints are considered every ``log_every`` steps."""
        periods = [
            self.cfg.train.eval_every,
            self.cfg.checkpoint.every_steps if self.checkpoints else 0,
            self.cfg.train.log_every if self.checkpoints and self.cfg.checkpoint.every_minutes > 0 else 0,
        ]
        stops = [(self.step // every + 1) * every for every in periods if every > 0]
        return min([self.total_steps, *stops])

    def _at_stop(self) -> None:
        """Evaluate and/or checkpoint when the pause is one of their points (same on every rank)."""
        if self.step >= self.total_steps:
            return
        if self.cfg.train.eval_every and self.step % self.cfg.train.eval_every == 0:
            self._validate()
        if self.checkpoints is not None and self.checkpoints.due(self.step) and self._saved_step != self.step:
            self.save_checkpoint()

    def _validate(self) -> None:
        """A periodic evaluation: on the validation rows if any (early stopping decides on it), else on eval."""
        if self.validator is None:
            self.evaluate()
            return
        result = self.evaluate("valid")
        if self.early_stop is None or not self.early_stop.update(self.step, result):
            if self.early_stop is not None and self.early_stop.stopped:
                log.info(
                    "early stop at step %d: valid %s has not improved for %d evaluations (best %.5f at step %d)",
                    self.step,
                    self.early_stop.metric,
                    self.early_stop.bad_evals,
                    self.early_stop.best_value,
                    self.early_stop.best_step,
                )
            return
        assert self.checkpoints is not None  # run_training enables checkpoints for early stopping
        self.save_checkpoint()  # the best so far: kept whatever keep_last says
        self.checkpoints.protected = self.step

    def _restore_best(self) -> int:
        """Load the best validation checkpoint's model weights for the final eval; the step evaluated.

        Weights last evaluated before the end compete too, after the final checkpoint is saved: that
        evaluation is off the cadence and must not enter the state a resumed run continues from.
        """
        if self.early_stop is None:
            return self.step
        if self.early_stop.last_step != self.step and not self.early_stop.stopped:
            self.early_stop.consider_final(self.step, self.evaluate("valid"))
        if self.early_stop.best_step < 0 or self.early_stop.best_step == self.step:
            return self.step
        assert self.checkpoints is not None
        state = {"model": self.dmp.state_dict()}
        if self.checkpoints.load_step(self.early_stop.best_step, state) is None:
            log.warning(
                "best checkpoint step_%d is unreadable: the final eval uses the last weights", self.early_stop.best_step
            )
            return self.step
        self.dmp.load_state_dict(state["model"])
        log.info("restored the best checkpoint (step %d) for the final eval", self.early_stop.best_step)
        return self.early_stop.best_step

    def _record_selection(self, evaluated_step: int) -> None:
        """Persist which checkpoint the final eval scores (early stopping may pick the last weights after
        the final checkpoint recorded an older best): what ``terarec eval``/predict/export load."""
        if self.checkpoints is None:
            return
        if self.early_stop is None:
            self.checkpoints.clear_selection()  # a stale selection of an earlier early-stopped run
        elif evaluated_step == self.step and self._saved_step != self.step:
            self.checkpoints.clear_selection()
            log.warning(
                "the last weights (step %d) scored best but have no checkpoint (checkpoint.final=false): "
                "terarec eval will score step %d's checkpoint instead",
                self.step,
                self.checkpoints.recorded_best_step(),
            )
        else:
            self.checkpoints.write_selection(evaluated_step, "early_stop")

    # -- checkpoints ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict()}

    def save_checkpoint(self) -> None:
        assert self.checkpoints is not None
        samples = self._samples_before + sum_over_ranks(self._local_samples)
        self._saved_step = self.step
        self.checkpoints.save(
            self.step,
            self._state(),
            {
                "step": self.step,
                "samples": samples,
                "loader": self.train_loader.state_dict(),
                "world_size": self.info.world_size,
                **({"early_stop": self.early_stop.state_dict()} if self.early_stop is not None else {}),
            },
        )

    def restore(self) -> bool:
        """``resume=auto``: continue from the newest loadable checkpoint (False when there is none)."""
        # rank 0's listing decides: ranks that saw different dirs would split between collectives and a return
        if self.checkpoints is None or not from_rank0(bool(checkpoint_dirs(self.run_dir))):
            return False
        for opt in members_of(self.optimizer, *(g for g in OptimizerGroup if g.lazy_state)):
            opt.init_state()  # lazy optimizer state must exist to be loaded into
        self.optimizer.zero_grad(set_to_none=True)
        state = self._state()
        trainer_state = self.checkpoints.load_newest(state)
        if trainer_state is None:
            raise ConfigError(
                f"resume=auto: no checkpoint in {self.run_dir / 'checkpoints'} verifies (see the warnings above); "
                "start over with resume=none run.overwrite=true"
            )
        self.dmp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        self.step, self._samples_before = int(trainer_state["step"]), int(trainer_state["samples"])
        # a mid-epoch position under another world size or data.num_workers is refused (rows would be
        # skipped or repeated); checkpoints from before the loader recorded its layout have the world size here
        self.train_loader.load_state_dict({"world_size": trainer_state.get("world_size"), **trainer_state["loader"]})
        if self.early_stop is not None and "early_stop" in trainer_state:  # best-so-far and patience continue
            self.early_stop.load_state_dict(trainer_state["early_stop"])
            self.checkpoints.protected = self.early_stop.best_step
        return True

    def _run_segment(self, iterator: Iterator, bar: tqdm) -> int:
        """Train on at most ``_next_stop() - step`` batches of ``iterator``; the pipeline drains fully.

        Slicing the iterator (instead of abandoning the pipeline mid-stream) leaves no batch queued
        inside the pipeline when it switches to eval or ends: nothing is trained twice, nothing
        leaks into eval, and the loader position equals the batches trained.
        """
        segment, done = self._until_out_of_time(islice(iterator, self._next_stop() - self.step)), 0
        while True:
            lr = self._set_lr()
            try:
                with self._autocast():
                    loss, _, labels = self.pipeline.progress(segment)
            except StopIteration:
                return done
            done += 1
            self._after_step(float(loss), lr, labels, bar)

    @property
    def _stopping(self) -> bool:
        return self.out_of_time or self.preempted or (self.early_stop is not None and self.early_stop.stopped)

    def _until_out_of_time(self, batches: Iterator) -> Iterator:
        """Stop feeding the pipeline once the time budget is spent or a stop signal came; it then
        trains what it holds, so the loader position stays equal to the batches trained."""
        iterator = iter(batches)
        while not self._stopping:  # checked before pulling: a batch taken from the loader is trained
            start = time.perf_counter()
            batch = next(iterator, None)
            self._data_wait_s += time.perf_counter() - start  # the loader's time on the training thread
            if batch is None:
                return
            yield batch

    def _check_time_budget(self) -> None:
        """Every rank checks at the same step, and stops if any rank is out of time."""
        budget_s = self.cfg.train.max_minutes * 60
        if budget_s > 0 and not self.out_of_time:
            self.out_of_time = any_rank(time.perf_counter() - self._train_start >= budget_s)
            if self.out_of_time:
                log.info("train.max_minutes=%g reached at step %d: stopping", self.cfg.train.max_minutes, self.step)

    def _train_epochs(self) -> None:
        progress = self.cfg.logging.progress and self.info.is_main and stderr_is_terminal()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not progress, unit="step", desc="train")
        self.train_loader.will_read(self.total_steps - self.step)  # so it prepares the next epoch ahead when one comes
        iterator = iter(self.train_loader)
        try:
            while self.step < self.total_steps and not self._stopping:
                target = self._next_stop()
                if self._run_segment(iterator, bar) == 0 and self.step < target and not self._stopping:
                    if len(self.train_loader) == 0:
                        raise RuntimeError(f"no training batches in {self.cfg.data.path}/{self.cfg.data.train_split}")
                    iterator = iter(self.train_loader)  # epoch finished: the next one reshuffles
                    self._reinit_embeddings()
                elif self.step == target and not self._stopping:
                    self._at_stop()
        finally:  # a stop at an epoch's end (early stop, time, signal) or an error leaves windows prepared
            self.train_loader.close()
        bar.close()
        self.samples = self._samples_before + sum_over_ranks(self._local_samples)

    def _reinit_embeddings(self) -> None:
        """``train.reinit_embeddings_each_epoch`` at an epoch boundary (a run resumed from a checkpoint
        saved at an epoch's end gets here too: its restored iterator is exhausted)."""
        if not self.cfg.train.reinit_embeddings_each_epoch:
            return
        epoch = self.step // len(self.train_loader)
        tables = reinitialize_tables(self.dmp, self.optimizer, self.cfg.train.seed, epoch)
        if self.info.is_main:  # every rank re-draws the same tables: one line for the run
            log.info("epoch %d: re-initialised %d embedding tables (MEDA)", epoch, len(tables))

    def _exit_preempted(self) -> None:
        """All ranks saw the signal at the same step and saved together: leave with 128 + signal."""
        if dist.is_initialized():
            dist.barrier()
        saved = f"checkpoint step_{self.step} written" if self.checkpoints is not None else "checkpoints are off"
        log.warning(
            "stopped by a signal after step %d/%d: %s; continue with resume=auto", self.step, self.total_steps, saved
        )
        raise Preempted(self.preemption.signum or signal.SIGTERM)  # ranks the signal missed stop as if sent it

    def _after_step(self, loss: float, lr: float, labels: torch.Tensor, bar: tqdm) -> None:
        self.step += 1
        fault_point("step", self.step, self.info.rank)
        if not self.preempted:  # one cheap all_reduce per step: every rank stops after the same step
            self.preempted = any_rank(self.preemption.requested)
        real = int(real_rows(labels).sum())  # this rank's rows, padding excluded
        self._local_samples += real
        self._window_samples += real
        bar.update(1)
        if self.step % self.cfg.train.log_every == 0:
            self._check_time_budget()
        if self.step % self.cfg.train.log_every == 0 or self.step == self.total_steps:
            self._window_samples = sum_over_ranks(self._window_samples)
            rate = self._window_samples / max(time.perf_counter() - self._window_t, 1e-9)
            self._window_t, self._window_samples = time.perf_counter(), 0
            self._scalar("train/loss", loss)
            self._scalar("train/lr", lr)
            self._scalar("perf/samples_per_s", rate)
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:,.0f}")
            if bar.disable:
                log.info("step %d/%d loss %.4f lr %.2e %.0f samples/s", self.step, self.total_steps, loss, lr, rate)

    def _selection_summary(self) -> dict[str, Any]:
        """What model selection saw, for metrics.json: the early-stopping record (valid metrics at the best step)."""
        if self.early_stop is None:
            return {}
        stopper = self.early_stop
        return {
            "early_stop": {
                "metric": stopper.metric,
                "best_step": stopper.best_step,
                "best_value": stopper.state_dict()["best_value"],
                "stopped_early": stopper.stopped,
                "valid": stopper.best_metrics,
            }
        }

    def _final_valid(self, evaluated_step: int) -> dict[str, float]:
        """``valid_logloss`` / ``valid_auc`` of the weights the final eval scores ({} without validation rows):
        what a sweep's LR selection reads, so that no choice is made on the eval split. Early stopping
        already evaluated the restored best weights; otherwise the validation rows are read once more."""
        if self.validator is None:
            return {}
        stopper = self.early_stop
        if stopper is not None and stopper.best_metrics and stopper.best_step == evaluated_step:
            result = stopper.best_metrics
        else:
            result = self.evaluate("valid")
        return {f"valid_{k}": float(result[k]) for k in ("logloss", "auc") if k in result}

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (or an early stop, a time budget, a signal), save the final checkpoint,
        evaluate the selected weights (the best validation checkpoint under early stopping) on the eval
        split and record which checkpoint that was; returns (and on rank 0 writes) ``RUN/metrics.json``.
        A signal leaves through :class:`Preempted` once its checkpoint is written."""
        start = self._train_start = time.perf_counter()
        self._data_wait_s = 0.0
        if self.checkpoints is not None:
            self.checkpoints.clear_selection()  # until this run's final eval decides again
        with self.preemption:  # a signal during the final save takes effect once it is written
            self._train_epochs()
            train_s = time.perf_counter() - start
            self.preempted = any_rank(self.preemption.requested)  # also a signal after the last step
            if self.checkpoints is not None and (self.cfg.checkpoint.final or self.preempted):
                if self._saved_step != self.step:
                    self.save_checkpoint()
            if any_rank(self.preemption.requested):
                self._exit_preempted()
        evaluated_step = self._restore_best()
        self._record_selection(evaluated_step)
        final, valid = self.evaluate(weights_step=evaluated_step), self._final_valid(evaluated_step)
        metrics = {
            **{k: final.get(k, float("nan")) for k in ("auc", "logloss", "ne", "calibration", *CALIBRATION_KEYS)},
            **({"gauc": final["gauc"]} if "gauc" in final else {}),
            "evaluated_step": evaluated_step,  # the best validation step under early stopping, else the last
            **self._selection_summary(),
            **valid,
            "eval_rows": final.get("count", 0),
            "eval_positives": final.get("positives", 0),
            "samples_per_s": (self.samples - self._samples_before) / max(train_s, 1e-9),
            # of the training loop's time (evals and checkpoints in it included), the share the slowest rank
            # waited for batches: ~0 unless the loader falls behind (its windows are prepared ahead, also at
            # the first step and at epoch starts)
            "data_wait_fraction": max(gather_objects(self._data_wait_s)) / max(train_s, 1e-9),
            "samples": self.samples,
            "steps": self.step,
            "out_of_time": self.out_of_time,
            **self.summary,
            "world_size": self.info.world_size,
            "threads": torch.get_num_threads(),  # intra-op threads per rank: float sums depend on them
            "wall_s": time.perf_counter() - start,
            "reliability": self.evaluator.reliability if self.evaluator is not None and final else {},
        }
        if self.info.is_main:
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            if self.writer is not None:
                hparams = {
                    k: v
                    for k, v in _flatten(config_to_dict(self.cfg)).items()
                    if isinstance(v, (int, float, str, bool))
                }
                self.writer.add_hparams(
                    hparams, {f"hparam/{k}": metrics[k] for k in ("auc", "logloss", "ne")}, run_name="."
                )
                self.writer.close()
            log.info(
                "done: %d steps, %d samples, %.0f samples/s (%.1f%% of it waiting for data); final eval auc %.4f; "
                "run dir %s",
                self.step,
                self.samples,
                metrics["samples_per_s"],
                100 * metrics["data_wait_fraction"],
                metrics["auc"],
                self.run_dir,
            )
        if dist.is_initialized():
            dist.barrier()
        return metrics


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
