"""Contracts that several layers share, each defined once: the batch's padding rows, the optimizer
groups, the table policy, the registry's build-time adjustments, schema.json's keys, retired config
keys, and the baseline settings compare reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.datasets.utils import Batch
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.batch import PAD_LABEL, real_rows
from terarec.configs import ConfigError, load_config
from terarec.configs.baselines import LightGBMSettings, LogisticSettings, describe_baselines
from terarec.data_pipeline.columns import reduce_ids
from terarec.data_pipeline.criteo_layout import CRITEO_1TB_CARDINALITIES, criteo_1tb_reference_schema
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.schema import DatasetSchema, SequenceFeature, SparseFeature
from terarec.data_pipeline.sequence_sources import TAOBAO_VOCABULARY_SIZES, taobao_reference_schema
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.embeddings.tables import embedding_row, plan_tables, table_dim
from terarec.models import TrainWrapper, get_model
from terarec.models.dcnv2 import DCNv2
from terarec.models.dlrm import DLRM
from terarec.trainer.metrics import BinaryMetrics
from terarec.trainer.model_factory import build_model, reference_schema, resolve_hparams
from terarec.trainer.optimizers import OptimizerGroup, combine, members_of

SEQUENCE_SCHEMA = DatasetSchema(
    dense=["age"],
    sparse=[SparseFeature(name, 30) for name in ("user", "item", "category", "time_gap")],
    sequence=[SequenceFeature(f"hist_{part}", part, 7) for part in ("item", "category", "time_gap")],
)


# -- the batch contract ---------------------------------------------------------------------------
def test_padding_rows_are_ignored_by_loss_and_metrics_alike() -> None:
    labels = torch.tensor([1.0, 0.0, PAD_LABEL, 1.0, PAD_LABEL])
    assert real_rows(labels).tolist() == [True, True, False, True, False]
    logits = torch.tensor([2.0, -1.0, 9.0, 0.5, -9.0])
    padded, unpadded = BinaryMetrics(), BinaryMetrics()
    padded.update(logits, labels)
    unpadded.update(logits[[0, 1, 3]], labels[[0, 1, 3]])
    assert padded.compute() == unpadded.compute()

    class Echo(torch.nn.Module):  # the logits above, whatever the features
        def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
            return logits.unsqueeze(-1)

    loss, _ = TrainWrapper(Echo())(Batch(torch.zeros(5, 1), None, labels))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 1, 3]], labels[[0, 1, 3]])
    torch.testing.assert_close(loss, expected)


# -- optimizer groups -----------------------------------------------------------------------------
def test_optimizer_groups_name_the_checkpoint_keys() -> None:
    """The group values prefix the optimizer state keys of every checkpoint written so far."""
    assert [g.value for g in OptimizerGroup] == ["sparse", "dense", "sparse_dp"]
    assert [g for g in OptimizerGroup if g.lazy_state] == [OptimizerGroup.DENSE, OptimizerGroup.SPARSE_DP]
    weights = {name: torch.nn.Parameter(torch.ones(2)) for name in ("a", "b")}
    dense = KeyedOptimizerWrapper({"a": weights["a"]}, lambda p: torch.optim.Adam(p))
    replicated = KeyedOptimizerWrapper({"b": weights["b"]}, lambda p: torch.optim.SGD(p, lr=0.1))
    combined = combine({OptimizerGroup.DENSE: dense, OptimizerGroup.SPARSE_DP: replicated})
    assert [name for name, _ in combined.optimizers] == ["dense", "sparse_dp"]
    assert members_of(combined, OptimizerGroup.DENSE) == [dense]
    assert members_of(combined, OptimizerGroup.SPARSE) == []
    dense.init_state()
    assert sorted(combined.state_dict()["state"]) == ["dense.a"]


# -- the table policy -----------------------------------------------------------------------------
def test_table_plan_sizes_names_dims_and_shared_lookups() -> None:
    plan = plan_tables(SEQUENCE_SCHEMA, dim=8, max_rows=20, overrides={"user": 5})
    assert plan.table_sizes == {"user": 5, "item": 20, "category": 20, "time_gap": 20}
    assert [(t.name, t.lookups, t.dim) for t in plan.tables][:2] == [
        ("t_user", ("user",), 8),
        ("t_item", ("item", "hist_item"), 8),
    ]
    configs = plan.sequence_configs()
    assert [c.feature_names for c in configs] == [list(t.lookups) for t in plan.tables]
    assert [c.num_embeddings for c in plan.bag_configs()] == [5, 20, 20, 20]
    assert table_dim(None, 16) == 16 and table_dim(32, 16) == 32
    with pytest.raises(ValueError, match="embeddings.rows names 'nope'"):
        plan_tables(SEQUENCE_SCHEMA, 8, 20, {"nope": 3})


def test_the_loader_kernel_applies_the_tables_id_to_row_policy() -> None:
    rng = np.random.default_rng(0)
    for dtype, size in ((np.uint32, 1000), (np.int64, 7), (np.int8, 1000), (np.uint32, 2**31 + 11)):
        info = np.iinfo(dtype)
        ids = rng.integers(info.min, info.max, 500, dtype=dtype, endpoint=True)
        expected = [embedding_row(int(i), size) for i in ids]
        assert reduce_ids(ids.copy(), size).tolist() == expected, (dtype, size)


def test_batches_hold_the_rows_the_table_plan_names(tmp_path: Path) -> None:
    schema = write_synthetic(SynthSpec(rows=300, eval_fraction=0.0, seed=2), tmp_path, progress=False)
    plan = plan_tables(schema, dim=4, max_rows=50)
    raw = pq.read_table(next((tmp_path / "train").glob("*.parquet")), columns=["cat_0", "cat_3"])
    spec = LoaderSpec(str(tmp_path), "train", 300, plan.table_sizes, shuffle_buffer=0)
    (batch,) = list(BatchLoader(spec, schema))
    for name in ("cat_0", "cat_3"):
        size = plan.table_sizes[name]
        assert size == min(schema.sparse_feature(name).cardinality, 50)
        assert batch.sparse_features[name].values().tolist() == [embedding_row(i, size) for i in raw[name].to_pylist()]


# -- the registry's build-time adjustments and DCNv2 ----------------------------------------------
@pytest.mark.parametrize(
    "model, expected", [("dlrm", {"bottom_mlp": [64, 32]}), ("dcnv2", {"bottom_mlp": [64, 32]}), ("wukong", {})]
)
def test_embedding_dim_override_follows_the_registry_entry(model: str, expected: dict) -> None:
    hp = resolve_hparams(load_config(None, [f"model.name={model}", "embeddings.dim=32"]))
    base = get_model(model).resolve("small")
    assert hp.embedding_dim == 32
    changed = {k: v for k, v in vars(hp).items() if k != "embedding_dim" and v != getattr(base, k)}
    assert changed == expected


def test_history_cap_is_the_loaders() -> None:
    cfg = load_config(None, ["model.name=bst", "data.max_history=5", "embeddings.max_rows=40"])
    assert build_model(cfg, SEQUENCE_SCHEMA).hparams.max_history == 5  # min(schema's 7, data.max_history)
    cfg = load_config(None, ["model.name=bst", "data.max_history=50", "embeddings.max_rows=40"])
    assert build_model(cfg, SEQUENCE_SCHEMA).hparams.max_history == 7
    assert get_model("dlrm").with_history_cap is None


def test_dcnv2_is_a_dlrm_with_another_interaction() -> None:
    cfg = load_config(None, ["model.name=dcnv2", "embeddings.max_rows=40"])
    model = build_model(cfg, criteo_1tb_reference_schema()).model
    assert isinstance(model, DCNv2) and isinstance(model, DLRM)
    assert {name.split(".")[0] for name, _ in model.named_children()} == {
        "sparse_arch",
        "dense_arch",
        "inter_arch",
        "over_arch",
    }
    assert "forward" not in vars(DCNv2)


# -- reference schemas come from the data pipeline ------------------------------------------------
def test_reference_schemas() -> None:
    criteo = criteo_1tb_reference_schema()
    assert [f.cardinality for f in criteo.sparse] == CRITEO_1TB_CARDINALITIES and len(criteo.dense) == 13
    taobao = taobao_reference_schema(max_history=9)
    assert {f.name: f.cardinality for f in taobao.sparse} == {**TAOBAO_VOCABULARY_SIZES, "time_gap": 64}
    assert [(s.name, s.table, s.max_length) for s in taobao.sequence][0] == ("hist_item", "item", 9)
    assert reference_schema(get_model("bst")).sequence and not reference_schema(get_model("dlrm")).sequence


# -- schema.json keeps its keys; old configs keep loading -----------------------------------------
def test_schema_split_rows_are_rows_on_disk(tmp_path: Path) -> None:
    DatasetSchema(dense=[], sparse=[SparseFeature("a", 3)], split_rows={"train": 4, "eval": 1}).save(tmp_path)
    on_disk = json.loads((tmp_path / "schema.json").read_text())
    assert on_disk["rows"] == {"train": 4, "eval": 1} and "split_rows" not in on_disk
    assert DatasetSchema.load(tmp_path).split_rows == {"train": 4, "eval": 1}


def test_retired_keys_of_old_run_configs_are_dropped_not_accepted_as_overrides(tmp_path: Path) -> None:
    old = tmp_path / "config.yaml"
    old.write_text("embeddings:\n  hash: modulo\n  max_rows: 77\nsharding:\n  pipeline: true\n")
    cfg = load_config(str(old))
    assert cfg.embeddings.max_rows == 77 and not hasattr(cfg.sharding, "pipeline")
    for override in ("sharding.pipeline=false", "embeddings.hash=modulo"):
        with pytest.raises(ConfigError, match="unknown config key"):
            load_config(None, [override])


# -- the baselines' settings, reported from the code that uses them --------------------------------
def test_compare_reports_the_baselines_settings() -> None:
    from terarec.launch.compare import render_markdown

    text = describe_baselines()
    assert text == "LightGBM: 50 trees, lr 0.05, 31 leaves; logreg: L2, C=1, lbfgs, 100 iterations"
    assert "200 trees" in describe_baselines(LightGBMSettings(num_trees=200), LogisticSettings())
    run = {"auc": 0.7, "logloss": 0.5, "ne": 0.9, "calibration": 1.0, "params_dense": 1, "params_sparse": 0}
    run.update(flops_per_example=1, samples_per_s=1.0, wall_s=1.0)
    result = {"name": "logreg", "kind": "baseline", "recipe": "logreg", "runs": [run], "mean": run, "std": run}
    report = {"data": "d", "seeds": [0], "nproc": 1, "overrides": [], "train_samples": 8, "eval_rows": 2}
    report.update(auc_standard_error=0.01, baseline_max_train_rows=8, results=[result])
    assert f"({text})" in render_markdown(report)


def test_readme_states_the_baselines_settings_of_the_code() -> None:
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    gbm, lr = LightGBMSettings(), LogisticSettings()
    stated = (
        f"{gbm.num_trees} trees, lr {gbm.learning_rate:g}, {gbm.num_leaves} leaves; logreg: one-hot + log1p dense, L2, "
    )
    assert stated + f"C={lr.c:g}, {lr.solver} with scikit-learn's {lr.max_iter} iterations" in readme
