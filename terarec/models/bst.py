"""BST, Behavior Sequence Transformer (Chen et al. 2019, arXiv:1905.06874), on an EmbeddingCollection.

Shapes: B batch, D embedding dim, T longest history in the batch, P item parts (item id,
category, ... as ``item_features``), ``d = (P + 1) * D`` the transformer width.

- Each sequence element is the concatenation of its item parts' embeddings and its time-position
  embedding (``pos(v_i) = t(target) - t(v_i)`` bucketed by ``prepare``; the target's is 0):
  history ``B x T x d`` (jagged, right-padded) followed by the target item ``B x 1 x d``.
- ``num_layers`` Transformer blocks (post-LN, LeakyReLU feed-forward, as in the paper) with a key
  padding mask, so padded slots never influence real ones.
- The paper concatenates every position's output; with variable-length histories we take the
  target position's output and the masked mean of the history outputs (``B x 2d``), which does not
  depend on how far a batch is padded.
- Concatenated with the other features' embeddings (sum-pooled, ``B x D`` each) and the dense
  features, then a LeakyReLU MLP -> logits ``B x 1``.

History features are named ``history_prefix + part`` (``hist_item``) and share the target part's
table (``t_item``), so history and target live in one embedding space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from terarec.models.common import RankingModel, mlp_flops, mlp_then_linear
from terarec.models.registry import ModelConfigError, ModelEntry, register_model


@dataclass
class BSTParams:
    embedding_dim: int = 16
    num_layers: int = 1  # b, the number of Transformer blocks (the paper's best is 1)
    num_heads: int = 4
    ffn_dim: int = 0  # 0: 4 x the transformer width
    dropout: float = 0.0  # the paper's 0.1-0.2 costs ~35% of CPU step time in attention dropout
    top_mlp: list[int] = field(default_factory=lambda: [256, 128, 1])  # last == 1
    item_features: list[str] = field(default_factory=lambda: ["item", "category"])
    position_feature: str = "time_gap"
    history_prefix: str = "hist_"
    max_history: int = 50  # for the FLOP count only (the loader caps histories); set by history_cap


def history_cap(params: BSTParams, longest: int) -> BSTParams:
    """``ModelEntry.with_history_cap``: FLOPs are counted at the longest history the loader yields."""
    return dataclasses.replace(params, max_history=longest)


def _padded(jt: JaggedTensor, length: int) -> torch.Tensor:
    """Jagged embeddings ``(sum of lengths) x D`` -> right-padded ``B x length x D`` (zeros)."""
    padded: torch.Tensor = torch.ops.fbgemm.jagged_to_padded_dense(jt.values(), [jt.offsets()], [length], 0.0)
    return padded


def _sum_pooled(jt: JaggedTensor) -> torch.Tensor:
    """Jagged embeddings -> ``B x D`` sums (zeros for empty rows)."""
    values, lengths = jt.values(), jt.lengths()
    rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=values.device), lengths)
    return torch.zeros(lengths.numel(), values.shape[-1], dtype=values.dtype, device=values.device).index_add_(
        0, rows, values
    )


class BSTInteractionArch(nn.Module):
    """Embedded features -> ``B x (2d + O D + N)``: the encoded sequence, other features, dense.

    A module of its own (not code in ``BST.forward``) because its shapes depend on the data:
    TorchRec's train pipeline fx-traces the model around sharded modules and keeps unsharded
    children like this one as opaque leaves.
    """

    def __init__(
        self, params: BSTParams, target_keys: list[str], history_keys: list[str], other_keys: list[str]
    ) -> None:
        super().__init__()
        self.target_keys, self.history_keys, self.other_keys = target_keys, history_keys, other_keys
        width = len(target_keys) * params.embedding_dim
        self.blocks = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(
                    width,
                    params.num_heads,
                    params.ffn_dim or 4 * width,
                    params.dropout,
                    activation=nn.functional.leaky_relu,
                    batch_first=True,
                )
                for _ in range(params.num_layers)
            ]
        )

    def sequence(self, embedded: dict[str, JaggedTensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (``B x (T + 1) x d`` history then target, ``B x (T + 1)`` padding mask, True = padding)."""
        lengths = embedded[self.history_keys[0]].lengths()
        for key in self.history_keys[1:]:
            if not torch.equal(embedded[key].lengths(), lengths):
                raise ValueError(f"bst: history '{key}' has different lengths from '{self.history_keys[0]}'")
        longest = int(lengths.max()) if lengths.numel() else 0
        history = torch.cat([_padded(embedded[key], longest) for key in self.history_keys], dim=-1)
        target = torch.cat([_padded(embedded[key], 1) for key in self.target_keys], dim=-1)
        positions = torch.arange(longest + 1, device=lengths.device)
        padding = positions[None, :] >= lengths[:, None]
        padding[:, -1] = False  # the target slot is always real
        return torch.cat((history, target), dim=1), padding

    def encode(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``B x S x d`` sequence + mask -> ``B x 2d``: the target's output, masked mean of the history's."""
        out = sequence
        for block in self.blocks:
            out = block(out, src_key_padding_mask=padding)
        valid = (~padding[:, :-1]).unsqueeze(-1).to(out.dtype)
        history_mean = (out[:, :-1] * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        return torch.cat((out[:, -1], history_mean), dim=1)

    def forward(self, embedded: dict[str, JaggedTensor], dense_features: torch.Tensor) -> torch.Tensor:
        others = [_sum_pooled(embedded[key]) for key in self.other_keys]
        return torch.cat([self.encode(*self.sequence(embedded)), *others, dense_features], dim=1)


class BST(RankingModel):
    def __init__(self, ec: EmbeddingCollection, dense_in_features: int, params: BSTParams) -> None:
        super().__init__()
        p = self.params = params
        self.embedding_collection, self.dense_in_features = ec, dense_in_features
        features = [name for config in ec.embedding_configs() for name in config.feature_names]
        target_keys = [*p.item_features, p.position_feature]
        history_keys = [p.history_prefix + key for key in target_keys]
        missing = [key for key in target_keys + history_keys if key not in features]
        if missing:
            raise ModelConfigError(
                f"bst: the dataset has no feature '{missing[0]}' (features: {', '.join(features)}); "
                "BST needs a sequence dataset (terarec prepare movielens|taobao)"
            )
        other_keys = [f for f in features if f not in target_keys + history_keys]
        self.width = len(target_keys) * p.embedding_dim
        if self.width % p.num_heads:
            raise ModelConfigError(f"bst: num_heads={p.num_heads} must divide the transformer width {self.width}")
        if len(p.top_mlp) < 1 or p.top_mlp[-1] != 1 or p.num_layers < 1:
            raise ModelConfigError(f"bst: needs num_layers >= 1 and a top_mlp ending in 1, got {p}")
        self.inter_arch = BSTInteractionArch(p, target_keys, history_keys, other_keys)
        self.mlp_in_features = 2 * self.width + len(other_keys) * p.embedding_dim + dense_in_features
        self.over_arch = mlp_then_linear(self.mlp_in_features, p.top_mlp[:-1], 1, nn.LeakyReLU)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """``B x N`` dense + KJT (targets, histories, other features) -> logits ``B x 1``."""
        logits: torch.Tensor = self.over_arch(
            self.inter_arch(self.embedding_collection(sparse_features), dense_features)
        )
        return logits

    def flops_per_example(self) -> int:
        """At full histories (``S = max_history + 1`` positions)."""
        s, d = self.params.max_history + 1, self.width
        f = self.params.ffn_dim or 4 * d
        per_block = (
            2 * s * d * 3 * d + 2 * 2 * s * s * d + 2 * s * d * d + 2 * 2 * s * d * f
        )  # qkv, attention, out, FFN
        return self.params.num_layers * per_block + mlp_flops(self.mlp_in_features, self.params.top_mlp)


# the scaling ladder: Transformer blocks x width (3 x embedding_dim: item, category, position) x heads
LADDER = [(1, 8, 2), (1, 16, 4), (2, 24, 4), (2, 32, 8), (4, 48, 8)]

register_model(
    ModelEntry(
        name="bst",
        hparams=BSTParams,
        builder=BST,
        embeddings="sequence",
        with_history_cap=history_cap,
        description="Behavior Sequence Transformer over an EmbeddingCollection (arXiv 1905.06874)",
        flavors={
            "small": {},
            **{
                f"ladder_{i}": {"num_layers": blocks, "embedding_dim": dim, "num_heads": heads}
                for i, (blocks, dim, heads) in enumerate(LADDER, 1)
            },
            # the paper's choices: 1 block, 8 heads, MLP 1024-512-256 with LeakyReLU
            "paper": {
                "embedding_dim": 32,
                "num_layers": 1,
                "num_heads": 8,
                "dropout": 0.1,
                "top_mlp": [1024, 512, 256, 1],
            },
        },
    )
)
