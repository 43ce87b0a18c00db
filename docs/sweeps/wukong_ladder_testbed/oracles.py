"""What the testbed's eval split allows a predictor that knows part of the teacher.

Run from the repository root after making the data (the sweep README's command):
    PYTHONPATH=. python docs/sweeps/wukong_ladder_testbed/oracles.py runs/data/testbed

Prints, on the eval split: the full teacher's logloss (must equal schema.json's Bayes logloss: a check
that the teacher is rebuilt exactly), the base rate's, the best additive predictor's (the teacher's
logit fitted by a sum of one-input functions: what main effects alone can reach), and the logloss of
an oracle that knows only the teacher's K strongest units (K = 1, 4, 16, 64, 256). Each partial logit
is recalibrated by a 2-parameter logistic fit on the eval split, so an oracle is never hurt by scale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from terarec.data_pipeline import testbed
from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES
from terarec.data_pipeline.synth import SynthSpec, label_model


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
    teacher = label_model(spec)
    assert isinstance(teacher, testbed.Teacher)
    table = pq.read_table(data / "eval")
    dense = np.stack([table[n].to_numpy(zero_copy_only=False) for n in DENSE_NAMES], axis=1).astype(float)
    dense_z = np.where(np.isnan(dense), 0.0, np.log1p(np.nan_to_num(dense)))
    x = testbed.teacher_columns(dense_z, [table[n].to_numpy() for n in SPARSE_NAMES], teacher.read)
    labels = table[LABEL].to_numpy().astype(float)
    bayes = schema["extra"]["testbed"]["bayes_logloss"]
    print(f"full teacher logloss {logloss(teacher.logit(x) + bias, labels):.5f} (schema Bayes {bayes:.5f})")
    print(f"base rate only       {recalibrated(np.zeros_like(labels), labels):.5f}")
    print(f"best additive        {recalibrated(testbed.additive_fit(teacher.logit(x), x), labels):.5f}")
    hidden = teacher.hidden(x)
    for top in (1, 4, 16, 64, testbed.HIDDEN):
        partial = hidden[:, :top] @ teacher.output[:top]
        print(f"strongest {top:>3} units  {recalibrated(partial, labels):.5f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
