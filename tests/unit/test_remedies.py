"""Remedies for one-epoch overfitting: L2 on touched rows, frequency thresholding, per-table dims, re-init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from terarec.batch import PAD_LABEL
from terarec.configs.loader import ConfigError, load_config
from terarec.data_pipeline import id_counts
from terarec.data_pipeline.id_counts import count_ids, frequent_ids, load_or_count
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.manifest import DatasetManifest, PartFile
from terarec.data_pipeline.schema import DatasetSchema, SparseFeature
from terarec.embeddings.tables import plan_tables, rule_dim, table_sizes
from terarec.trainer.model_factory import build_model
from terarec.trainer.optimizers import data_parallel_table_optimizer, sparse_fused_params
from terarec.trainer.preflight import train_row_fractions
from terarec.trainer.reinit import fresh_table
from terarec.trainer.setup import run_vocabularies

# feature "a": train holds 5 x3, 9 x2, 7 x1 (then 100 rows of 3); valid and eval hold ids never seen in train
TRAIN_A = [5, 5, 5, 9, 9, 7] + [3] * 100
VALID_A = [7] * 10 + [11] * 10
EVAL_A = [13] * 20


def _write(root: Path, split: str, ids: list[int]) -> None:
    (root / split).mkdir(parents=True)
    n = len(ids)
    table = pa.table(
        {
            "label": (np.arange(n) % 2).astype(np.int8),
            "int_0": np.arange(n, dtype=np.int64),
            "a": np.array(ids, dtype=np.uint32),
            "b": pa.array([[i, i + 1] for i in ids], pa.list_(pa.uint32())),  # multi-hot: every item counts
        }
    )
    pq.write_table(table, root / split / "part-00000.parquet", row_group_size=16)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    for split, ids in (("train", TRAIN_A), ("valid", VALID_A), ("eval", EVAL_A)):
        _write(tmp_path, split, ids)
    DatasetSchema(
        dense=["int_0"],
        sparse=[SparseFeature("a", 20), SparseFeature("b", 21, multi_hot=True)],
        split_rows={"train": len(TRAIN_A), "valid": len(VALID_A), "eval": len(EVAL_A)},
    ).save(tmp_path)
    return tmp_path


# -- L2 on the rows a batch touches ---------------------------------------------------------------


def _one_step(optimizer_name: str, l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights before, gradient, weights after) of a 4 x 2 table whose rows 1 and 2 were looked up."""
    cfg = load_config(None, [f"optim.sparse={optimizer_name}", "optim.sparse_lr=0.1", f"embeddings.l2={l2}"])
    weight = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 1.0], [-1.0, 3.0], [2.0, 2.0]]))
    grad = torch.tensor([[0.0, 0.0], [0.2, -0.4], [1.0, 0.0], [0.0, 0.0]])  # row 2 has one zero component
    weight.grad = grad.clone()
    before = weight.detach().clone()
    data_parallel_table_optimizer([weight], cfg).step()
    return before, grad, weight.detach().clone()


def test_l2_with_sgd_shrinks_touched_rows_by_the_formula_and_leaves_the_others() -> None:
    before, grad, after = _one_step("sgd", 0.5)
    expected = before - 0.1 * (grad + 0.5 * before)  # w - lr * (g + l2 * w) on touched rows
    assert torch.allclose(after[1:3], expected[1:3])
    assert torch.equal(after[[0, 3]], before[[0, 3]])  # untouched rows: not a single bit changes
    # row 2's second component had a zero gradient: only the decay moves it, toward 0
    assert after[2, 1].item() == pytest.approx(3.0 * (1 - 0.1 * 0.5))


def test_l2_with_adagrad_decays_inside_the_accumulated_gradient() -> None:
    before, grad, after = _one_step("adagrad", 0.5)
    decayed = grad + 0.5 * before
    expected = before - 0.1 * decayed / (decayed.abs() + 1e-8)  # first Adagrad step: sum = g'^2
    assert torch.allclose(after[1:3], expected[1:3], atol=1e-6)
    assert torch.equal(after[[0, 3]], before[[0, 3]])


def test_l2_off_is_the_plain_optimizer() -> None:
    before, grad, after = _one_step("sgd", 0.0)
    assert torch.allclose(after, before - 0.1 * grad)


def test_l2_fused_params_by_device_and_sharding() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert sparse_fused_params(load_config(None, []), cpu) is None  # off: torchrec's defaults, bit-identical
    data_parallel = load_config(None, ["embeddings.l2=0.01", "sharding.sharding_type=data_parallel"])
    assert sparse_fused_params(data_parallel, cpu) is None  # no fused table: the step hook does it
    fused = load_config(None, ["embeddings.l2=0.01"])
    with pytest.raises(ConfigError, match="embeddings.l2 on CPU needs sharding.sharding_type=data_parallel"):
        sparse_fused_params(fused, cpu)
    assert sparse_fused_params(fused, cuda)["weight_decay_mode"].name == "L2"
    with pytest.raises(ConfigError, match="fbgemm's fused sgd has no weight decay"):
        sparse_fused_params(load_config(None, ["embeddings.l2=0.01", "optim.sparse=sgd"]), cuda)
    dense_kernel = load_config(None, ["embeddings.l2=0.01", "sharding.compute_kernel=dense"])
    with pytest.raises(ConfigError, match="compute_kernel=dense needs sharding.sharding_type=data_parallel"):
        sparse_fused_params(dense_kernel, cuda)  # weight decay on dense gradients would shrink every row
    dense_dp = ["embeddings.l2=0.01", "sharding.compute_kernel=dense", "sharding.sharding_type=data_parallel"]
    assert sparse_fused_params(load_config(None, dense_dp), cuda) is None
    assert sparse_fused_params(fused, torch.device("cpu"), training=False) is None  # eval/export on CPU loads it


# -- frequency thresholding ----------------------------------------------------------------------


def test_counts_read_only_the_train_rows(dataset: Path) -> None:
    schema = DatasetSchema.load(dataset)
    (dataset / "valid" / "part-00000.parquet").write_bytes(b"not parquet")  # any read of valid/eval would fail
    (dataset / "eval" / "part-00000.parquet").write_bytes(b"not parquet")
    ids, occurrences = count_ids(dataset, schema, "train", (0.0, 1.0))["a"]
    assert dict(zip(ids.tolist(), occurrences.tolist())) == {3: 100, 5: 3, 7: 1, 9: 2}
    ids_b, occurrences_b = count_ids(dataset, schema, "train", (0.0, 1.0))["b"]
    assert dict(zip(ids_b.tolist(), occurrences_b.tolist())) == {3: 100, 4: 100, 5: 3, 6: 3, 7: 1, 8: 1, 9: 2, 10: 2}


def test_carved_validation_rows_are_not_counted(dataset: Path) -> None:
    schema = DatasetSchema.load(dataset)
    # the first 6 of 106 rows: 5, 5, 5, 9, 9, 7; the last 100 rows (valid_fraction) are the 3s
    head = count_ids(dataset, schema, "train", (0.0, 6 / 106))["a"]
    assert dict(zip(head[0].tolist(), head[1].tolist())) == {5: 3, 7: 1, 9: 2}


def test_rare_and_unseen_ids_share_the_out_of_vocabulary_row(dataset: Path) -> None:
    schema = DatasetSchema.load(dataset)
    vocab = frequent_ids(dataset, schema, "train", (0.0, 1.0), min_count=2)["a"]
    assert vocab.ids.tolist() == [3, 5, 9] and vocab.rows_needed == 4
    rows = vocab.rows(np.array([3, 5, 9, 7, 11, 13, 0], dtype=np.uint32), num_embeddings=4)
    assert rows.tolist() == [1, 2, 3, 0, 0, 0, 0]  # 7 (seen once), 11 (valid only), 13 (eval only), 0: OOV
    # a capped table folds the frequent ids over rows 1.., never onto the OOV row
    assert vocab.rows(np.array([3, 5, 9, 7]), num_embeddings=3).tolist() == [1, 2, 1, 0]
    assert frequent_ids(dataset, schema, "train", (0.0, 1.0), min_count=0) == {}  # off


def _add_manifest(dataset: Path) -> None:
    """A complete manifest over the fixture's parts: the dataset gets a fingerprint (a cache key)."""
    parts = [PartFile.of(dataset / s / "part-00000.parquet", dataset, n) for s, n in (("train", 106), ("valid", 20))]
    parts.append(PartFile.of(dataset / "eval" / "part-00000.parquet", dataset, 20))
    DatasetManifest("synth", [], {}, parts, complete=True).save(dataset)


def test_counts_are_cached_with_the_dataset_and_recounted_when_stale(dataset: Path) -> None:
    _add_manifest(dataset)
    schema = DatasetSchema.load(dataset)
    first = load_or_count(dataset, schema, "train", (0.0, 1.0))
    cached = list((dataset / "id_counts").glob("*.npz"))
    assert [p.name for p in cached] == ["train_0_106.npz"]
    again = load_or_count(dataset, schema, "train", (0.0, 1.0))
    assert all(np.array_equal(first[k][1], again[k][1]) for k in first)
    cached[0].write_bytes(b"damaged")  # unreadable: counted again, not an error
    assert np.array_equal(load_or_count(dataset, schema, "train", (0.0, 1.0))["a"][0], first["a"][0])
    with np.load(cached[0]) as saved:
        assert int(saved["__format__"]) == id_counts.COUNTS_FORMAT
        forged = {k: saved[k] for k in saved.files} | {"a.counts": saved["a.counts"] * 0 + 1000}
    np.savez(cached[0], **(forged | {"__format__": np.array(id_counts.COUNTS_FORMAT + 1)}))  # another format
    assert load_or_count(dataset, schema, "train", (0.0, 1.0))["a"][1].max() == 100  # recounted, not read


def test_a_dataset_without_manifest_is_never_cached(dataset: Path) -> None:
    """No fingerprint, no identity: a cache keyed "None" would serve counts of whatever data came before."""
    schema = DatasetSchema.load(dataset)
    first = load_or_count(dataset, schema, "train", (0.0, 1.0))
    assert not (dataset / "id_counts").exists()
    other_data = {"a.ids": np.array([42]), "a.counts": np.array([7])}
    (dataset / "id_counts").mkdir()
    np.savez(
        dataset / "id_counts" / "train_0_106.npz",
        __fingerprint__=np.array("None"),
        __format__=np.array(id_counts.COUNTS_FORMAT),
        **other_data,
    )
    again = load_or_count(dataset, schema, "train", (0.0, 1.0))
    assert again["a"][0].tolist() == first["a"][0].tolist() == [3, 5, 7, 9]


def test_geometric_merging_equals_one_count_of_everything() -> None:
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 50 * (i + 1), 200) for i in range(40)]  # a vocabulary that grows with time
    merged = id_counts._GeometricMerge()
    for block in blocks:
        merged.add(*np.unique(block, return_counts=True))
    ids, counts = merged.result()
    expected_ids, expected_counts = np.unique(np.concatenate(blocks), return_counts=True)
    assert ids.tolist() == expected_ids.tolist() and counts.tolist() == expected_counts.tolist()


def test_min_count_counts_exactly_the_rows_max_train_rows_trains_on(dataset: Path) -> None:
    """data.max_train_rows=6 trains on rows 0..5 (5, 5, 5, 9, 9, 7): the 100 later 3s are not counted."""
    schema = DatasetSchema.load(dataset)
    cfg = load_config(
        None, [f"data.path={dataset}", "embeddings.min_count=2", "model.name=dlrm", "data.max_train_rows=6"]
    )
    assert train_row_fractions(cfg, schema) == (0.0, 6 / 106)
    built = build_model(cfg, schema, "meta")
    assert built.vocabularies["a"].ids.tolist() == [5, 9] and built.table_sizes["a"] == 3
    assert run_vocabularies(cfg, schema)["a"].ids.tolist() == [5, 9]


def test_thresholded_tables_are_sized_by_the_vocabulary(dataset: Path) -> None:
    schema = DatasetSchema.load(dataset)
    assert table_sizes(schema, 1000, vocabulary_rows={"a": 4}) == {"a": 4, "b": 21}
    assert table_sizes(schema, 3, vocabulary_rows={"a": 4}) == {"a": 3, "b": 3}  # still capped by max_rows
    cfg = load_config(None, [f"data.path={dataset}", "embeddings.min_count=2", "model.name=dlrm"])
    built = build_model(cfg, schema, "meta")
    assert built.table_sizes == {"a": 4, "b": 7}  # b: 3, 4, 5, 6, 9, 10 seen >= 2 times, + OOV


def _loader_rows(dataset: Path, rank: int, world: int, workers: int) -> list[tuple[int, int]]:
    schema = DatasetSchema.load(dataset)
    vocab = frequent_ids(dataset, schema, "train", (0.0, 1.0), min_count=2)
    spec = LoaderSpec(
        directory=str(dataset),
        split="train",
        batch_size=8,
        table_sizes={"a": 4, "b": 7},
        shuffle_buffer=0,
        dense_transform="none",
        vocabularies=vocab,
    )
    out = []
    for batch in BatchLoader(spec, schema, rank, world, workers):
        a = batch.sparse_features["a"].values().tolist()
        rows = zip(batch.dense_features[:, 0].tolist(), a, batch.labels.tolist())
        out += [(int(d), r) for d, r, label in rows if label != PAD_LABEL]  # padding rows are not data
    return out


def test_loader_rows_are_the_same_at_any_world_size_and_worker_count(dataset: Path) -> None:
    one = dict(_loader_rows(dataset, 0, 1, 0))
    two = dict(_loader_rows(dataset, 0, 2, 1) + _loader_rows(dataset, 1, 2, 1))
    assert len(one) == len(TRAIN_A) and two == one
    # dense int_0 is the row index: the first six rows are ids 5, 5, 5, 9, 9, 7
    by_row = [one[k] for k in sorted(one)][:6]
    assert by_row == [2, 2, 2, 3, 3, 0]


# -- narrower tables for low cardinalities --------------------------------------------------------


@pytest.mark.parametrize(("rows", "expected"), [(2, 4), (4, 4), (100, 16), (255, 16), (10**6, 16)])
def test_log2_dim_rule(rows: int, expected: int) -> None:
    assert rule_dim("log2", 16, rows) == expected
    assert rule_dim("fixed", 16, rows) == 16


def test_dim_rule_plans_per_table_widths_and_is_refused_for_equal_width_models(dataset: Path) -> None:
    schema = DatasetSchema.load(dataset)
    assert [t.dim for t in plan_tables(schema, 16, 1000, dim_rule="log2").tables] == [12, 12]
    for model in ("dlrm", "dcnv2", "wukong"):
        cfg = load_config(None, [f"model.name={model}", "embeddings.dim_rule=log2"])
        with pytest.raises(ConfigError, match=f"{model} needs one width for every table"):
            build_model(cfg, schema, "meta")


# -- re-initialising embeddings each epoch (MEDA) -------------------------------------------------


def test_fresh_tables_depend_on_seed_epoch_and_table_only() -> None:
    a = fresh_table("t_a", 100, 8, seed=0, epoch=1)
    assert torch.equal(a, fresh_table("t_a", 100, 8, seed=0, epoch=1))
    assert not torch.equal(a, fresh_table("t_a", 100, 8, seed=0, epoch=2))
    assert not torch.equal(a, fresh_table("t_b", 100, 8, seed=0, epoch=1))
    assert a.abs().max().item() <= 0.1  # torchrec's default init bound sqrt(1 / rows)


def test_mixed_widths_are_a_capability_of_the_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from terarec.models import get_model
    from terarec.trainer import model_factory

    cfg = load_config(None, ["model.name=dlrm", "embeddings.dim_rule=log2"])
    assert not get_model("dlrm").mixed_dims
    with pytest.raises(ConfigError, match="dlrm needs one width for every table"):
        model_factory.check_dim_rule(cfg)
    mixed = dataclasses.replace(get_model("dlrm"), mixed_dims=True)
    monkeypatch.setattr(model_factory, "get_model", lambda name: mixed)
    model_factory.check_dim_rule(cfg)  # a model whose entry says it takes mixed widths
