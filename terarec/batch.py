"""The batch contract between the loader, the models, the train loop and the metrics.

A batch is a ``torchrec.datasets.utils.Batch`` of ``B`` rows (``B`` = the loader's batch size,
the same for every batch of every rank):

- ``dense_features``: ``B x N`` float32, in the schema's ``dense`` order, already transformed;
- ``sparse_features``: a KeyedJaggedTensor with one key per sparse feature (schema order) then one
  per sequence feature, ids already reduced to rows of the feature's embedding table;
- ``labels``: ``B`` float32, 0 or 1 for a real row, ``PAD_LABEL`` for a padding row.

Padding rows exist because every rank must run the same number of equal-sized batches (a rank
that ran out of data would otherwise leave the others waiting in a collective). A padding row has
zero dense values, no ids (length 0 for every key) and the label ``PAD_LABEL``; everything
downstream (loss, sample counts, metrics) must ignore it, through :func:`real_rows`.

This module imports nothing of terarec: every layer may use it.
"""

from __future__ import annotations

import torch

PAD_LABEL = -1.0  # the label of the rows the loader adds to equalise batch counts across ranks


def real_rows(labels: torch.Tensor) -> torch.Tensor:
    """``B`` labels -> ``B`` bool mask, True for real rows, False for padding rows."""
    return labels != PAD_LABEL
