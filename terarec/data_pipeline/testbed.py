"""``synth --labels testbed``: labels from a fixed random polynomial teacher, with the Bayes answer.

The teacher's logit is a sum over interaction orders k = 1..``MAX_ORDER`` of ``TERMS_PER_ORDER``
terms; a term of order k multiplies k per-feature effects of k distinct features chosen at random
from all 39 columns (26 sparse ids, 13 dense values bucketed on a log scale). Each effect is a
hashed pseudo-random value per id (or bucket) with its own salt, standardised to mean 0 and
variance 1 on a pilot sample, so factors are centred and independent: a term of order k carries no
lower-order part and terms are uncorrelated. The order-k sum is scaled so its variance is
``w_k^2`` with a power-law spectrum ``w_k = c * k^-SPECTRUM_ALPHA``, ``c`` fixing the total logit
standard deviation at ``LOGIT_STD``. Features, salts and the spectrum come from the seed and these
constants only, never from a model: no family gets a head start beyond what the orders say.

Because every row's true probability is known when it is drawn, the eval split's Bayes logloss and
AUC (of the true probability against the drawn labels) are accumulated while writing, with bounded
memory: logloss is a running sum, AUC comes from a fine histogram of the true logit
(``AUC_BINS`` bins; pairs in one bin count one half, and that share is written with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terarec.data_pipeline.hashing import splitmix64

MAX_ORDER = 6
TERMS_PER_ORDER = 8
SPECTRUM_ALPHA = 1.0
LOGIT_STD = 2.0
DENSE_BUCKETS_PER_UNIT = 4.0  # dense buckets: floor(4 * log1p(value)), missing -> its own bucket
AUC_BINS = 1 << 20
AUC_LOGIT_RANGE = 40.0  # histogram of the true logit over [-40, 40]; beyond clips into the end bins
_TEACHER_STREAM = 2**32  # rng stream of the teacher's structure, apart from chunk and pilot streams


@dataclass(frozen=True)
class TeacherTerm:
    """One interaction term: ``weight * prod_j (effect_j(feature_j) - mean_j) / std_j``."""

    order: int
    features: tuple[int, ...]  # column index: 0..25 sparse, 26..38 dense buckets
    salts: tuple[int, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    weight: float


def order_weights(
    max_order: int = MAX_ORDER, alpha: float = SPECTRUM_ALPHA, total_std: float = LOGIT_STD
) -> np.ndarray:
    """Standard deviation of each order's part of the logit, shape (max_order,): c * k^-alpha,
    with c such that the parts (uncorrelated) add up to ``total_std``."""
    raw = np.arange(1, max_order + 1, dtype=np.float64) ** -alpha
    weights: np.ndarray = raw * total_std / np.sqrt(np.sum(raw**2))
    return weights


def teacher_columns(dense_z: np.ndarray, first_ids: list[np.ndarray]) -> list[np.ndarray]:
    """The teacher's 39 integer inputs: sparse first ids, then dense log1p values bucketed.

    ``dense_z`` is (rows, 13) log1p values with 0 for missing; missing gets bucket -1 so it is a
    level of its own (a value of 0 has log1p 0 too, and is a different event)."""
    buckets = np.floor(dense_z * DENSE_BUCKETS_PER_UNIT).astype(np.int64)
    buckets[dense_z == 0.0] = -1
    return [ids.astype(np.int64) for ids in first_ids] + [buckets[:, i] for i in range(dense_z.shape[1])]


def raw_effect(values: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random value in [-sqrt 3, sqrt 3) per id (uniform over ids; not yet standardised)."""
    z = splitmix64(values.astype(np.int64).view(np.uint64), salt)
    effect: np.ndarray = ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2.0 - 1.0) * np.sqrt(3.0)
    return effect


def describe() -> dict[str, object]:
    """The teacher's fixed constants for schema.json: a reader knows the spectrum without the code."""
    weights = order_weights()
    return {
        "max_order": MAX_ORDER,
        "terms_per_order": TERMS_PER_ORDER,
        "spectrum_alpha": SPECTRUM_ALPHA,
        "logit_std": LOGIT_STD,
        "order_std": [round(float(w), 6) for w in weights],
        "higher_order_variance_share": round(float(np.sum(weights[1:] ** 2) / np.sum(weights**2)), 6),
    }


def build_teacher(seed: int, pilot_columns: list[np.ndarray]) -> list[TeacherTerm]:
    """The fixed teacher for ``seed``; effects are standardised on ``pilot_columns`` (the 39 inputs
    of a pilot sample, which follows the data's own Zipf and log-normal distributions)."""
    rng = np.random.default_rng([seed, _TEACHER_STREAM])
    weights = order_weights()
    terms: list[TeacherTerm] = []
    for order in range(1, MAX_ORDER + 1):
        chosen: set[tuple[int, ...]] = set()
        while len(chosen) < TERMS_PER_ORDER:  # distinct feature sets: no two terms repeat one another
            chosen.add(tuple(sorted(rng.choice(len(pilot_columns), order, replace=False).tolist())))
        for features in sorted(chosen):
            salts = tuple(int(s) for s in rng.integers(1, 2**62, order))
            pilot = [raw_effect(pilot_columns[f], s) for f, s in zip(features, salts)]
            means = tuple(float(e.mean()) for e in pilot)
            stds = tuple(max(float(e.std()), 1e-6) for e in pilot)
            term_weight = float(weights[order - 1] / np.sqrt(TERMS_PER_ORDER))
            terms.append(TeacherTerm(order, features, salts, means, stds, term_weight))
    return terms


def teacher_logit(terms: list[TeacherTerm], columns: list[np.ndarray], orders: range | None = None) -> np.ndarray:
    """The teacher's logit before the bias, shape (rows,); ``orders`` keeps only those orders' terms."""
    logit = np.zeros(len(columns[0]))
    for term in terms:
        if orders is not None and term.order not in orders:
            continue
        product = np.full(len(logit), term.weight)
        for feature, salt, mean, std in zip(term.features, term.salts, term.means, term.stds):
            product *= (raw_effect(columns[feature], salt) - mean) / std
        logit += product
    return logit


class BayesAccumulator:
    """Bayes logloss and AUC of the true logits against drawn labels, streamed over chunks."""

    def __init__(self) -> None:
        self.rows = 0
        self.logloss_sum = 0.0
        self.positives = np.zeros(AUC_BINS, dtype=np.int64)
        self.negatives = np.zeros(AUC_BINS, dtype=np.int64)

    def add(self, logit: np.ndarray, labels: np.ndarray) -> None:
        """``logit`` (rows,) with the bias, ``labels`` (rows,) in {0, 1}."""
        # -log sigmoid(x) = logaddexp(0, -x): exact and finite for any logit
        self.logloss_sum += float(np.sum(np.where(labels == 1, np.logaddexp(0.0, -logit), np.logaddexp(0.0, logit))))
        self.rows += len(logit)
        scaled = (logit + AUC_LOGIT_RANGE) / (2 * AUC_LOGIT_RANGE) * AUC_BINS
        bins = np.clip(scaled.astype(np.int64), 0, AUC_BINS - 1)
        self.positives += np.bincount(bins[labels == 1], minlength=AUC_BINS)
        self.negatives += np.bincount(bins[labels == 0], minlength=AUC_BINS)

    def result(self) -> dict[str, float | None]:
        """``bayes_logloss``, ``bayes_auc`` (None without both classes) and ``bayes_auc_tie_share``:
        the share of positive-negative pairs that fell in one histogram bin (the AUC's only
        approximation is to count each of them one half)."""
        total_pos, total_neg = int(self.positives.sum()), int(self.negatives.sum())
        logloss = self.logloss_sum / self.rows if self.rows else None
        if total_pos == 0 or total_neg == 0:
            return {"bayes_logloss": logloss, "bayes_auc": None, "bayes_auc_tie_share": None}
        negatives_below = np.cumsum(self.negatives) - self.negatives
        pairs = float(total_pos) * float(total_neg)
        ties = float(np.sum(self.positives.astype(np.float64) * self.negatives))
        wins = float(np.sum(self.positives.astype(np.float64) * negatives_below)) + 0.5 * ties
        return {"bayes_logloss": logloss, "bayes_auc": wins / pairs, "bayes_auc_tie_share": ties / pairs}
