"""Why the ladder is flat: what the testbed's eval split allows a predictor that knows part of the teacher.

Run from the repository root after making the data (the README's command):
    PYTHONPATH=. python docs/sweeps/wukong_ladder_testbed/oracles.py runs/data/testbed

Prints, on the eval split: the full teacher's logloss (must equal schema.json's Bayes logloss: a check
that the teacher is rebuilt exactly), the logloss of an oracle that knows only the terms of orders
1..K (its partial logit recalibrated by a 2-parameter logistic fit on eval), and, per interaction
order, the share of the teacher's terms whose features all take few values (cardinality <= 1,000
in the eval split), which a model can learn from a few hundred thousand rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from terarec.data_pipeline import testbed
from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES
from terarec.data_pipeline.synth import SynthSpec, pilot_sample

FEW_VALUES = 1000


def logloss(logit: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary logloss of ``sigmoid(logit)``; both (rows,)."""
    return float(np.mean(np.where(labels == 1, np.logaddexp(0.0, -logit), np.logaddexp(0.0, logit))))


def recalibrated(partial: np.ndarray, labels: np.ndarray) -> float:
    """Logloss of ``sigmoid(a * partial + b)`` with (a, b) fitted by Newton's method (logistic regression)."""
    design = np.stack([partial, np.ones_like(partial)], axis=1)
    weights = np.zeros(2)
    for _ in range(50):
        prob = 1.0 / (1.0 + np.exp(-design @ weights))
        hessian = design.T @ (design * (prob * (1 - prob))[:, None]) + 1e-9 * np.eye(2)
        weights -= np.linalg.solve(hessian, design.T @ (prob - labels))
    return logloss(design @ weights, labels)


def main(data: Path) -> None:
    schema = json.loads((data / "schema.json").read_text())
    bias = schema["extra"]["testbed"]["bias"]
    spec = SynthSpec(rows=sum(schema["rows"].values()), labels="testbed", seed=schema["extra"]["seed"])
    terms = testbed.build_teacher(spec.seed, testbed.teacher_columns(*pilot_sample(spec)))
    table = pq.read_table(data / "eval")
    dense = np.stack([table[n].to_numpy(zero_copy_only=False) for n in DENSE_NAMES], axis=1).astype(float)
    dense_z = np.where(np.isnan(dense), 0.0, np.log1p(np.nan_to_num(dense)))
    columns = testbed.teacher_columns(dense_z, [table[n].to_numpy() for n in SPARSE_NAMES])
    labels = table[LABEL].to_numpy().astype(float)
    full = testbed.teacher_logit(terms, columns) + bias
    bayes = schema["extra"]["testbed"]["bayes_logloss"]
    print(f"full teacher logloss {logloss(full, labels):.5f} (schema Bayes {bayes:.5f})")
    print(f"base rate only       {recalibrated(np.zeros_like(labels), labels):.5f}")
    for top in range(1, testbed.MAX_ORDER + 1):
        partial = testbed.teacher_logit(terms, columns, orders=range(1, top + 1))
        print(f"orders 1..{top} known    {recalibrated(partial, labels):.5f}")
    few = {f for f, values in enumerate(columns) if len(np.unique(values)) <= FEW_VALUES}
    for order in range(1, testbed.MAX_ORDER + 1):
        of_order = [t for t in terms if t.order == order]
        learnable = sum(all(f in few for f in t.features) for t in of_order)
        print(f"order {order}: {learnable}/{len(of_order)} terms over features with <= {FEW_VALUES} values")
    learnable_terms = [t for t in terms if all(f in few for f in t.features)]
    print(
        f"oracle knowing only those terms {recalibrated(testbed.teacher_logit(learnable_terms, columns), labels):.5f}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
