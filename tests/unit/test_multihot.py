"""``prepare multihot``: MLPerf DLRMv2's multi-hot materialisation, against a direct transcription of the
reference, and identical across runs and worker counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from terarec.cli import main
from terarec.data_pipeline import multihot
from terarec.data_pipeline.criteo_layout import CRITEO_1TB_CARDINALITIES, MLPERF_MULTI_HOT_SIZES, SPARSE_NAMES
from terarec.data_pipeline.manifest import DatasetManifest
from terarec.data_pipeline.multihot import MultiHotSpec, build_tables, prepare_multihot
from terarec.data_pipeline.schema import DatasetSchema
from terarec.data_pipeline.synth import SynthSpec, write_synthetic


def reference_tables(sizes: list[int], num_embeddings: list[int], dist_type: str) -> list[torch.Tensor]:
    """torchrec_dlrm's ``Multihot`` lookup tables (multi_hot.py, facebookresearch/dlrm 0422268b), transcribed:
    numpy's global generator seeded once with 0, then per table ``[arange(n), draws of shape (n, size - 1)]``,
    as int32 tensors."""
    np.random.seed(0)
    tables = []
    for n, size in zip(num_embeddings, sizes):
        ids = np.arange(n)[:, np.newaxis]
        extra: np.ndarray
        if dist_type == "uniform":
            extra = np.random.randint(0, n, size=(n, size - 1))
        else:
            with np.errstate(invalid="ignore"):
                extra = np.random.pareto(a=0.25, size=(n, size - 1)).astype(np.int32) % n
        tables.append(torch.from_numpy(np.concatenate((ids, extra), axis=-1)).int())
    return tables


def reference_bags(one_hot: np.ndarray, table: torch.Tensor, n: int) -> np.ndarray:
    """materialize_synthetic_multihot_dataset.py's lookup: ``embedding(ids % n, table)``."""
    return torch.nn.functional.embedding(torch.from_numpy(one_hot.astype(np.int64) % n), table).numpy()


@pytest.mark.parametrize("distribution", ["uniform", "pareto"])
def test_chunked_tables_equal_the_reference_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, distribution: str
) -> None:
    """Tables drawn in chunks of 7 values equal the reference's single draws, table after table."""
    monkeypatch.setattr(multihot, "DRAW_VALUES", 7)
    spec = MultiHotSpec.preset("mlperf", max_embeddings=300, distribution=distribution)
    build_tables(spec, tmp_path)
    expected = reference_tables(list(spec.sizes), list(spec.num_embeddings), distribution)
    for j, size in enumerate(spec.sizes):
        if size == 1:
            assert not (tmp_path / f"table_{j}.npy").exists()
            continue
        table = np.load(tmp_path / f"table_{j}.npy")
        assert np.array_equal(table, expected[j].numpy()[:, 1:]), f"table {j}"
    if distribution == "pareto":
        assert (expected[20].numpy() >= 0).all()  # the int32 overflow of the heavy tail still lands in range


def test_preset_is_mlperf_dlrmv2() -> None:
    spec = MultiHotSpec.preset("mlperf")
    assert (
        list(spec.sizes)
        == MLPERF_MULTI_HOT_SIZES
        == [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
    )
    assert list(spec.num_embeddings) == CRITEO_1TB_CARDINALITIES and spec.distribution == "uniform"
    assert sum(n * (s - 1) for n, s in zip(spec.num_embeddings, spec.sizes)) == 5_774_565_178  # draws: 23 GB int32


@pytest.fixture(scope="module")
def one_hot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-hot Criteo-layout dataset of 3000 rows in two parts (train, eval)."""
    path = tmp_path_factory.mktemp("onehot")
    write_synthetic(SynthSpec(rows=3000, seed=2, eval_fraction=0.3), path, progress=False)
    return path


def test_dataset_matches_the_reference_lookup(one_hot: Path, tmp_path: Path) -> None:
    spec = MultiHotSpec.preset("mlperf", max_embeddings=5000)
    schema = prepare_multihot(one_hot, tmp_path, spec, workers=1, progress=False)
    tables = reference_tables(list(spec.sizes), list(spec.num_embeddings), "uniform")
    assert schema.split_rows == {"train": 2100, "eval": 900}
    assert [(f.cardinality, f.multi_hot) for f in schema.sparse] == [(n, True) for n in spec.num_embeddings]
    for split in ("train", "eval"):
        source, made = pq.read_table(one_hot / split), pq.read_table(tmp_path / split)
        assert made.column_names == source.column_names and made["label"].equals(source["label"])
        for j, name in enumerate(SPARSE_NAMES):
            bags = np.asarray(made[name].to_pylist(), dtype=np.int64)  # (rows, size): a fixed size per feature
            expected = reference_bags(source[name].to_numpy(), tables[j], spec.num_embeddings[j])
            assert np.array_equal(bags, expected), f"{split} {name}"
    first = pq.read_table(tmp_path / "train").slice(0, 1).to_pylist()[0]
    assert len(first["cat_20"]) == 100 and first["cat_20"][0] == first["cat_20"][0] % 5000
    manifest = DatasetManifest.load(tmp_path)
    assert manifest is not None and manifest.kind == "multihot"
    assert manifest.options["--input-fingerprint"] == DatasetManifest.load(one_hot).fingerprint()  # type: ignore[union-attr]
    assert not (tmp_path / multihot.TABLES_DIR).exists() and DatasetSchema.load(tmp_path) == schema


def test_identical_across_runs_and_worker_counts(one_hot: Path, tmp_path: Path) -> None:
    spec = MultiHotSpec.preset("mlperf", max_embeddings=2000)
    prints = []
    for name, workers in (("w1", 1), ("w2", 2), ("w2_again", 2)):
        prepare_multihot(one_hot, tmp_path / name, spec, workers=workers, progress=False)
        manifest = DatasetManifest.load(tmp_path / name)
        assert manifest is not None
        prints.append(manifest.fingerprint())
    assert len(set(prints)) == 1


def test_cli_rerun_changed_options_and_bad_input(
    one_hot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["prepare", "multihot", "--input", str(one_hot), "--output", str(tmp_path / "m"), "--max-embeddings", "100"]
    assert main([*args, "--workers", "1"]) == 0
    assert main([*args, "--workers", "1"]) == 0 and "nothing to do" in capsys.readouterr().out
    assert main([*args[:-1], "200"]) == 2
    assert "table rows (--preset, --max-embeddings) was" in capsys.readouterr().err
    assert main(["prepare", "multihot", "--input", str(tmp_path / "m"), "--output", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error:") and "not a one-hot Criteo dataset" in err and err.count("\n") == 1
    for extra in ([], ["--overwrite"]):  # never in place: --overwrite would replace the one-hot input
        assert main(["prepare", "multihot", "--input", str(one_hot), "--output", str(one_hot), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("terarec: error: --output") and "is the --input dataset" in err
    assert (one_hot / "manifest.json").is_file() and "multihot" not in (one_hot / "manifest.json").read_text()


def test_overwrites_in_one_process_read_their_own_tables(one_hot: Path, tmp_path: Path) -> None:
    """--overwrite builds in ``<out>.tmp-<pid>`` every time: the tables of one spec must not serve the next."""
    uniform = MultiHotSpec.preset("mlperf", max_embeddings=300)
    pareto = MultiHotSpec.preset("mlperf", max_embeddings=300, distribution="pareto")
    fresh = {}
    for name, spec in (("u", uniform), ("p", pareto)):
        prepare_multihot(one_hot, tmp_path / name, spec, workers=1, progress=False)
        fresh[name] = pq.read_table(tmp_path / name / "train")["cat_20"]
    out = tmp_path / "again"
    for name, spec in (("u", uniform), ("p", pareto), ("u", uniform)):
        prepare_multihot(one_hot, out, spec, workers=1, progress=False, overwrite=True)
        assert pq.read_table(out / "train")["cat_20"].equals(fresh[name]), name
    assert not multihot._TABLES  # the mapped tables are released with their directory
