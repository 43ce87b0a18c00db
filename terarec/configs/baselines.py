"""The non-deep baselines' settings, in one place: ``terarec.baselines.tabular`` trains with them
and ``terarec compare`` reports them (``launch`` may import ``configs``, not ``baselines``)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_TRAIN_ROWS = 10_000_000  # baselines train in memory on at most this many train rows
# with a validation split (compare --tune): LightGBM grows up to this many trees and keeps the best number
LIGHTGBM_MAX_TREES = 2000
LIGHTGBM_EARLY_STOP = 30  # rounds without a better valid logloss before it stops


@dataclass(frozen=True)
class LightGBMSettings:
    """The usual first try: 50 trees, learning rate 0.05, 31 leaves."""

    num_trees: int = 50
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_categories: int = 100_000  # category codes per feature (by train frequency); rarer ids are missing


@dataclass(frozen=True)
class LogisticSettings:
    """scikit-learn's defaults: L2 penalty, C=1, lbfgs with 100 iterations."""

    c: float = 1.0
    solver: str = "lbfgs"
    max_iter: int = 100
    max_categories: int = 100_000  # one-hot columns per feature (by train frequency), plus one "other"


def describe_baselines(lightgbm: LightGBMSettings | None = None, logistic: LogisticSettings | None = None) -> str:
    """The settings as a reader wants them: ``LightGBM: 50 trees, lr 0.05, 31 leaves; logreg: ...``."""
    gbm, lr = lightgbm or LightGBMSettings(), logistic or LogisticSettings()
    return (
        f"LightGBM: {gbm.num_trees} trees, lr {gbm.learning_rate:g}, {gbm.num_leaves} leaves; "
        f"logreg: L2, C={lr.c:g}, {lr.solver}, {lr.max_iter} iterations"
    )
