"""``synth --labels testbed``: determinism, Bayes numbers that a recomputation confirms, higher orders
that matter, and the default label mode left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from terarec.cli import main
from terarec.data_pipeline import testbed
from terarec.data_pipeline.criteo_layout import DENSE_NAMES, SPARSE_NAMES
from terarec.data_pipeline.schema import DatasetError
from terarec.data_pipeline.synth import SynthSpec, label_model, write_synthetic


def _inputs(table: pa.Table) -> tuple[np.ndarray, list[np.ndarray]]:
    """(dense log1p with 0 for null, first ids) as the generator saw them, read back from parquet."""
    dense = np.stack([np.log1p(table[n].to_numpy(zero_copy_only=False).astype(np.float64)) for n in DENSE_NAMES], 1)
    return np.nan_to_num(dense, nan=0.0), [table[n].to_numpy() for n in SPARSE_NAMES]


def _logloss(logit: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.where(labels == 1, np.logaddexp(0, -logit), np.logaddexp(0, logit))))


def test_testbed_is_deterministic_and_recorded_only_when_used(tmp_path: Path) -> None:
    spec = SynthSpec(rows=6000, seed=3, eval_fraction=0.25, labels="testbed")
    first = write_synthetic(spec, tmp_path / "a", progress=False)
    second = write_synthetic(spec, tmp_path / "b", progress=False)
    for split in ("train", "eval"):
        assert pq.read_table(tmp_path / "a" / split).equals(pq.read_table(tmp_path / "b" / split))
    assert first.extra["testbed"] == second.extra["testbed"]
    other = write_synthetic(
        SynthSpec(rows=6000, seed=4, eval_fraction=0.25, labels="testbed"), tmp_path / "c", progress=False
    )
    assert other.extra["testbed"]["bayes_logloss"] != first.extra["testbed"]["bayes_logloss"]
    planted = write_synthetic(SynthSpec(rows=6000, seed=3, eval_fraction=0.25), tmp_path / "p", progress=False)
    assert "testbed" not in planted.extra
    labels_a = pq.read_table(tmp_path / "a" / "train")["label"]
    assert not labels_a.equals(pq.read_table(tmp_path / "p" / "train")["label"])  # same inputs, other labels
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("a", "p")]
    assert '"--labels": "testbed"' in json.dumps(manifests[0]) and "--labels" not in json.dumps(manifests[1])


@pytest.mark.parametrize("mode", ["testbed", "planted"])
def test_bayes_numbers_equal_a_recomputation_from_the_teacher(tmp_path: Path, mode: str) -> None:
    """Both label models record the eval split's Bayes numbers under their own name."""
    spec = SynthSpec(rows=40000, seed=5, eval_fraction=0.25, valid_fraction=0.1, labels=mode)
    schema = write_synthetic(spec, tmp_path, progress=False)
    written = schema.extra[mode]
    assert ({"testbed", "planted"} - {mode}).isdisjoint(schema.extra)
    table = pq.read_table(tmp_path / "eval")
    labels = table["label"].to_numpy()
    logit = label_model(spec)(*_inputs(table)) + written["bias"]
    assert len(labels) == 10000
    assert written["bayes_logloss"] == pytest.approx(_logloss(logit, labels), rel=1e-12)
    # the histogram AUC counts in-bin pairs one half: off by at most half their share
    assert abs(written["bayes_auc"] - roc_auc_score(labels, logit)) <= written["bayes_auc_tie_share"] / 2 + 1e-12
    assert written["bayes_auc_tie_share"] < 1e-4
    assert 0.8 < written["bayes_auc"] < 0.95  # a learnable but far from trivial signal
    assert abs(labels.mean() - np.mean(1 / (1 + np.exp(-logit)))) < 0.02  # labels drawn from these p


def test_interactions_carry_their_stated_share_and_matter(tmp_path: Path) -> None:
    """The teacher reads only the columns it declares; the non-additive part of its logit has the
    share schema.json states (measured again on the eval rows), and the best additive predictor (the
    exact backfitted sum of one-input functions, recalibrated) stays clearly above the Bayes logloss:
    main effects cannot reach the answer. Its units' output weights follow the stated power law."""
    spec = SynthSpec(rows=120_000, seed=1, eval_fraction=0.5, labels="testbed")
    written = write_synthetic(spec, tmp_path, progress=False).extra["testbed"]
    teacher = label_model(spec)
    assert isinstance(teacher, testbed.Teacher)
    assert written["sparse_inputs"] == [f"cat_{f}" for f in teacher.read] and 5 <= len(teacher.read) < 26
    table = pq.read_table(tmp_path / "eval")
    labels = table["label"].to_numpy()
    dense_z, ids = _inputs(table)
    x = testbed.teacher_columns(dense_z, ids, teacher.read)
    share = testbed.additive_share(teacher, x)
    assert share == pytest.approx(written["additive_share"], abs=0.03)
    assert share < 0.9  # not a sum of main effects (the share varies with the seed: unit 1 carries 61%)
    unread = next(f for f in range(26) if f not in teacher.read)
    moved = [ids[f] + 1 if f in (unread,) else ids[f] for f in range(26)]
    np.testing.assert_array_equal(teacher(dense_z, moved), teacher(dense_z, ids))
    moved[teacher.read[0]] = ids[teacher.read[0]] + 1
    assert np.abs(teacher(dense_z, moved) - teacher(dense_z, ids)).mean() > 0.01
    magnitudes = np.abs(teacher.output)
    np.testing.assert_allclose(magnitudes / magnitudes[0], testbed.order_weights(), rtol=1e-12)
    additive = testbed.additive_fit(teacher.logit(x), x)
    best_additive = min(
        _logloss(scale * additive + bias, labels)
        for scale in np.linspace(0.6, 1.4, 9)
        for bias in np.linspace(-3, 0, 31)
    )
    assert best_additive > written["bayes_logloss"] + 0.02


def test_bad_labels_mode_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--rows", "10", "--output", str(tmp_path), "--labels", "oracle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("terarec: error:") and "--labels" in err[0] and "oracle" in err[0]
    with pytest.raises(DatasetError, match="--labels must be one of planted, testbed"):
        write_synthetic(SynthSpec(rows=10, labels="oracle"), tmp_path / "x", progress=False)
