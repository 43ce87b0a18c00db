"""Streaming binary-classification metrics, reduced across ranks: AUC, logloss, NE, calibration.

AUC comes from per-class histograms of predicted probabilities over ``AUC_BINS`` equal bins, so
memory is fixed whatever the eval size and ranks reduce it with one all-reduce; with 2^18 bins
the difference to the exact AUC is below 1e-4 (tests compare it with the exact value). NE is the
logloss divided by the entropy of the average label (He et al. 2014). Calibration is
sum(predictions) / sum(labels). Padding rows (``terarec.batch``) are ignored.

(torchrec.metrics' AUC/NE modules fail to ``compute()`` with the torchmetrics 1.9 that torch 2.13
needs: a frozen dataclass in their report path; these are the same definitions.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from terarec.batch import real_rows

AUC_BINS = 1 << 18
EPS = 1e-7


class BinaryMetrics:
    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.hist = torch.zeros(2, AUC_BINS, dtype=torch.float64, device=self.device)
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # n, labels, preds, logloss

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
            ]
        )
        bins = (probs * AUC_BINS).long().clamp_(0, AUC_BINS - 1)
        self.hist.index_put_((labels.long(), bins), torch.ones_like(probs), accumulate=True)

    def reduce(self) -> None:
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.hist)
            dist.all_reduce(self.sums)

    def compute(self) -> dict[str, float]:
        n, positives, preds, loss = (float(x) for x in self.sums)
        if n == 0:
            return {
                "auc": float("nan"),
                "logloss": float("nan"),
                "ne": float("nan"),
                "calibration": float("nan"),
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
            "count": int(n),
            "positives": int(positives),
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
