"""The data axis (``data.max_train_rows``: a prefix of the train split) and the LR axis (``select``) of sweeps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import ladder_result
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from terarec.batch import real_rows
from terarec.cli import main
from terarec.configs.loader import ConfigError, load_config
from terarec.data_pipeline.schema import DatasetSchema, dataset_files
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.errors import UserError
from terarec.launch.sweep import SweepSpec, run_dir_of, write_results
from terarec.launch.sweep_select import Selection, mark_selected
from terarec.trainer.distributed import DistInfo
from terarec.trainer.preflight import check_config_against_data, train_rows
from terarec.trainer.setup import train_loader, valid_loader

TRAIN_ROWS = 2400  # 3000 rows, 20% eval


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("axes")
    write_synthetic(SynthSpec(rows=3000, eval_fraction=0.2, seed=3), out, progress=False)
    return out


def _config(data: Path, *overrides: str):  # noqa: ANN202
    base = [f"data.path={data}", "data.dense_transform=none", "data.valid_fraction=0.1", "train.batch_size=64"]
    return load_config("dcnv2_synth", [*base, *overrides])


def _split_rows(data: Path, first: int, end: int) -> list[tuple[float, ...]]:
    """Rows ``[first, end)`` of the train split in file order, as sorted (label, raw dense...) tuples."""
    schema = DatasetSchema.load(str(data))
    table = pa.concat_tables(pq.read_table(f) for f in dataset_files(str(data), "train")).slice(first, end - first)
    columns = [  # nulls as the loader fills them (data.dense_fill = 0)
        np.nan_to_num(np.asarray(table[c].to_numpy(), dtype=np.float32), nan=0.0) for c in [schema.label, *schema.dense]
    ]
    return sorted(zip(*(c.tolist() for c in columns)))


def _rows_read(cfg, data: Path, world_size: int, make) -> list[tuple[float, ...]]:  # noqa: ANN001
    """Every real row all ranks' loaders (``make``: train_loader / valid_loader) yield in one epoch."""
    schema = DatasetSchema.load(str(data))
    sizes = {feature.name: 1000 for feature in schema.sparse}
    out: list[tuple[float, ...]] = []
    for rank in range(world_size):
        info = DistInfo(rank, world_size, rank, torch.device("cpu"), "gloo")
        for batch in make(cfg, schema, sizes, info):
            keep = real_rows(batch.labels)
            rows = torch.cat([batch.labels[keep, None], batch.dense_features[keep]], dim=1)
            out += [tuple(r) for r in rows.tolist()]
    return sorted(out)


@pytest.mark.parametrize("world_size", [1, 2])
def test_training_reads_the_prefix_and_validation_is_unchanged(data: Path, world_size: int) -> None:
    cfg = _config(data, "data.max_train_rows=1000")
    assert _rows_read(cfg, data, world_size, train_loader) == _split_rows(data, 0, 1000)
    full = _config(data)  # the 10% carve: rows 2160..2400, whatever max_train_rows says
    assert _rows_read(cfg, data, world_size, valid_loader) == _rows_read(full, data, world_size, valid_loader)
    assert _rows_read(cfg, data, world_size, valid_loader) == _split_rows(data, 2160, TRAIN_ROWS)
    assert train_rows(cfg, DatasetSchema.load(str(data))) == 1000
    assert train_rows(full, DatasetSchema.load(str(data))) == 2160


def test_more_rows_than_the_carve_leaves_is_an_error_naming_the_limit(data: Path) -> None:
    schema = DatasetSchema.load(str(data))
    check_config_against_data(_config(data, "data.max_train_rows=2160"), schema, 1)  # all of them: fine
    with pytest.raises(
        ConfigError, match=r"data.max_train_rows=2,161 exceeds the 2,160 train rows .*use at most 2,160"
    ):
        check_config_against_data(_config(data, "data.max_train_rows=2161"), schema, 1)
    with pytest.raises(ConfigError, match="train.batch_size=600 exceeds the 300 train rows per rank"):
        check_config_against_data(_config(data, "data.max_train_rows=600", "train.batch_size=600"), schema, 2)


def test_train_with_too_many_rows_is_one_line_and_exit_2(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--config", "dcnv2_synth", f"data.path={data}", f"run.dir={tmp_path / 'run'}", "data.max_train_rows=9999"]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("terarec: error: data.max_train_rows=9,999 exceeds the 2,400 train rows")
        and err.count("\n") == 1
    )
    assert not (tmp_path / "run" / "metrics.json").exists()


# -- select: the LR axis --------------------------------------------------------------------------

SELECT = {"key": "optim.lr", "values": [0.001, 0.01], "metric": "logloss"}


@pytest.mark.parametrize(
    "select, expected",
    [
        ({"key": "optim.lr"}, "select values must be a non-empty list"),
        ({"key": "optim.lr", "values": [0.1, 0.1]}, "select values must be a non-empty list of distinct values"),
        ({**SELECT, "metric": "ne"}, "select metric must be one of logloss, auc"),
        ({**SELECT, "by": 1}, "'select' must be a mapping of key"),
        ({"key": "model.num_layers", "values": [1]}, "select key 'model.num_layers' is also set by the grid"),
    ],
)
def test_select_mistakes_name_the_file(select: dict, expected: str) -> None:
    raw = {"base": "wukong_synth", "grid": {"model.num_layers": [1, 2]}, "select": select}
    with pytest.raises(ConfigError, match=expected):
        SweepSpec.parse(raw, "s.yaml", [])


def test_an_override_of_the_select_key_conflicts_however_it_is_spaced() -> None:
    raw = {"base": "wukong_synth", "grid": {"model.num_layers": [1, 2]}, "select": SELECT}
    for override in ("optim.lr =0.05", " optim.lr= 0.05"):
        with pytest.raises(ConfigError, match="select key 'optim.lr' is also set"):
            SweepSpec.parse(raw, "s.yaml", [override])
    assert SweepSpec.parse(raw, "s.yaml", ["optim.lr_schedule=constant"]).select is not None


def test_a_non_finite_validation_score_never_wins_the_selection() -> None:
    nan = float("nan")
    for metric, good in (("logloss", 0.45), ("auc", 0.75)):
        rows = [
            {**_run("p", 0.001, None, 0.6), f"valid_{metric}": nan},
            {**_run("p", 0.003, None, 0.6), f"valid_{metric}": good},
        ]
        assert [r["optim.lr"] for r in mark_selected(rows, Selection("optim.lr", [0.001, 0.003], metric))] == [0.003]
    diverged = [_run("p", 0.001, nan, 0.6), _run("p", 0.003, float("inf"), 0.6)]
    with pytest.raises(UserError, match="sweep point p: every optim.lr value scored a non-finite valid_logloss"):
        mark_selected(diverged, Selection("optim.lr", [0.001, 0.003]))


def test_every_point_runs_once_per_value_under_its_own_dir(tmp_path: Path) -> None:
    spec = SweepSpec.parse({"base": "wukong_synth", "grid": {"model.num_layers": [1, 2]}, "select": SELECT}, "s", [])
    assert spec.run_points() == [{"model.num_layers": n, "optim.lr": lr} for n in (1, 2) for lr in (0.001, 0.01)]
    run = spec.run_points()[1]
    assert spec.point_of(run) == {"model.num_layers": 1}
    assert run_dir_of(spec, tmp_path, run, None) == tmp_path / "points" / "num_layers=1,lr=0.01"
    assert spec.point_overrides(run) == ["model.num_layers=1", "optim.lr=0.01"]


def _run(point: str, lr: float, valid: float | None, eval_loss: float, seed: int | None = None) -> dict:
    return {"point": point, "seed": seed, "optim.lr": lr, "logloss": eval_loss, "valid_logloss": valid}


def test_selection_reads_validation_only_and_averages_seeds() -> None:
    rows = [  # eval prefers lr 0.01 everywhere; validation decides
        _run("a", 0.001, 0.50, 0.60),
        _run("a", 0.01, 0.55, 0.40),
        _run("b", 0.001, 0.52, 0.60, seed=0),
        _run("b", 0.001, 0.48, 0.60, seed=1),  # mean 0.50
        _run("b", 0.01, 0.45, 0.40, seed=0),
        _run("b", 0.01, 0.57, 0.40, seed=1),  # mean 0.51: a single lucky seed does not win
    ]
    chosen = mark_selected(rows, Selection("optim.lr", [0.001, 0.01]))
    assert [(r["point"], r["optim.lr"], r["seed"]) for r in chosen] == [
        ("a", 0.001, None),
        ("b", 0.001, 0),
        ("b", 0.001, 1),
    ]
    assert [r["selected"] for r in rows] == [True, False, True, True, False, False]
    by_auc = [{**r, "valid_auc": 1 - r["valid_logloss"]} for r in rows[:2]]
    assert mark_selected(by_auc, Selection("optim.lr", [0.001, 0.01], "auc"))[0]["optim.lr"] == 0.001
    tie = [_run("a", 0.001, 0.5, 0.6), _run("a", 0.01, 0.5, 0.4)]
    assert mark_selected(tie, Selection("optim.lr", [0.001, 0.01]))[0]["optim.lr"] == 0.001  # the first listed


def test_a_run_without_a_validation_metric_cannot_be_selected() -> None:
    with pytest.raises(UserError, match="recorded no valid_logloss"):
        mark_selected([_run("a", 0.001, None, 0.6)], Selection("optim.lr", [0.001]))


def test_select_without_validation_rows_stops_before_training(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "s.yaml"
    raw = {"base": "wukong_synth", "grid": {"model.num_layers": [1]}, "select": SELECT}
    sweep.write_text(yaml.safe_dump({**raw, "overrides": [f"data.path={data}"]}))
    assert main(["sweep", "--config", str(sweep), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chooses on validation rows" in err and "set data.valid_fraction" in err
    assert not (tmp_path / "out" / "points").exists()


def test_a_data_size_beyond_the_data_stops_the_sweep_before_any_point_trains(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "s.yaml"
    grid = {"model.num_layers": [1], "data.max_train_rows": [1000, 99999]}
    sweep.write_text(yaml.safe_dump({"base": "wukong_synth", "grid": grid, "overrides": [f"data.path={data}"]}))
    assert main(["sweep", "--config", str(sweep), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error: sweep point max_train_rows=99999,num_layers=1: data.max_train_rows=99,999")
    assert err.count("\n") == 1 and not (tmp_path / "out" / "points").exists()


# -- two axes: model size x data size -----------------------------------------------------------


def _two_axis_rows() -> list[dict]:
    """3 model sizes x 2 data sizes: loss = 0.4 + 2 * C^-0.1 per size, the small data size 0.01 worse."""
    rows = []
    for data_rows, penalty in ((1000, 0.01), (4000, 0.0)):
        for rung, flops in enumerate((10**6, 10**7, 10**8)):
            loss = 0.4 + 2 * float(flops * data_rows) ** -0.1 + penalty
            row = ladder_result(rung, flops, loss, data_rows, **{"data.max_train_rows": data_rows})
            rows.append({**row, "point": f"{row['point']},max_train_rows={data_rows}", "train_rows": data_rows})
    return rows


def test_two_data_sizes_give_one_curve_and_fit_per_size(tmp_path: Path) -> None:
    write_results(_two_axis_rows(), tmp_path)
    points = list(csv.DictReader((tmp_path / "points.csv").open()))
    assert [int(p["train_rows"]) for p in points] == [1000] * 3 + [4000] * 3
    fit = json.loads((tmp_path / "fit.json").read_text())
    per_rows = {int(entry["train_rows"]): entry for entry in fit["per_data_size"]}
    assert set(per_rows) == {1000, 4000} and all(e["points"] == 3 and "fit" in e for e in per_rows.values())
    assert per_rows[4000]["holdout"]["points_fitted"] == 2
    assert set(fit["fits"]) == {"train_compute", "params_dense"}  # the single-axis fits stay
    tags = EventAccumulator(str(tmp_path / "tb"), size_guidance={SCALARS: 0}).Reload().Tags()["scalars"]
    for rows in (1000, 4000):
        curve = EventAccumulator(str(tmp_path / "tb"), size_guidance={SCALARS: 0}).Reload()
        steps = [e.step for e in curve.Scalars(f"scaling/logloss_vs_train_compute_gflop/rows_{rows}")]
        assert steps == [round(f * rows / 1e9) for f in (10**6, 10**7, 10**8)]
        assert f"scaling/logloss_vs_log10_train_compute_x1000/rows_{rows}" in tags


def test_runs_cut_short_of_their_rows_get_no_data_axis_verdict(tmp_path: Path) -> None:
    """A step limit that stops runs before one pass makes ``train_rows`` a data size nobody saw."""
    rows = [{**row, "samples": min(int(row["samples"]), 800)} for row in _two_axis_rows()]
    write_results(rows, tmp_path)
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["verdict"].startswith("no data-axis verdict: 6 run(s) trained fewer samples than their train_rows")
    assert fit["data_limit"]["data_limited"] is None
    complete = tmp_path / "complete"
    complete.mkdir()
    write_results(_two_axis_rows(), complete)
    assert not json.loads((complete / "fit.json").read_text())["verdict"].startswith("no data-axis verdict")


def test_one_data_size_keeps_the_single_axis_summary(tmp_path: Path) -> None:
    rows = [r for r in _two_axis_rows() if r["train_rows"] == 4000]
    write_results(rows, tmp_path)
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert "per_data_size" not in fit and "fit_2d" not in fit and set(fit["fits"]) == {"train_compute", "params_dense"}
    tags = EventAccumulator(str(tmp_path / "tb"), size_guidance={SCALARS: 0}).Reload().Tags()["scalars"]
    assert not [t for t in tags if "/rows_" in t]


def test_the_shipped_data_ladder_crosses_the_wukong_ladder_with_three_data_sizes() -> None:
    spec = SweepSpec.load("wukong_ladder_data", [])
    ladder = SweepSpec.load("wukong_ladder", [])
    assert spec.grid["model.flavor"] == ladder.grid["model.flavor"]
    assert spec.grid["data.max_train_rows"] == [100_000, 300_000, 900_000] and len(spec.points()) == 15


def test_noisy_points_are_judged_within_their_data_size() -> None:
    """Across data sizes neighbouring computes are other curves: only a point's own curve says whether
    its spread hides its place."""
    from terarec.launch.sweep_summary import _flag_noisy

    def point(name: str, rows: int, compute: float, mean: float) -> dict:
        return {"point": name, "train_rows": rows, "train_compute": compute, "logloss_mean": mean, "logloss_std": 0.01}

    points = [point("a", 1000, 1.0, 0.50), point("b", 1000, 2.0, 0.45)]
    points += [point("c", 4000, 1.5, 0.505), point("d", 4000, 2.5, 0.46)]
    assert _flag_noisy(points, "logloss") == []  # each curve drops by 0.045-0.05, five times the spread
    one_size = [{**p, "train_rows": 1000} for p in points]  # one curve of four: a and c are within noise
    assert {item["point"] for item in _flag_noisy(one_size, "logloss")} == {"a", "c"}
