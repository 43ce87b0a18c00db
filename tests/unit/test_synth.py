"""Synthetic Criteo-TB data: cardinalities, determinism, split, planted signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from terarec.data_pipeline.criteo_layout import CRITEO_1TB_CARDINALITIES, MLPERF_MULTI_HOT_SIZES
from terarec.data_pipeline.synth import SynthSpec, hashed_effect, write_synthetic, zipf_ids


def test_synth_layout_determinism_and_split(tmp_path: Path) -> None:
    spec = SynthSpec(rows=20000, seed=3, eval_fraction=0.25)
    schema = write_synthetic(spec, tmp_path / "a", progress=False)
    write_synthetic(spec, tmp_path / "b", progress=False)
    assert schema.split_rows == {"train": 15000, "eval": 5000}
    assert [f.cardinality for f in schema.sparse] == CRITEO_1TB_CARDINALITIES
    a, b = pq.read_table(tmp_path / "a" / "train"), pq.read_table(tmp_path / "b" / "train")
    assert a.equals(b)
    for i, card in enumerate(CRITEO_1TB_CARDINALITIES):
        assert a[f"cat_{i}"].to_numpy().max() < card
    assert 0.2 < a["label"].to_numpy().mean() < 0.3
    other = pq.read_table(
        write_synthetic(SynthSpec(rows=20000, seed=4), tmp_path / "c", progress=False) and tmp_path / "c" / "train"
    )
    assert not other["label"].equals(a["label"])


def test_zipf_is_heavy_headed() -> None:
    ids = zipf_ids(np.random.default_rng(0), 40_000_000, 200_000)
    top_share = np.mean(ids < 100)
    assert 0.3 < top_share < 0.8 and ids.max() < 40_000_000


def test_planted_effect_is_visible_in_labels(tmp_path: Path) -> None:
    write_synthetic(SynthSpec(rows=60000, seed=0), tmp_path, progress=False)
    table = pq.read_table(tmp_path / "train")
    effect = hashed_effect(table["cat_8"].to_numpy(), 108)  # cat_8's planted main effect
    labels = table["label"].to_numpy()
    assert labels[effect > 0.5].mean() - labels[effect < -0.5].mean() > 0.1


def test_multi_hot_sizes(tmp_path: Path) -> None:
    schema = write_synthetic(SynthSpec(rows=300, multi_hot=True), tmp_path, progress=False)
    table = pq.read_table(tmp_path / "train")
    assert all(f.multi_hot for f in schema.sparse)
    assert [table[f"cat_{i}"].combine_chunks().value_lengths()[0].as_py() for i in range(26)] == MLPERF_MULTI_HOT_SIZES


def test_valid_fraction_writes_train_valid_eval_in_row_order(tmp_path: Path) -> None:
    """--valid-fraction: valid/ holds the rows between train and eval (time order), disjoint from both,
    and the manifest records the option; without it the dataset is the one built before the option existed."""
    import json

    plain = write_synthetic(SynthSpec(rows=150_000, seed=5, eval_fraction=0.1), tmp_path / "plain", progress=False)
    three = write_synthetic(
        SynthSpec(rows=150_000, seed=5, eval_fraction=0.1, valid_fraction=0.2), tmp_path / "three", progress=False
    )
    assert plain.split_rows == {"train": 135_000, "eval": 15_000}
    assert three.split_rows == {"train": 105_000, "valid": 30_000, "eval": 15_000}
    columns = ["label", "int_1", "cat_3"]
    train, valid = (pq.read_table(tmp_path / "three" / s, columns=columns) for s in ("train", "valid"))
    whole_train = pq.read_table(tmp_path / "plain" / "train", columns=columns)
    assert whole_train.slice(0, 105_000).equals(train) and whole_train.slice(105_000).equals(valid)
    assert pq.read_table(tmp_path / "three" / "eval").equals(pq.read_table(tmp_path / "plain" / "eval"))
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("plain", "three")]
    assert "--valid-fraction" not in json.dumps(manifests[0]) and '"--valid-fraction": 0.2' in json.dumps(manifests[1])
