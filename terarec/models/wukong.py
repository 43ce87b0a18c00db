"""Wukong (Zhang et al. 2024, arXiv:2403.02545): stacked factorization machines for scaling laws.

Shapes: B batch, F sparse features, D embedding dim, N dense inputs, n embeddings per layer.

- Dense features ``B x N`` -> MLP -> ``B x n_d x D`` (``n_d = num_dense_embeddings``); pooled
  sparse embeddings ``B x F x D``; together ``X_0: B x n_0 x D`` with ``n_0 = F + n_d``.
- Each Wukong layer ``X_i: B x n x D -> B x (n_F + n_L) x D``:
  ``X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + residual(X_i))``, where
  - FMB (Factorization Machine Block): ``MLP(LN(flatten(X (X^T Y))))`` reshaped to ``n_F x D``;
    ``X (X^T Y)`` is the paper's optimized FM of rank ``k`` (``Y: n x k`` learned), equal to the
    pairwise dot-product matrix ``X X^T`` projected by ``Y`` at a cost linear in ``n``.
  - LCB (Linear Compression Block): ``W X`` with ``W: n_L x n``, a linear recombination of embeddings.
  - residual: ``X_i`` itself, or a linear projection of the embedding axis when ``n != n_F + n_L``.
- Head: ``flatten(X_L): B x (n_F + n_L) D`` -> MLP -> logits ``B x 1``.

Scaling ladders (flavors): the paper scales depth and width together (§3.8, Table 5: layers
2 -> 8, ``n_F = n_L`` 8 -> 192, rank ``k`` 24 -> 192, FMB MLP 3 x 2048 -> 3 x 16384), and so do
``ladder_0 .. ladder_5`` (CPU-sized: 54x training FLOPs from ladder_1 to ladder_5 on the synthetic
Criteo layout, 136x from ladder_0) and ``paper_1 .. paper_5`` (the paper's endpoints, intermediate
rungs interpolated geometrically).
``l1 .. l16`` grow depth alone at fixed width: an ablation, not the paper's law.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec.models.dlrm import OverArch, SparseArch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.models.common import RankingModel, mlp_flops, mlp_then_linear
from terarec.models.registry import ModelConfigError, ModelEntry, register_model


@dataclass
class WukongParams:
    embedding_dim: int = 16
    num_layers: int = 2
    num_dense_embeddings: int = 2  # n_d: the dense MLP's output, as embeddings
    dense_mlp: list[int] = field(default_factory=lambda: [64])  # hidden sizes; output n_d * D is added
    fm_embeddings: int = 16  # n_F: embeddings out of each FMB
    lc_embeddings: int = 16  # n_L: embeddings out of each LCB
    fm_rank: int = 8  # k of the optimized FM
    fm_mlp: list[int] = field(default_factory=lambda: [128])  # FMB hidden sizes; output n_F * D is added
    top_mlp: list[int] = field(default_factory=lambda: [128, 64, 1])  # last == 1


def optimized_fm(embeddings: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """``X (X^T Y)``: ``B x n x D`` embeddings, ``n x k`` projection -> ``B x n x k``.

    Equals ``(X X^T) Y`` (all pairwise dot products, projected) without forming the ``n x n`` matrix.
    """
    return torch.bmm(embeddings, torch.matmul(embeddings.transpose(1, 2), projection))


class EmbeddingAxisLinear(nn.Module):
    """A linear map over the embedding axis: ``B x n_in x D -> B x n_out x D`` (``W X``)."""

    def __init__(self, num_in: int, num_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_in, num_out, bias=False)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        mixed: torch.Tensor = self.linear(embeddings.transpose(1, 2))
        return mixed.transpose(1, 2)


class FactorizationMachineBlock(nn.Module):
    """FMB: ``B x n x D -> B x n_F x D`` via optimized FM, LayerNorm and an MLP."""

    def __init__(self, num_in: int, dim: int, rank: int, num_out: int, hidden: list[int]) -> None:
        super().__init__()
        self.num_out, self.dim = num_out, dim
        self.projection = nn.Parameter(torch.empty(num_in, rank))
        nn.init.xavier_uniform_(self.projection)
        self.norm = nn.LayerNorm(num_in * rank)
        self.mlp = mlp_then_linear(num_in * rank, hidden, num_out * dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        interactions = optimized_fm(embeddings, self.projection).flatten(1)
        out: torch.Tensor = self.mlp(self.norm(interactions))
        return out.view(-1, self.num_out, self.dim)


class WukongLayer(nn.Module):
    """``B x n_in x D -> B x (n_F + n_L) x D``: FMB and LCB side by side, residual, LayerNorm."""

    def __init__(self, num_in: int, params: WukongParams) -> None:
        super().__init__()
        num_out = params.fm_embeddings + params.lc_embeddings
        self.fmb = FactorizationMachineBlock(
            num_in, params.embedding_dim, params.fm_rank, params.fm_embeddings, params.fm_mlp
        )
        self.lcb = EmbeddingAxisLinear(num_in, params.lc_embeddings)
        # the residual needs the output's embedding count: project only when it differs
        self.residual = EmbeddingAxisLinear(num_in, num_out) if num_in != num_out else nn.Identity()
        self.norm = nn.LayerNorm(params.embedding_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.fmb(embeddings), self.lcb(embeddings)), dim=1)
        normed: torch.Tensor = self.norm(out + self.residual(embeddings))
        return normed


class Wukong(RankingModel):
    def __init__(self, ebc: EmbeddingBagCollection, dense_in_features: int, params: WukongParams) -> None:
        super().__init__()
        p = params
        if min(p.num_layers, p.fm_embeddings, p.lc_embeddings, p.fm_rank) < 1:
            raise ModelConfigError(
                f"wukong: num_layers, fm_embeddings, lc_embeddings and fm_rank must be >= 1, got {p}"
            )
        if len(p.top_mlp) < 1 or p.top_mlp[-1] != 1:
            raise ModelConfigError(f"wukong: top_mlp must end in 1, got {p.top_mlp}")
        self.params, self.dense_in_features = p, dense_in_features
        self.sparse_arch = SparseArch(ebc)
        self.num_sparse = len(self.sparse_arch.sparse_feature_names)
        self.num_dense_embeddings = p.num_dense_embeddings if dense_in_features > 0 else 0
        if self.num_dense_embeddings:
            self.dense_arch = MLP(
                dense_in_features, [*p.dense_mlp, self.num_dense_embeddings * p.embedding_dim], activation="relu"
            )
        widths = self.layer_inputs()
        self.layers = nn.Sequential(*[WukongLayer(n, p) for n in widths])
        self.over_arch = OverArch(self.num_out * p.embedding_dim, p.top_mlp)

    @property
    def num_out(self) -> int:
        return self.params.fm_embeddings + self.params.lc_embeddings

    def layer_inputs(self) -> list[int]:
        """Embedding count entering each layer: ``n_0``, then ``n_F + n_L``."""
        n0 = self.num_sparse + self.num_dense_embeddings
        return [n0] + [self.num_out] * (self.params.num_layers - 1)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``B x N`` dense + KJT of F keys -> logits ``B x 1``."""
        embeddings = self.sparse_arch(sparse_features)  # B x F x D
        if self.num_dense_embeddings:
            dense = self.dense_arch(dense_features).view(-1, self.num_dense_embeddings, self.params.embedding_dim)
            embeddings = torch.cat((dense, embeddings), dim=1)
        logits: torch.Tensor = self.over_arch(self.layers(embeddings).flatten(1))
        return logits

    def layer_flops(self, num_in: int) -> int:
        p, d = self.params, self.params.embedding_dim
        fm = 2 * (2 * num_in * d * p.fm_rank)  # X^T Y, then X (X^T Y)
        fmb_mlp = mlp_flops(num_in * p.fm_rank, [*p.fm_mlp, p.fm_embeddings * d])
        lcb = 2 * num_in * p.lc_embeddings * d
        residual = 2 * num_in * self.num_out * d if num_in != self.num_out else 0
        return fm + fmb_mlp + lcb + residual

    def flops_per_example(self) -> int:
        p = self.params
        dense = (
            mlp_flops(self.dense_in_features, [*p.dense_mlp, self.num_dense_embeddings * p.embedding_dim])
            if self.num_dense_embeddings
            else 0
        )
        layers = sum(self.layer_flops(n) for n in self.layer_inputs())
        return dense + layers + mlp_flops(self.num_out * p.embedding_dim, p.top_mlp)


def ladder_rung(layers: int, embeddings: int, rank: int, mlp_width: int) -> dict[str, object]:
    """One rung of a depth-and-width ladder: ``layers`` Wukong layers, ``n_F = n_L = embeddings``,
    rank ``k``, and an FMB MLP of 3 hidden layers of ``mlp_width`` (the paper's "3 x 2048")."""
    return {
        "num_layers": layers,
        "fm_embeddings": embeddings,
        "lc_embeddings": embeddings,
        "fm_rank": rank,
        "fm_mlp": [mlp_width] * 3,
    }


# (layers, n_F = n_L, k, FMB MLP width): each rung about 2.5-3x the previous one's training FLOPs.
# ladder_0 is the rung below ladder_1, for testbeds where ladder_1 already sits near the data's floor.
CPU_LADDER = [(1, 2, 2, 32), (2, 4, 4, 64), (2, 8, 8, 128), (3, 12, 12, 192), (4, 16, 16, 256), (5, 24, 16, 384)]
# the paper's first and last rungs (Table 5); the three between are geometric interpolations
PAPER_LADDER = [(2, 8, 24, 2048), (3, 16, 48, 4096), (4, 48, 64, 4096), (6, 96, 128, 8192), (8, 192, 192, 16384)]
# the paper-sized rungs' other settings: the `large` flavor's (Criteo-1TB-sized) embedding width and arches
PAPER_BASE = {"embedding_dim": 128, "num_dense_embeddings": 8, "dense_mlp": [512], "top_mlp": [1024, 256, 1]}

register_model(
    ModelEntry(
        name="wukong",
        hparams=WukongParams,
        builder=Wukong,
        description="Wukong: stacked FM blocks + linear compression (arXiv 2403.02545)",
        flavors={
            "small": {},
            # the depth ablation: same width, 1 .. 16 layers
            **{f"l{n}": {"num_layers": n} for n in (1, 2, 4, 8, 16)},
            # depth and width together, as the paper scales (module docstring)
            **{f"ladder_{i}": ladder_rung(*rung) for i, rung in enumerate(CPU_LADDER)},
            **{f"paper_{i}": {**PAPER_BASE, **ladder_rung(*rung)} for i, rung in enumerate(PAPER_LADDER, 1)},
            "large": {
                "embedding_dim": 128,
                "num_layers": 8,
                "num_dense_embeddings": 8,
                "dense_mlp": [512],
                "fm_embeddings": 32,
                "lc_embeddings": 32,
                "fm_rank": 24,
                "fm_mlp": [1024, 1024],
                "top_mlp": [1024, 256, 1],
            },
        },
    )
)
