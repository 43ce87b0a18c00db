"""Metrics of a (sharded) model over an eval loader: AUC, NE, logloss, calibration (ratio, Brier, ECE, MCE),
and GAUC by a group key.

The evaluator needs a model, its eval batches and the metrics, nothing of training: ``Trainer``
hands it its own pipeline (one ``TrainPipelineSparseDist`` rewrites the model's sharded modules, so
a second one must not run on the same model), ``terarec eval`` lets it build a forward-only one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext

import torch
from torchrec.datasets.utils import Batch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from terarec.data_pipeline.loader import BatchLoader
from terarec.trainer.metrics import CALIBRATION_KEYS, BinaryMetrics, GroupAUC

METRIC_KEYS = ("auc", "ne", "logloss", "calibration", *CALIBRATION_KEYS, "gauc")  # the scalar metrics an eval reports


def forward_pipeline(dmp: DistributedModelParallel, device: torch.device) -> TrainPipelineSparseDist:
    """A pipeline for forward passes only: while the model is in eval mode TorchRec's pipeline never
    touches its optimizer, so it gets none."""
    return TrainPipelineSparseDist(dmp, None, device, execute_all_batches=True)


class Evaluator:
    """Runs every batch of ``loader`` through ``dmp`` (``TrainWrapper`` outputs: loss, logits, labels)
    and reduces the metrics over all ranks; every rank gets the same result."""

    def __init__(
        self,
        dmp: DistributedModelParallel,
        loader: BatchLoader,
        device: torch.device,
        bf16: bool = False,
        group_key: str | None = None,
        pipeline: TrainPipelineSparseDist | None = None,
        logit_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.dmp, self.loader, self.device, self.bf16 = dmp, loader, device, bf16
        self.logit_transform = logit_transform  # e.g. a post-hoc calibrator: metrics of the mapped scores
        self.group_key = group_key  # sparse feature whose id groups eval rows for GAUC (e.g. user)
        self.pipeline = pipeline if pipeline is not None else forward_pipeline(dmp, device)
        # the last evaluation's reliability diagram (BinaryMetrics.reliability), kept beside the scalar
        # result so that consumers reading every value as a float (early stopping) never see it
        self.reliability: dict[str, list[float]] = {}

    def evaluate(self) -> dict[str, float]:
        """``auc``, ``ne``, ``logloss``, ``calibration``, ``brier``, ``ece``, ``mce``, ``ece_mass``, ``mce_mass``,
        ``count``, ``positives`` (+ ``gauc``) over the loader."""
        metrics = BinaryMetrics(self.device)
        gauc = GroupAUC() if self.group_key else None
        for logits, labels, groups in forward_outputs(self.dmp, self.loader, self.pipeline, self.bf16, self.group_key):
            logits = logits.float() if self.logit_transform is None else self.logit_transform(logits.float())
            metrics.update(logits, labels)
            if gauc is not None and groups is not None:
                gauc.update(groups, logits, labels)
        metrics.reduce()
        result = metrics.compute()
        self.reliability = metrics.reliability()
        if gauc is not None:
            result["gauc"] = gauc.compute()
        return result


def forward_outputs(
    dmp: DistributedModelParallel,
    loader: Iterable[Batch],
    pipeline: TrainPipelineSparseDist,
    bf16: bool = False,
    group_key: str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """The one forward-only pass over ``loader``: per batch, ``B`` logits, ``B`` labels (padding rows
    included; ``terarec.batch.real_rows`` tells them apart) and, with ``group_key``, each row's group
    id (``B``; -1 for padding). Eval mode, no gradients, bf16 autocast when ``bf16``; the model is back
    in train mode afterwards. Evaluation, predictions and calibration all score rows through it."""
    groups: deque[torch.Tensor] = deque()  # the pipeline runs batches in order: FIFO matches outputs
    batches: Iterator[Batch] = iter(loader)
    if group_key is not None:
        batches = _recording_groups(batches, group_key, groups)
    autocast: AbstractContextManager[object] = (
        torch.autocast(device_type=dmp.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    )
    dmp.eval()
    try:
        with torch.no_grad():
            while True:
                try:
                    with autocast:
                        _, logits, labels = pipeline.progress(batches)
                except StopIteration:
                    return
                yield logits, labels, (groups.popleft() if group_key is not None else None)
    finally:
        dmp.train()


def _recording_groups(batches: Iterator[Batch], key: str, groups: deque[torch.Tensor]) -> Iterator[Batch]:
    """Pass batches through, queueing each row's ``key`` id (-1 for padding rows without one)."""
    for batch in batches:
        jagged = batch.sparse_features[key]
        row_ids = torch.full((len(batch.labels),), -1, dtype=torch.int64)
        # the loader's ids are int32 when the tables allow
        row_ids[jagged.lengths() > 0] = jagged.values()[jagged.offsets()[:-1][jagged.lengths() > 0]].cpu().long()
        groups.append(row_ids)
        yield batch
