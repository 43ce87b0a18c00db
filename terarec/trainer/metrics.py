"""Streaming binary-classification metrics, reduced across ranks: AUC, logloss, NE, calibration,
Brier score, ECE and MCE.

AUC comes from per-class histograms of predicted probabilities over ``AUC_BINS`` equal bins, so
memory is fixed whatever the eval size and ranks reduce it with one all-reduce; with 2^18 bins
the difference to the exact AUC is below 1e-4 (tests compare it with the exact value). NE is the
logloss divided by the entropy of the average label (He et al. 2014). Calibration is
sum(predictions) / sum(labels). Padding rows (``terarec.batch``) are ignored.

Calibration error over bins b of the predictions: ECE = sum_b n_b/n |mean p_b - mean y_b|, MCE = the
largest |mean p_b - mean y_b| over non-empty bins; Brier = mean (p - y)^2.

- ``ece``/``mce``: 10 equal-width bins [k/10, (k+1)/10), exact (per-bin count, sum p, sum y reduced).
- ``ece_mass``/``mce_mass``: 10 equal-mass bins. A global quantile cannot be reduced over ranks, so
  the rank order comes from the AUC histogram (2^18 equal-width score bins, per-bin sum of p, reduced):
  a row of global rank r (by score) falls in mass bin floor(10 r / n). The approximation: rows that
  share a histogram bin (scores within 2^-18 of each other) fall in the same mass bin, so a mass bin
  can hold a few rows more or fewer than n/10; with distinct histogram bins it equals sorting the
  scores and cutting them into 10 equal chunks.

(torchrec.metrics' AUC/NE modules fail to ``compute()`` with the torchmetrics 1.9 that torch 2.13
needs: a frozen dataclass in their report path; these are the same definitions.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from terarec.batch import real_rows
from terarec.configs.arguments import CALIBRATION_KEYS

AUC_BINS = 1 << 18
CALIBRATION_BINS = 10
EPS = 1e-7


class BinaryMetrics:
    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.hist = torch.zeros(2, AUC_BINS, dtype=torch.float64, device=self.device)
        self.score_sums = torch.zeros(AUC_BINS, dtype=torch.float64, device=self.device)  # sum p per hist bin
        self.width_bins = torch.zeros(3, CALIBRATION_BINS, dtype=torch.float64, device=self.device)  # n, sum p, sum y
        self.sums = torch.zeros(5, dtype=torch.float64, device=self.device)  # n, labels, preds, logloss, brier

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """``logits`` and ``labels`` of shape ``B``; padding rows are skipped."""
        keep = real_rows(labels)
        logits, labels = logits[keep].double(), labels[keep].double()
        probs = torch.sigmoid(logits)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        self.sums += torch.stack(
            [
                torch.tensor(float(labels.numel()), dtype=torch.float64, device=self.device),
                labels.sum(),
                probs.sum(),
                loss,
                ((probs - labels) ** 2).sum(),
            ]
        )
        bins = (probs * AUC_BINS).long().clamp_(0, AUC_BINS - 1)
        self.hist.index_put_((labels.long(), bins), torch.ones_like(probs), accumulate=True)
        self.score_sums.index_add_(0, bins, probs)
        width = (probs * CALIBRATION_BINS).long().clamp_(0, CALIBRATION_BINS - 1)
        self.width_bins.index_add_(1, width, torch.stack([torch.ones_like(probs), probs, labels]))

    def reduce(self) -> None:
        if dist.is_initialized() and dist.get_world_size() > 1:
            for tensor in (self.hist, self.sums, self.score_sums, self.width_bins):
                dist.all_reduce(tensor)

    def compute(self) -> dict[str, float]:
        n, positives, preds, loss, brier = (float(x) for x in self.sums)
        if n == 0:
            nan = float("nan")
            return {
                **{key: nan for key in ("auc", "logloss", "ne", "calibration", *CALIBRATION_KEYS)},
                "count": 0,
                "positives": 0,
            }
        negatives_hist, positives_hist = self.hist[0], self.hist[1]
        # P(score_pos > score_neg) + 0.5 P(tie), ties = same bin
        neg_below = torch.cumsum(negatives_hist, 0) - negatives_hist
        wins = (positives_hist * (neg_below + 0.5 * negatives_hist)).sum()
        denom = positives_hist.sum() * negatives_hist.sum()
        auc = float(wins / denom) if denom > 0 else float("nan")
        ctr = positives / n
        entropy = -(ctr * math.log(max(ctr, EPS)) + (1 - ctr) * math.log(max(1 - ctr, EPS)))
        logloss = loss / n
        return {
            "auc": auc,
            "logloss": logloss,
            "ne": logloss / entropy if entropy > 0 else float("nan"),
            "calibration": preds / positives if positives > 0 else float("nan"),
            "brier": brier / n,
            **_calibration_errors(self.width_bins, ""),
            **_calibration_errors(self._mass_bins(n), "_mass"),
            "count": int(n),
            "positives": int(positives),
        }

    def reliability(self) -> dict[str, list[float]]:
        """The reliability diagram of the 10 equal-mass bins (the ones ``ece_mass`` uses), for plots: per bin
        the mean prediction ``pred``, the observed positive rate ``obs`` and the row ``count`` (empty bins,
        possible when many rows share a score, are left out)."""
        n = float(self.sums[0])
        if n == 0:
            return {"pred": [], "obs": [], "count": []}
        count, sum_p, sum_y = self._mass_bins(n)
        filled = count > 0
        return {
            "pred": (sum_p[filled] / count[filled]).tolist(),
            "obs": (sum_y[filled] / count[filled]).tolist(),
            "count": [int(c) for c in count[filled].tolist()],
        }

    def _mass_bins(self, n: float) -> torch.Tensor:
        """(n, sum p, sum y) of 10 equal-mass bins, from the reduced score histogram (see the module doc)."""
        counts = self.hist[0] + self.hist[1]
        rank_of_first = torch.cumsum(counts, 0) - counts  # global rank of the first row in each hist bin
        mass_bin = (rank_of_first * CALIBRATION_BINS / n).floor().long().clamp_(0, CALIBRATION_BINS - 1)
        out = torch.zeros(3, CALIBRATION_BINS, dtype=torch.float64, device=self.device)
        return out.index_add_(1, mass_bin, torch.stack([counts, self.score_sums, self.hist[1]]))


__all__ = ["CALIBRATION_KEYS"]  # defined torch-free in configs.arguments; the trainer's code imports it from here


def _calibration_errors(bins: torch.Tensor, suffix: str) -> dict[str, float]:
    """ECE and MCE of per-bin (count, sum p, sum y) rows ``bins`` (shape 3 x bins)."""
    count, sum_p, sum_y = bins
    filled = count > 0
    gap = (sum_p[filled] - sum_y[filled]).abs() / count[filled]
    return {
        f"ece{suffix}": float((gap * count[filled]).sum() / count.sum()),
        f"mce{suffix}": float(gap.max()) if len(gap) else float("nan"),
    }


class GroupAUC:
    """GAUC (Zhou et al. 2018, DIN): the impression-weighted mean of per-group (per-user) AUCs,
    over groups that have both a positive and a negative row.

    Exact, not binned: rows are kept (group, score, label) and gathered to every rank at the end,
    which suits sequence eval sets (millions of rows, not billions).
    """

    def __init__(self) -> None:
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def update(self, groups: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        keep = real_rows(labels)
        self.parts.append((groups[keep].cpu(), logits[keep].double().cpu(), labels[keep].cpu()))

    def compute(self) -> float:
        columns = [torch.cat(c).numpy() for c in zip(*self.parts)] if self.parts else [np.zeros(0)] * 3
        if dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, columns)
            columns = [np.concatenate([g[i] for g in gathered]) for i in range(3)]
        return group_auc(*columns)


def group_auc(groups: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> float:
    """Vectorised per-group Mann-Whitney AUC (average ranks for ties), weighted by group size."""
    if len(groups) == 0:
        return float("nan")
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order] > 0.5
    n = len(g)
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_run = new_group | np.r_[True, s[1:] != s[:-1]]  # runs of tied scores inside a group
    position = np.arange(n)
    group_start = np.maximum.accumulate(np.where(new_group, position, 0))
    run_id = np.cumsum(new_run) - 1
    run_first = position[new_run]
    run_last = np.r_[run_first[1:], n] - 1
    ranks = (run_first[run_id] + run_last[run_id]) / 2.0 - group_start + 1  # 1-based, ties averaged
    group_id = np.cumsum(new_group) - 1
    n_pos = np.bincount(group_id, weights=y)
    n_all = np.bincount(group_id).astype(np.float64)
    n_neg = n_all - n_pos
    rank_pos = np.bincount(group_id, weights=ranks * y)
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    auc = (rank_pos[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2) / (n_pos[valid] * n_neg[valid])
    return float((auc * n_all[valid]).sum() / n_all[valid].sum())
