"""Streaming eval metrics against exact formulas; the LR schedule's shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from terarec.trainer.metrics import BinaryMetrics
from terarec.trainer.optimizers import lr_multiplier


def _exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney U with average ranks for ties."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):
        tie = scores == value
        ranks[tie] = ranks[tie].mean()
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_metrics_match_exact_values_and_ignore_padding() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, generator=g) * 2
    labels = (torch.rand(5000, generator=g) < torch.sigmoid(logits)).float()
    metrics = BinaryMetrics()
    for chunk in range(5):
        sl = slice(chunk * 1000, (chunk + 1) * 1000)
        padded_logits = torch.cat([logits[sl], torch.randn(24)])
        padded_labels = torch.cat([labels[sl], torch.full((24,), -1.0)])
        metrics.update(padded_logits, padded_labels)
    result = metrics.compute()
    probs = torch.sigmoid(logits.double()).numpy()
    y = labels.numpy()
    logloss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), labels.double()))
    ctr = y.mean()
    assert result["count"] == 5000
    assert result["auc"] == pytest.approx(_exact_auc(probs, y), abs=1e-4)
    assert result["logloss"] == pytest.approx(logloss, rel=1e-9)
    assert result["ne"] == pytest.approx(logloss / -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr)), rel=1e-9)
    assert result["calibration"] == pytest.approx(probs.sum() / y.sum(), rel=1e-9)


def test_lr_schedule() -> None:
    assert [lr_multiplier(s, 100, 4, "none") for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_multiplier(52, 100, 4, "linear") == pytest.approx(0.5)
    assert lr_multiplier(52, 100, 4, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(100, 100, 4, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_group_auc_matches_per_group_exact_auc() -> None:
    from terarec.trainer.metrics import group_auc

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 3000)
    scores = np.round(rng.normal(size=3000), 1)  # many ties
    labels = (rng.random(3000) < 0.3 + 0.1 * (scores > 0)).astype(float)
    labels[groups == 7] = 1.0  # a one-class group is skipped
    expected_num = expected_den = 0.0
    for group in np.unique(groups):
        mask = groups == group
        if 0 < labels[mask].sum() < mask.sum():
            expected_num += mask.sum() * _exact_auc(scores[mask], labels[mask])
            expected_den += mask.sum()
    assert group_auc(groups, scores, labels) == pytest.approx(expected_num / expected_den, abs=1e-12)


def _numpy_calibration(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Brier, and ECE/MCE over 10 equal-width bins and over 10 equal-count chunks of the sorted scores."""

    def errors(groups: list[np.ndarray]) -> tuple[float, float]:
        gaps = [(abs(probs[g].mean() - labels[g].mean()), len(g)) for g in groups if len(g)]
        return sum(gap * size for gap, size in gaps) / len(probs), max(gap for gap, _ in gaps)

    width = np.minimum((probs * 10).astype(int), 9)
    ece, mce = errors([np.flatnonzero(width == b) for b in range(10)])
    ece_mass, mce_mass = errors(np.array_split(np.argsort(probs, kind="stable"), 10))
    brier = float(((probs - labels) ** 2).mean())
    return {"brier": brier, "ece": ece, "mce": mce, "ece_mass": ece_mass, "mce_mass": mce_mass}


def _fed(logits: torch.Tensor, labels: torch.Tensor, ranks: int) -> BinaryMetrics:
    """Metrics of ``ranks`` shards summed as ``reduce()``'s all_reduce sums them (with padding rows)."""
    shards = [BinaryMetrics() for _ in range(ranks)]
    for rank, metrics in enumerate(shards):
        part = slice(rank, None, ranks)
        metrics.update(torch.cat([logits[part], torch.randn(7)]), torch.cat([labels[part], torch.full((7,), -1.0)]))
    for other in shards[1:]:
        for name in ("hist", "sums", "score_sums", "width_bins"):
            getattr(shards[0], name).add_(getattr(other, name))
    return shards[0]


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_calibration_metrics_match_numpy_and_reduce_over_ranks(ranks: int) -> None:
    """Scores in distinct histogram bins: the equal-mass bins are exact, as the module doc states."""
    rng = np.random.default_rng(ranks)
    hist_bins = rng.choice(1 << 18, size=4000, replace=False)
    probs = (hist_bins + 0.5) / (1 << 18)
    labels = (rng.random(4000) < probs**1.5).astype(np.float64)  # miscalibrated: the labels run below p
    logits = torch.from_numpy(np.log(probs / (1 - probs)))
    result = _fed(logits, torch.from_numpy(labels).float(), ranks).compute()
    expected = _numpy_calibration(torch.sigmoid(logits).numpy(), labels)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert result["ece"] > 0.05 and result["mce"] >= result["ece"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_reliability_bins_are_the_sorted_scores_in_ten_chunks(ranks: int) -> None:
    """The reliability diagram compare plots: per equal-mass bin, mean prediction and observed rate."""
    rng = np.random.default_rng(10 + ranks)
    probs = (rng.choice(1 << 18, size=3000, replace=False) + 0.5) / (1 << 18)
    labels = (rng.random(3000) < probs**2).astype(np.float64)
    reliability = _fed(torch.from_numpy(np.log(probs / (1 - probs))), torch.from_numpy(labels).float(), ranks)
    chunks = np.array_split(np.argsort(probs, kind="stable"), 10)
    result = reliability.reliability()
    assert result["count"] == [len(c) for c in chunks] == [300] * 10
    np.testing.assert_allclose(result["pred"], [probs[c].mean() for c in chunks], rtol=1e-9)
    np.testing.assert_allclose(result["obs"], [labels[c].mean() for c in chunks], rtol=1e-9)
    assert BinaryMetrics().reliability() == {"pred": [], "obs": [], "count": []}


def test_calibration_metrics_with_tied_scores_stay_close_to_numpy() -> None:
    """Random scores (some share a histogram bin, a few exactly tied): equal-mass bins are approximate."""
    g = torch.Generator().manual_seed(4)
    logits = torch.cat([torch.randn(20000, generator=g) * 1.5, torch.zeros(500)])
    labels = (torch.rand(20500, generator=g) < torch.sigmoid(logits * 0.5)).float()
    result = _fed(logits, labels, 2).compute()
    expected = _numpy_calibration(torch.sigmoid(logits.double()).numpy(), labels.double().numpy())
    for key in ("brier", "ece", "mce"):
        assert result[key] == pytest.approx(expected[key], rel=1e-9), key
    assert result["ece_mass"] == pytest.approx(expected["ece_mass"], abs=2e-3)
    assert result["mce_mass"] == pytest.approx(expected["mce_mass"], abs=1e-2)
