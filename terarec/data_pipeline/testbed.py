"""``synth --labels testbed``: labels from a fixed random teacher network, with the Bayes answer.

The teacher (version ``TEACHER_VERSION``) is a random one-hidden-layer network of random Fourier
features over the inputs a model can learn from about a million rows: the 13 dense values (log1p,
standardised) and a fixed random ``EMBED_DIM``-vector per id of every sparse column with at most
``LEARNABLE_CARDINALITY`` ids (``sparse_inputs``; the other columns carry no signal, as many of
Criteo's carry little). Its ``HIDDEN`` units are ``sin(u_j . x + phase_j)`` with random Gaussian
directions ``u_j`` (scaled so each pre-activation has standard deviation ``PREACTIVATION_STD`` on a
pilot sample) and random phases; unit ``j``'s output weight is ``+-j^-SPECTRUM_ALPHA`` (random sign):
a power-law spectrum over units, so a student resolves the strong units first and each further unit
is worth less, the structure under which scaling laws appear in teacher-student models (Bahri et al.
2021, "Explaining neural scaling laws"; Maloney et al. 2022). A sine of a sum over every input has
every interaction order, with Taylor coefficients that decay with order (1/k!); ``describe`` records
the share of the logit's variance that is additive (order 1) on the pilot sample: 0.61 for seed 0, and
it varies with the seed (0.22 for seed 1), since at alpha 1 unit 1 carries 61% of the variance and its
phase decides how odd (additive-heavy) or even (interaction-heavy) it is. The
logit is scaled to standard deviation ``LOGIT_STD``. Everything comes from the seed and these
constants, none from a model's score. The sine was chosen over a tanh unit after pilots (both in
docs/sweeps/wukong_ladder_testbed) because a tanh teacher is mostly additive (share 0.8-0.9) and
every Wukong rung learned only that part; with the sine, interactions carry a large part of the signal.

Why not the polynomial teacher of version 1 (products of centred hashed per-id effects, orders 1..6):
most of its terms read columns of millions of ids, learnable only by memorising rare ids, and a
centred product has no lower-order part for gradients to find; every Wukong rung scored the same.

Because every row's true probability is known when it is drawn, the eval split's Bayes logloss and
AUC (of the true probability against the drawn labels) are accumulated while writing, with bounded
memory: logloss is a running sum, AUC comes from a fine histogram of the true logit
(``AUC_BINS`` bins; pairs in one bin count one half, and that share is written with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terarec.data_pipeline.hashing import splitmix64

TEACHER_VERSION = 2
LEARNABLE_CARDINALITY = 2500  # sparse columns the teacher reads: ids few enough to learn from ~1M rows
EMBED_DIM = 4  # the teacher's random vector per id
HIDDEN = 256
SPECTRUM_ALPHA = 1.0
PREACTIVATION_STD = 1.0  # each unit's pre-activation std on the pilot: about one period of sin per 6 std
PHASE_STD = 1.0  # each unit's random phase
LOGIT_STD = 2.0
AUC_BINS = 1 << 20
AUC_LOGIT_RANGE = 40.0  # histogram of the true logit over [-40, 40]; beyond clips into the end bins
_TEACHER_STREAM = 2**32  # rng stream of the teacher's weights, apart from chunk and pilot streams


def raw_effect(values: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random value in [-sqrt 3, sqrt 3) per id (uniform over ids, variance 1)."""
    z = splitmix64(values.astype(np.int64).view(np.uint64), salt)
    effect: np.ndarray = ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2.0 - 1.0) * np.sqrt(3.0)
    return effect


def sparse_inputs(cardinalities: list[int]) -> tuple[int, ...]:
    """The sparse columns the teacher reads: those with at most LEARNABLE_CARDINALITY ids."""
    return tuple(f for f, c in enumerate(cardinalities) if c <= LEARNABLE_CARDINALITY)


def teacher_columns(dense_z: np.ndarray, first_ids: list[np.ndarray], read: tuple[int, ...]) -> np.ndarray:
    """The teacher's input ``x``, shape (rows, 13 + EMBED_DIM * len(read)): dense log1p values (0 for
    missing; standardised on the pilot) then each read sparse column's per-id random vector."""
    parts = [dense_z]
    for f in read:
        parts += [raw_effect(first_ids[f], 1_000 * (f + 1) + c)[:, None] for c in range(EMBED_DIM)]
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class Teacher:
    """``logit(x) = sum_j a_j act(((x - mean) / std) . u_j + shift_j) - centre``, x = teacher_columns."""

    read: tuple[int, ...]  # the sparse columns in x (sparse_inputs)
    mean: np.ndarray  # (inputs,)
    std: np.ndarray  # (inputs,)
    directions: np.ndarray  # (inputs, HIDDEN), gains and shifts folded in
    shifts: np.ndarray  # (HIDDEN,)
    output: np.ndarray  # (HIDDEN,) a_j * scale
    centre: float  # the pilot's mean logit, removed so the bias alone sets the rate

    def hidden(self, x: np.ndarray) -> np.ndarray:
        """The units' activations, (rows, HIDDEN)."""
        hidden: np.ndarray = np.sin(((x - self.mean) / self.std) @ self.directions + self.shifts)
        return hidden

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The logit before the bias, (rows,), of teacher_columns ``x``."""
        out: np.ndarray = self.hidden(x) @ self.output - self.centre
        return out

    def __call__(self, dense_z: np.ndarray, first_ids: list[np.ndarray]) -> np.ndarray:
        """The logit before the bias, (rows,), of dense log1p values (rows, 13) and first ids."""
        return self.logit(teacher_columns(dense_z, first_ids, self.read))


def order_weights(hidden: int = HIDDEN, alpha: float = SPECTRUM_ALPHA) -> np.ndarray:
    """Unit j's output weight magnitude, j = 1..hidden: j^-alpha (before the overall scale)."""
    weights: np.ndarray = np.arange(1, hidden + 1, dtype=np.float64) ** -alpha
    return weights


def build_teacher(seed: int, read: tuple[int, ...], pilot_dense_z: np.ndarray, pilot_ids: list[np.ndarray]) -> Teacher:
    """The fixed teacher for ``seed`` over the sparse columns ``read``, standardised on a pilot sample
    (dense log1p values and first ids, which follow the data's own distributions)."""
    rng = np.random.default_rng([seed, _TEACHER_STREAM])
    pilot_x = teacher_columns(pilot_dense_z, pilot_ids, read)
    inputs = pilot_x.shape[1]
    mean, std = pilot_x.mean(axis=0), np.maximum(pilot_x.std(axis=0), 1e-6)
    directions = rng.normal(size=(inputs, HIDDEN))
    pre = ((pilot_x - mean) / std) @ directions
    gains = PREACTIVATION_STD / np.maximum(pre.std(axis=0), 1e-6)
    shifts = rng.normal(scale=PHASE_STD, size=HIDDEN) - pre.mean(axis=0) * gains
    directions = directions * gains
    signs = rng.choice([-1.0, 1.0], size=HIDDEN)
    raw = Teacher(read, mean, std, directions, shifts, signs * order_weights(), 0.0)
    pilot_logit = raw.logit(pilot_x)
    scale = LOGIT_STD / max(float(pilot_logit.std()), 1e-9)
    return Teacher(read, mean, std, directions, shifts, raw.output * scale, float(pilot_logit.mean()) * scale)


def additive_fit(logit: np.ndarray, x: np.ndarray, bins: int = 64) -> np.ndarray:
    """The best sum of one-input functions to ``logit`` (rows,) on the teacher's inputs ``x`` (rows x
    inputs), (rows,): each input's conditional mean over its quantile bins, by backfitting (inputs are
    independent, so a few sweeps converge)."""
    codes = [np.searchsorted(np.unique(np.quantile(c, np.linspace(0, 1, bins + 1)[1:-1])), c) for c in x.T]
    fitted, parts = np.zeros_like(logit), [np.zeros_like(logit) for _ in codes]
    for _ in range(5):
        for i, code in enumerate(codes):
            means = np.bincount(code, logit - fitted + parts[i]) / np.maximum(np.bincount(code), 1)
            fitted += means[code] - parts[i]
            parts[i] = means[code]
    return fitted


def additive_share(teacher: Teacher, x: np.ndarray) -> float:
    """Share of the logit's variance on ``x`` that a sum of one-input functions explains (order 1)."""
    logit = teacher.logit(x)
    return float(1.0 - np.var(logit - additive_fit(logit, x)) / np.var(logit))


def describe(teacher: Teacher, pilot_dense_z: np.ndarray, pilot_ids: list[np.ndarray]) -> dict[str, object]:
    """The teacher's constants for schema.json (a reader knows the teacher without the code), with the
    additive share of its logit's variance measured on the pilot sample."""
    x = teacher_columns(pilot_dense_z, pilot_ids, teacher.read)
    return {
        "teacher": "random one-hidden-layer sin network (random Fourier features)",
        "teacher_version": TEACHER_VERSION,
        "hidden": HIDDEN,
        "spectrum_alpha": SPECTRUM_ALPHA,
        "embed_dim": EMBED_DIM,
        "sparse_inputs": [f"cat_{f}" for f in teacher.read],
        "learnable_cardinality": LEARNABLE_CARDINALITY,
        "preactivation_std": PREACTIVATION_STD,
        "phase_std": PHASE_STD,
        "logit_std": LOGIT_STD,
        "additive_share": round(additive_share(teacher, x), 4),
    }


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
