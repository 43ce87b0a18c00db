"""DCNv2 (Wang et al. 2021, arXiv:2008.13535): low-rank cross network over dense + sparse.

Shapes: B batch, F sparse features, D embedding dim, N dense inputs, W = (F + 1) * D.
``x0 = [bottom_mlp(dense), e_1 .. e_F]`` flattened to ``B x W``; each cross layer computes
``x_{l+1} = x0 * (U_l (V_l x_l) + b_l) + x_l`` (rank ``low_rank``; with ``num_experts > 1`` a
gated mixture of low-rank experts, the paper's DCN-Mix).

- ``stacked``: top_mlp(cross(x0)), torchrec ``DLRM_DCN`` semantics and module names (the MLPerf
  DLRMv2 model).
- ``parallel``: top_mlp([cross(x0), deep_mlp(x0)]), the paper's parallel structure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torchrec.models.dlrm import InteractionDCNArch
from torchrec.modules.crossnet import LowRankCrossNet, LowRankMixtureCrossNet
from torchrec.modules.mlp import MLP

from terarec.models.common import mlp_flops
from terarec.models.dlrm import DLRM, bottom_mlp_follows_dim
from terarec.models.registry import ModelConfigError, ModelEntry, register_model


@dataclass
class DCNv2Params:
    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [64, 16])  # last == embedding_dim
    num_layers: int = 3  # cross layers
    low_rank: int = 64
    num_experts: int = 1  # > 1: mixture of low-rank experts (DCN-Mix)
    structure: Literal["stacked", "parallel"] = "stacked"
    deep_mlp: list[int] = field(default_factory=lambda: [256, 128])  # parallel structure only
    top_mlp: list[int] = field(default_factory=lambda: [256, 128, 1])


class ParallelDCNArch(nn.Module):
    """``B x F x D`` sparse + ``B x D`` dense -> ``[cross(x0), deep(x0)]``: ``B x (W + deep[-1])``."""

    def __init__(self, num_sparse_features: int, crossnet: nn.Module, width: int, deep_mlp: list[int]) -> None:
        super().__init__()
        self.F = num_sparse_features
        self.crossnet = crossnet
        self.deep = MLP(width, deep_mlp, bias=True, activation="relu")

    def forward(self, dense_features: torch.Tensor, sparse_features: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat((dense_features, sparse_features.flatten(1)), dim=1)
        return torch.cat((self.crossnet(x0), self.deep(x0)), dim=1)


class DCNv2(DLRM):
    """DLRM with the dot interaction replaced by a low-rank cross network (torchrec's
    ``DLRM_DCN(DLRM)``): the same bottom MLP, embeddings, top MLP and module names."""

    model_name = "dcnv2"

    def check_params(self, params: DCNv2Params) -> None:
        super().check_params(params)
        if params.num_layers < 1 or params.low_rank < 1 or params.num_experts < 1:
            raise ModelConfigError(f"dcnv2: num_layers, low_rank and num_experts must be >= 1, got {params}")

    @property
    def width(self) -> int:
        """``W = (F + 1) * D``: the flattened ``x0``."""
        return (self.num_sparse + 1) * int(self.params.embedding_dim)

    def interaction(self) -> tuple[nn.Module, int]:
        p = self.params
        if p.num_experts == 1:
            crossnet: nn.Module = LowRankCrossNet(self.width, p.num_layers, p.low_rank)
        else:
            crossnet = LowRankMixtureCrossNet(self.width, p.num_layers, p.num_experts, p.low_rank)
        if p.structure == "stacked":
            return InteractionDCNArch(self.num_sparse, crossnet), self.width
        return ParallelDCNArch(self.num_sparse, crossnet, self.width, p.deep_mlp), self.width + p.deep_mlp[-1]

    def cross_flops(self) -> int:
        p: DCNv2Params = self.params
        w = self.width
        per_expert = 2 * w * p.low_rank * 2 + (2 * p.low_rank * p.low_rank if p.num_experts > 1 else 0)
        # gates (W -> 1 each) and the gated sum of expert outputs (bmm of W x K by K x 1)
        gates = 2 * (2 * w * p.num_experts) if p.num_experts > 1 else 0
        return p.num_layers * (p.num_experts * per_expert + gates)

    def interaction_flops(self) -> int:
        deep = mlp_flops(self.width, self.params.deep_mlp) if self.params.structure == "parallel" else 0
        return self.cross_flops() + deep


# the scaling ladder: cross layers x rank x top-MLP width grow together, about 2.7x training FLOPs a rung
LADDER = [(1, 16, 64), (2, 32, 128), (3, 64, 256), (4, 128, 512), (6, 256, 1024)]

register_model(
    ModelEntry(
        name="dcnv2",
        hparams=DCNv2Params,
        builder=DCNv2,
        description="DCNv2 low-rank cross network, stacked (torchrec DLRM_DCN) or parallel",
        with_embedding_dim=bottom_mlp_follows_dim,
        flavors={
            "small": {},
            "parallel": {"structure": "parallel"},
            "mix": {"num_experts": 4, "low_rank": 32},
            **{
                f"ladder_{i}": {"num_layers": layers, "low_rank": rank, "top_mlp": [width, width // 2, 1]}
                for i, (layers, rank, width) in enumerate(LADDER, 1)
            },
            # MLPerf DLRMv2 reference: dim 128, bottom 512-256-128, 3 cross layers of rank 512, top 1024-1024-512-256-1
            "mlperf": {
                "embedding_dim": 128,
                "bottom_mlp": [512, 256, 128],
                "num_layers": 3,
                "low_rank": 512,
                "top_mlp": [1024, 1024, 512, 256, 1],
            },
        },
    )
)
