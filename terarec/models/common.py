"""Pieces shared by every model: the train wrapper, parameter counting, analytic FLOPs.

FLOPs follow ``torch.utils.flop_counter``: 2 per multiply-accumulate of matrix products
(``Linear``, ``bmm``); elementwise work (activations, norms, bias adds) is not counted.

Training FLOPs per example (:func:`training_flops`) are forward + backward, by the convention of
Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", training compute ``C = 6N`` per
token = 3 x the forward ``2N``) that the Wukong paper's GFLOP/example axis (arXiv 2403.02545,
Table 5) also follows: the backward of every matrix product ``Y = X W`` is two products of the same
size, ``dX = dY W^T`` (the input gradient) and ``dW = X^T dY`` (the weight gradient), so training
costs 3 x forward. It is a convention, not a count: autograd skips the input gradient of the very
first layer on raw dense features, and the optimizer step and embedding updates are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.batch import real_rows

# forward (1) + backward (2: input gradient and weight gradient of every matrix product)
TRAINING_FLOPS_PER_FORWARD_FLOP = 3


def training_flops(forward_flops: int) -> int:
    """Training (forward + backward) FLOPs from forward FLOPs: the one place that convention lives."""
    return TRAINING_FLOPS_PER_FORWARD_FLOP * int(forward_flops)


def mlp_flops(in_features: int, layer_sizes: Sequence[int]) -> int:
    """Matmul FLOPs per example of a chain of Linear layers ``in -> sizes[0] -> ...``."""
    flops, width = 0, in_features
    for size in layer_sizes:
        flops += 2 * width * size
        width = size
    return flops


def mlp_then_linear(
    in_features: int, hidden: Sequence[int], out_features: int, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """``in -> hidden[0] -> ... -> out``: Linear + ``activation`` per hidden layer, a bare Linear last."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_features, size), activation()]
        in_features = size
    return nn.Sequential(*layers, nn.Linear(in_features, out_features))


def embedding_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection))]


def sparse_param_count(model: nn.Module) -> int:
    """Embedding-table parameters (works on ``meta``: counts shapes, reads no data)."""
    return sum(p.numel() for m in embedding_modules(model) for p in m.parameters())


def dense_param_count(model: nn.Module) -> int:
    sparse = {id(p) for m in embedding_modules(model) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in sparse)


class RankingModel(nn.Module):
    """What every registered model is: ``B x N`` dense features + a KJT -> logits ``B x 1``, with
    its analytic forward FLOPs per example and the training FLOPs derived from them (training
    FLOPs x samples is the compute axis of scaling-law sweeps)."""

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        raise NotImplementedError

    def flops_per_example(self) -> int:
        raise NotImplementedError

    def train_flops_per_example(self) -> int:
        """Forward + backward FLOPs per example (:func:`training_flops`)."""
        return training_flops(self.flops_per_example())


class TrainWrapper(nn.Module):
    """``batch -> (loss, (loss, logits, labels))``, the contract of ``TrainPipelineSparseDist``.

    ``batch`` follows :mod:`terarec.batch`: padding rows (which keep batch counts equal across
    ranks) get zero weight, so the loss is the mean BCE over real rows only.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        logits = self.model(batch.dense_features, batch.sparse_features).squeeze(-1).float()
        labels = batch.labels.float()
        weights = real_rows(labels).float()
        per_row = nn.functional.binary_cross_entropy_with_logits(logits, labels.clamp(min=0.0), reduction="none")
        loss = (per_row * weights).sum() / weights.sum().clamp(min=1.0)
        return loss, (loss.detach(), logits.detach(), labels.detach())
