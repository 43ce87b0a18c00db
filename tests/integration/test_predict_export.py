"""After training: ``terarec predict`` (any world size, input order, eval's AUC), ``terarec export``
(fp32 parity with the trained model for every model, int8 close to fp32) and ``terarec score``."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from terarec.cli import main
from terarec.data_pipeline.schema import DatasetError
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.trainer.metrics import AUC_BINS

ROOT = Path(__file__).resolve().parents[2]
TINY = ["embeddings.max_rows=2000", "train.batch_size=64", "logging.progress=false", "logging.tensorboard=false"]


def binned_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The AUC ``trainer.metrics.BinaryMetrics`` computes (histograms over ``AUC_BINS`` bins)."""
    bins = np.clip((probabilities * AUC_BINS).astype(np.int64), 0, AUC_BINS - 1)
    negatives = np.bincount(bins[labels < 0.5], minlength=AUC_BINS).astype(np.float64)
    positives = np.bincount(bins[labels > 0.5], minlength=AUC_BINS).astype(np.float64)
    below = np.cumsum(negatives) - negatives
    return float((positives * (below + 0.5 * negatives)).sum() / (positives.sum() * negatives.sum()))


def split_labels(data: Path, split: str = "eval") -> np.ndarray:
    return pq.read_table(sorted(glob.glob(str(data / split / "part-*.parquet")))).column("label").to_numpy()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(rows=4000, eval_fraction=0.25, seed=4), out, progress=False)
    return out


def _train(data: Path, run: Path, model: str) -> Path:
    args = ["--config", "dcnv2_synth", f"model.name={model}", f"data.path={data}", f"run.dir={run}"]
    assert main(["train", *args, "train.max_steps=20", *TINY, "checkpoint.final=true"]) == 0
    return run


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(data, tmp_path_factory.mktemp("runs") / "dcnv2", "dcnv2")


def _predictions(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


@pytest.mark.slow
@pytest.mark.distributed
def test_predict_matches_eval_at_world_sizes_1_and_2(run: Path, data: Path, tmp_path: Path) -> None:
    assert main(["eval", "--run", str(run)]) == 0
    evaluated = json.loads((run / "eval.json").read_text())
    assert main(["predict", "--run", str(run), "--output", str(tmp_path / "one.parquet")]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "terarec.cli", "predict", "--run", str(run), "--nproc", "2"]
        + ["--output", str(tmp_path / "two.parquet")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    labels = split_labels(data)
    one, two = _predictions(tmp_path / "one.parquet"), _predictions(tmp_path / "two.parquet")
    for predicted in (one, two):
        assert len(predicted["row"]) == len(labels) == evaluated["count"] == 1000
        np.testing.assert_array_equal(predicted["row"], np.arange(1000))
        np.testing.assert_array_equal(predicted["label"], labels)  # input order: the split's labels in order
        assert abs(binned_auc(predicted["probability"], predicted["label"]) - evaluated["auc"]) <= 1e-6
    np.testing.assert_allclose(one["probability"], two["probability"], atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.parquet", "two.parquet"]  # no parts, no tmp left


@pytest.mark.slow
def test_predict_train_split_in_order(run: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    assert main(["predict", "--run", str(run), "--split", "train", "--output", str(out)]) == 0
    np.testing.assert_array_equal(_predictions(out)["label"], split_labels(data, "train"))


def _export_parity(run: Path, data: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """Predict (the trained model through DMP) and score fp32 and int8 exports of ``run``."""
    trained = tmp_path / "trained.parquet"
    assert main(["predict", "--run", str(run), "--output", str(trained)]) == 0
    scores = {"trained": _predictions(trained)["probability"], "label": _predictions(trained)["label"]}
    for dtype in ("fp32", "int8"):
        assert main(["export", "--run", str(run), "--output", str(tmp_path / dtype), "--dtype", dtype]) == 0
        out = tmp_path / f"{dtype}.parquet"
        assert main(["score", "--model", str(tmp_path / dtype), "--data", str(data), "--output", str(out)]) == 0
        scored = _predictions(out)
        np.testing.assert_array_equal(scored["label"], scores["label"])
        scores[dtype] = scored["probability"]
    return scores


def _check_parity(scores: dict[str, np.ndarray]) -> None:
    assert np.abs(scores["fp32"] - scores["trained"]).max() <= 1e-5
    fp32_auc, int8_auc = binned_auc(scores["fp32"], scores["label"]), binned_auc(scores["int8"], scores["label"])
    assert abs(int8_auc - fp32_auc) <= 0.002, (fp32_auc, int8_auc)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dlrm", "dcnv2", "wukong"])
def test_export_scores_equal_trained_model(model: str, data: Path, tmp_path: Path) -> None:
    _check_parity(_export_parity(_train(data, tmp_path / "run", model), data, tmp_path))


@pytest.mark.slow
def test_bst_export_scores_equal_trained_model(movielens_dir: Path, tmp_path: Path) -> None:
    from terarec.data_pipeline.sequence_sources import prepare_movielens

    data = tmp_path / "data"
    prepare_movielens(str(movielens_dir), str(data))
    run = tmp_path / "run"
    args = ["--config", "bst_movielens", f"data.path={data}", f"run.dir={run}", "train.max_steps=20"]
    assert main(["train", *args, "logging.progress=false", "logging.tensorboard=false", "checkpoint.final=true"]) == 0
    _check_parity(_export_parity(run, data, tmp_path))
    # movielens names a GAUC group key: predict writes it (the user id as the model saw it)
    assert list(_predictions(tmp_path / "trained.parquet")) == ["row", "label", "probability", "user"]


@pytest.mark.slow
def test_serving_rows_and_manifest_errors(run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from terarec.serving import load

    assert main(["export", "--run", str(run), "--output", str(tmp_path / "fp32")]) == 0
    served = load(str(tmp_path / "fp32"))
    first = pq.read_table(sorted(glob.glob(str(data / "eval" / "part-*.parquet")))[0]).slice(0, 5)
    as_dict = {name: first.column(name).to_pylist() for name in first.column_names}
    np.testing.assert_allclose(served(first).numpy(), served(as_dict).numpy(), atol=1e-7)
    assert served.manifest["model"] == "dcnv2" and served.manifest["dtype"] == "fp32"
    multi_hot = {**as_dict, "cat_0": [[v] for v in as_dict["cat_0"]]}  # a multi-hot dataset's rows
    with pytest.raises(DatasetError, match="column 'cat_0' holds lists of ids .multi-hot., but the model was trained"):
        served(multi_hot)
    assert served.manifest["format"] == "terarec-export/1"  # no calibration: readable by any /1 reader
    assert served.logits(first).dtype == torch.float64  # one dtype, calibrated export or not

    capsys.readouterr()
    out = str(tmp_path / "s.parquet")
    assert main(["score", "--model", str(tmp_path / "nothing"), "--data", str(data), "--output", out]) == 2
    assert capsys.readouterr().err.strip() == (
        f"terarec: error: {tmp_path / 'nothing' / 'manifest.json'} not found: not a terarec export "
        "(make one with terarec export)"
    )
    manifest_path = tmp_path / "fp32" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["table_sizes"]["cat_0"] += 1
    manifest_path.write_text(json.dumps(manifest))
    assert main(["score", "--model", str(tmp_path / "fp32"), "--data", str(data), "--output", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match" in err[0] and "table 'cat_0'" in err[0], err
