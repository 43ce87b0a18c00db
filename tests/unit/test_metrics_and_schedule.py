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
