"""DLRM (Naumov et al. 2019, arXiv:1906.00091) with torchrec ``DLRM`` semantics.

Shapes: B batch, F sparse features, D embedding dim, N dense inputs.
dense ``B x N`` -> bottom MLP -> ``B x D``; sparse KJT -> pooled ``B x F x D``; dot interaction of
the F + 1 vectors -> ``B x (D + (F+1 choose 2))``; top MLP -> logits ``B x 1``.
Built from torchrec's own arches, with the same module names, so a torchrec ``DLRM`` state dict
loads as-is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionArch, OverArch, SparseArch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.models.common import RankingModel, mlp_flops
from terarec.models.registry import ModelConfigError, ModelEntry, register_model


@dataclass
class DLRMParams:
    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [64, 16])  # last == embedding_dim
    top_mlp: list[int] = field(default_factory=lambda: [128, 64, 1])  # last == 1


def check_mlps(name: str, embedding_dim: int, bottom: list[int], top: list[int]) -> None:
    if not bottom or bottom[-1] != embedding_dim:
        raise ModelConfigError(f"{name}: bottom_mlp must end with embedding_dim={embedding_dim}, got {bottom}")
    if len(top) < 2 or top[-1] != 1:
        raise ModelConfigError(f"{name}: top_mlp needs at least 2 layers ending in 1, got {top}")


def bottom_mlp_follows_dim(hparams: Any, dim: int) -> Any:
    """``ModelEntry.with_embedding_dim`` of DLRM-style models: the bottom MLP projects the dense
    features into the embedding space, so its last layer is the embedding dim."""
    return dataclasses.replace(hparams, embedding_dim=dim, bottom_mlp=[*hparams.bottom_mlp[:-1], dim])


class DLRM(RankingModel):
    """Bottom MLP and pooled embeddings -> an interaction -> top MLP; subclasses (DCNv2) replace
    the interaction only (:meth:`interaction`, :meth:`interaction_flops`), as torchrec's
    ``DLRM_DCN(DLRM)`` does."""

    model_name = "dlrm"  # in error messages

    def __init__(self, ebc: EmbeddingBagCollection, dense_in_features: int, params: Any) -> None:
        super().__init__()
        self.check_params(params)
        self.sparse_arch = SparseArch(ebc)
        self.num_sparse = len(self.sparse_arch.sparse_feature_names)
        self.dense_in_features, self.params = dense_in_features, params
        # creation order = initialisation order (the seeded weights): bottom, interaction, top
        self.dense_arch = DenseArch(dense_in_features, params.bottom_mlp)
        self.inter_arch, self.over_in_features = self.interaction()
        self.over_arch = OverArch(self.over_in_features, params.top_mlp)

    def check_params(self, params: Any) -> None:
        check_mlps(self.model_name, params.embedding_dim, params.bottom_mlp, params.top_mlp)

    def interaction(self) -> tuple[nn.Module, int]:
        """The interaction arch over ``B x D`` dense and ``B x F x D`` sparse, and its output width:
        the dense vector and the ``(F+1 choose 2)`` pairwise dot products."""
        f1 = self.num_sparse + 1
        return InteractionArch(self.num_sparse), self.params.embedding_dim + f1 * (f1 - 1) // 2

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``B x N`` dense + KJT of F keys -> logits ``B x 1``."""
        embedded_dense = self.dense_arch(dense_features)
        embedded_sparse = self.sparse_arch(sparse_features)
        logits: torch.Tensor = self.over_arch(
            self.inter_arch(dense_features=embedded_dense, sparse_features=embedded_sparse)
        )
        return logits

    def interaction_flops(self) -> int:
        f1, d = self.num_sparse + 1, int(self.params.embedding_dim)
        return 2 * f1 * f1 * d  # bmm of (F+1) x D by D x (F+1)

    def flops_per_example(self) -> int:
        return (
            mlp_flops(self.dense_in_features, self.params.bottom_mlp)
            + self.interaction_flops()
            + mlp_flops(self.over_in_features, self.params.top_mlp)
        )


register_model(
    ModelEntry(
        name="dlrm",
        hparams=DLRMParams,
        builder=DLRM,
        description="DLRM, dot interaction (torchrec DLRM semantics)",
        with_embedding_dim=bottom_mlp_follows_dim,
        flavors={
            "small": {},
            "medium": {"embedding_dim": 64, "bottom_mlp": [256, 128, 64], "top_mlp": [512, 256, 1]},
            "criteo-kaggle": {"embedding_dim": 16, "bottom_mlp": [512, 256, 64, 16], "top_mlp": [512, 256, 1]},
        },
    )
)
