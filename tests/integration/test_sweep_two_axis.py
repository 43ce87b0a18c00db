"""Sweeps over two axes end to end on tiny synthetic data: model size x training rows (results with
train_rows, fits, plot, TensorBoard tags per data size), the LR axis chosen on validation (a poisoned
eval split changes nothing), and the train prefix under torchrun."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from terarec.cli import main
from terarec.data_pipeline.schema import DatasetSchema, dataset_files
from terarec.data_pipeline.synth import SynthSpec, write_synthetic

if TYPE_CHECKING:
    from tests.conftest import Torchrun

ROOT = Path(__file__).resolve().parents[2]
TINY = ["embeddings.max_rows=2000", "train.batch_size=100", "checkpoint.final=false", "logging.tensorboard=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two_axis")
    write_synthetic(SynthSpec(rows=3000, eval_fraction=0.2, seed=5), out, progress=False)  # 2,400 train rows
    return out


def _sweep(tmp_path: Path, raw: dict, *flags: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(path), "--output", str(out), *flags]) == 0
    return out


@pytest.mark.slow
def test_model_size_by_data_size_sweep_writes_one_curve_per_data_size(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # --jobs then splits the cores
    grid = {"model.num_layers": [1, 2], "data.max_train_rows": [600, 1800]}
    raw = {"base": "wukong_synth", "grid": grid, "overrides": [f"data.path={data}", *TINY]}
    out = _sweep(tmp_path, raw, "--jobs", "2")  # two runs at a time, each on half the cores
    runs = list(csv.DictReader((out / "results.csv").open()))
    assert {r["threads"] for r in runs} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    assert [(r["model.num_layers"], r["train_rows"]) for r in runs] == [
        ("1", "600"),
        ("1", "1800"),
        ("2", "600"),
        ("2", "1800"),
    ]
    assert all(r["samples"] == r["train_rows"] for r in runs)  # one epoch of the prefix, nothing more
    assert all(int(r["train_compute"]) == int(r["train_flops_per_example"]) * int(r["train_rows"]) for r in runs)
    points = list(csv.DictReader((out / "points.csv").open()))
    assert [p["train_rows"] for p in points] == ["600", "1800", "600", "1800"]
    fit = json.loads((out / "fit.json").read_text())
    assert {int(entry["train_rows"]) for entry in fit["per_data_size"]} == {600, 1800} and "verdict" in fit
    assert (out / "scaling.png").stat().st_size > 10_000
    events = EventAccumulator(str(out / "tb"), size_guidance={SCALARS: 0}).Reload()
    for rows in (600, 1800):
        curve = events.Scalars(f"scaling/logloss_vs_log10_train_compute_x1000/rows_{rows}")
        mine = sorted(float(r["logloss"]) for r in runs if r["train_rows"] == str(rows))
        assert sorted(e.value for e in curve) == pytest.approx(mine)
        # the GFLOP curve only where its integer steps keep every point apart (TensorBoard keeps one per step)
        steps = [round(int(r["train_compute"]) / 1e9) for r in runs if r["train_rows"] == str(rows)]
        gflop = f"scaling/logloss_vs_train_compute_gflop/rows_{rows}" in events.Tags()["scalars"]
        assert gflop == (len(set(steps)) == len(steps)), (rows, steps)
    saved = yaml.safe_load((out / "points" / "num_layers=1,max_train_rows=600" / "config.yaml").read_text())
    assert saved["data"]["max_train_rows"] == 600  # in the run's identity: reuse tells data sizes apart


def _poisoned_copy(data: Path, into: Path) -> Path:
    """``data`` with every eval label flipped (the manifest, which would reject the edited part, dropped)."""
    shutil.copytree(data, into)
    (into / "manifest.json").unlink()
    label = DatasetSchema.load(str(into)).label
    for part in dataset_files(str(into), "eval"):
        table = pq.read_table(part)
        flipped = pc.cast(pc.subtract(pa.scalar(1, table[label].type), table[label]), table[label].type)
        pq.write_table(table.set_column(table.schema.get_field_index(label), label, flipped), part)
    return into


@pytest.mark.slow
def test_lr_selection_reads_validation_so_a_poisoned_eval_split_changes_nothing(data: Path, tmp_path: Path) -> None:
    poisoned = _poisoned_copy(data, tmp_path / "poisoned")
    chosen = {}
    for name, dataset in (("clean", data), ("poisoned", poisoned)):
        raw = {
            "base": "wukong_synth",
            "grid": {"model.num_layers": [1]},
            "select": {"key": "optim.lr", "values": [0.0001, 0.03], "metric": "logloss"},
            "overrides": [f"data.path={dataset}", "data.valid_fraction=0.25", "train.max_steps=12", *TINY],
        }
        out = _sweep(tmp_path / name, raw)
        runs = list(csv.DictReader((out / "results.csv").open()))
        assert len(runs) == 2 and {r["selected"] for r in runs} == {"True", "False"}  # every run, flagged
        chosen[name] = {r["optim.lr"]: (r["selected"], r["valid_logloss"], r["logloss"]) for r in runs}
        points = list(csv.DictReader((out / "points.csv").open()))
        picked = next(r for r in runs if r["selected"] == "True")
        assert len(points) == 1 and points[0]["logloss_mean"] == picked["logloss"]  # the chosen run's eval
    assert sorted(chosen["clean"]) == ["0.0001", "0.03"]
    for lr in chosen["clean"]:
        clean, bad = chosen["clean"][lr], chosen["poisoned"][lr]
        assert clean[0] == bad[0] and float(clean[1]) == pytest.approx(float(bad[1]))  # same choice, same valid
        assert float(clean[2]) != pytest.approx(float(bad[2]), abs=1e-3)  # while the eval numbers moved
    assert [v[0] for v in chosen["clean"].values()].count("True") == 1


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_the_prefix_is_what_trains_at_any_world_size(
    data: Path, tmp_path: Path, nproc: int, torchrun: Torchrun
) -> None:
    run = tmp_path / "run"
    args = ["--config", "wukong_synth", f"data.path={data}", f"run.dir={run}", "logging.progress=false", *TINY]
    args += ["data.max_train_rows=700", "data.valid_fraction=0.1", "train.batch_size=50"]
    cmd = torchrun.command("terarec.trainer.main", args, nproc=nproc)
    done = subprocess.run(cmd, cwd=ROOT, env=torchrun.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == nproc and metrics["samples"] == metrics["train_rows"] == 700
    assert 0 < metrics["valid_logloss"] < 1 and 0 < metrics["valid_auc"] < 1  # the final validation pass
