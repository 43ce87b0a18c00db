"""The one model registry: ``name -> (hyper-parameter dataclass, flavors, builder)``.

A model module registers itself with :func:`register_model`; the trainer, ``terarec models`` and
sweeps only ever go through :func:`get_model` / :func:`list_models`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from terarec.errors import UserError
from terarec.models.common import RankingModel


class ModelConfigError(UserError, ValueError):
    """Unknown model, flavor or hyper-parameter: the message names it."""


def replace_embedding_dim(hparams: Any, dim: int) -> Any:
    """The default ``ModelEntry.with_embedding_dim``: only ``embedding_dim`` changes."""
    return dataclasses.replace(hparams, embedding_dim=dim)


@dataclass(frozen=True)
class ModelEntry:
    """A model as the trainer sees it: its hyper-parameters, flavors, builder, and the build-time
    adjustments that the data or the config impose on the hyper-parameters."""

    name: str
    hparams: type  # a dataclass of the model's hyper-parameters, defaults = the base flavor
    builder: Callable[..., RankingModel]  # (embedding collection, dense input count, hparams) -> model: the model class
    flavors: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    # "bag": pooled EmbeddingBagCollection (one table per sparse feature);
    # "sequence": EmbeddingCollection, history features sharing their target's table
    embeddings: Literal["bag", "sequence"] = "bag"
    # (hparams, dim) -> hparams for tables of width ``dim`` (``embeddings.dim`` overrides the
    # flavor's): whatever must match the tables' width follows it
    with_embedding_dim: Callable[[Any, int], Any] = replace_embedding_dim
    # (hparams, longest history the loader yields) -> hparams; None: the model reads no histories
    with_history_cap: Callable[[Any, int], Any] | None = None
    # whether the interaction takes tables of different widths (``embeddings.dim_rule`` other than fixed).
    # None of today's does: DLRM's dot products and Wukong's factorisation machine need one width, and DCNv2
    # (torchrec's InteractionDCNArch) and BST stack the pooled embeddings as B x F x D before their layers
    mixed_dims: bool = False

    def resolve(self, flavor: str, overrides: dict[str, Any] | None = None) -> Any:
        """Hyper-parameters of ``flavor`` with ``overrides`` applied (unknown keys rejected)."""
        if flavor not in self.flavors:
            raise ModelConfigError(f"model '{self.name}' has no flavor '{flavor}' (flavors: {', '.join(self.flavors)})")
        values = {**self.flavors[flavor], **(overrides or {})}
        names = {f.name for f in dataclasses.fields(self.hparams)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ModelConfigError(
                f"model '{self.name}' has no hyper-parameter '{unknown[0]}' (valid: {', '.join(sorted(names))})"
            )
        return dataclasses.replace(self.hparams(), **values)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model '{entry.name}' registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def get_model(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ModelConfigError(f"unknown model '{name}' (models: {', '.join(sorted(_REGISTRY)) or 'none'})")
    return _REGISTRY[name]


def list_models() -> list[ModelEntry]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]
