"""The hyper-parameter search spaces of ``terarec compare --tune N``: one table, per model.

A deep model's dimension is a config key, sampled and applied as a ``key=value`` override after the
recipe and the comparison's shared overrides. LightGBM's are its own parameters; its number of trees
is not sampled: every trial grows up to ``LIGHTGBM_MAX_TREES`` and stops early on the validation
split (``LIGHTGBM_EARLY_STOP`` rounds without improvement), as the deep models stop early on it.

List-valued keys (``model.args.top_mlp``) are categorical over YAML strings (optuna's categorical
values must be scalars); the config loader parses them back into lists. Batch sizes that do not fit
a rank's share of the train rows are left out of the space on small datasets (:func:`fitting`).

Not searched: embedding regularisation (the config has no such key yet), the optimizers themselves
and the epochs (the comparison's shared budget).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from terarec.configs.baselines import LIGHTGBM_EARLY_STOP, LIGHTGBM_MAX_TREES

BATCH_KEY = "train.batch_size"


@dataclass(frozen=True)
class Dimension:
    """One searched key: a float or int range (``log``: sampled uniformly in log space) or ``choices``."""

    key: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        """The dimension in one short string (``{8, 16}``, ``float [0.0001, 0.01] log``): help texts and the
        study's record of its space (a change of it marks the study's finished trials as changed)."""
        if self.choices:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        kind = "int" if self.integer else "float"
        return f"{kind} [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


_OPTIM = (
    Dimension("optim.lr", 1e-4, 1e-2, log=True),  # dense optimizer
    Dimension("optim.sparse_lr", 1e-3, 0.3, log=True),  # fused embedding optimizer
    Dimension("optim.weight_decay", 1e-7, 1e-3, log=True),  # dense weights
    Dimension("embeddings.dim", choices=(8, 16, 32)),
    Dimension(BATCH_KEY, choices=(64, 128, 256, 512)),
)
_TOP_MLP = Dimension("model.args.top_mlp", choices=("[128, 64, 1]", "[256, 128, 1]", "[512, 256, 128, 1]"))

# model name (the config's model.name) -> its dimensions; depth/width are each model's own keys
SEARCH_SPACES: dict[str, tuple[Dimension, ...]] = {
    "dlrm": (*_OPTIM, _TOP_MLP),
    "dcnv2": (
        *_OPTIM,
        Dimension("model.num_layers", 1, 4, integer=True),
        Dimension("model.args.low_rank", choices=(16, 32, 64)),
        _TOP_MLP,
    ),
    "wukong": (*_OPTIM, Dimension("model.num_layers", 1, 4, integer=True), _TOP_MLP),
    "bst": (*_OPTIM, Dimension("model.num_layers", 1, 3, integer=True), _TOP_MLP),
    "lightgbm": (
        Dimension("num_leaves", 7, 255, log=True, integer=True),
        Dimension("learning_rate", 0.01, 0.3, log=True),
        Dimension("min_data_in_leaf", 5, 200, log=True, integer=True),
        Dimension("feature_fraction", 0.5, 1.0),
    ),
}


def search_space(name: str) -> tuple[Dimension, ...]:
    """The dimensions of model ``name`` (a registered model name or ``lightgbm``); KeyError if none."""
    return SEARCH_SPACES[name]


def fitting(space: tuple[Dimension, ...], max_batch: int) -> tuple[Dimension, ...]:
    """``space`` without batch sizes above ``max_batch`` (a rank's train rows): such a trial could not run."""
    out = []
    for dim in space:
        if dim.key == BATCH_KEY:
            kept = tuple(c for c in dim.choices if c <= max_batch) or (min(dim.choices),)
            dim = dataclasses.replace(dim, choices=kept)
        out.append(dim)
    return tuple(out)


def describe_spaces() -> str:
    """The whole table as text (``terarec compare --help`` shows it)."""
    return "; ".join(
        f"{name}: " + ", ".join(f"{d.key} {d.describe()}" for d in dims) for name, dims in SEARCH_SPACES.items()
    ) + (f" (LightGBM: up to {LIGHTGBM_MAX_TREES} trees, early stop after {LIGHTGBM_EARLY_STOP} rounds on valid)")
