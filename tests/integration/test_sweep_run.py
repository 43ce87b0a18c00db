"""``terarec sweep`` end to end: two points, results, fit, plot, TensorBoard curves, re-run skips."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from terarec.cli import main
from terarec.data_pipeline.synth import SynthSpec, write_synthetic


@pytest.mark.slow
def test_layer_sweep_writes_results_fit_and_skips_finished_points(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_synthetic(SynthSpec(rows=6000, eval_fraction=0.2, seed=4), tmp_path / "data", progress=False)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "base: wukong_synth\ngrid:\n  model.num_layers: [1, 2, 3]\n"
        f"overrides: [data.path={tmp_path / 'data'}, embeddings.max_rows=2000, train.max_steps=8, "
        "checkpoint.final=false]\n"
    )
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(sweep), "--output", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model.num_layers"] for r in rows] == ["1", "2", "3"]
    assert int(rows[2]["flops_per_example"]) > int(rows[1]["flops_per_example"]) > int(rows[0]["flops_per_example"])
    assert all(int(r["train_flops_per_example"]) == 3 * int(r["flops_per_example"]) for r in rows)
    assert all(int(r["train_compute"]) == int(r["train_flops_per_example"]) * int(r["samples"]) for r in rows)
    fit = json.loads((out / "fit.json").read_text())
    assert set(fit["fits"]) == {"train_compute", "params_dense"} and fit["points"] == 3
    holdout = fit["fits"]["train_compute"]["holdout"]  # fitted on 2 points, the largest predicted
    assert holdout["points_fitted"] == 2 and holdout["observed"] == pytest.approx(float(rows[2]["logloss"]))
    assert holdout["abs_error"] == pytest.approx(abs(holdout["predicted"] - holdout["observed"]))
    assert (out / "scaling.png").stat().st_size > 10_000
    curve = (
        EventAccumulator(str(out / "tb"), size_guidance={SCALARS: 0})
        .Reload()
        .Scalars("scaling/logloss_vs_flops_per_example")
    )
    assert [e.step for e in curve] == [int(r["flops_per_example"]) for r in rows]
    log_curve = (
        EventAccumulator(str(out / "tb"), size_guidance={SCALARS: 0})
        .Reload()
        .Scalars("scaling/logloss_vs_log10_flops_per_example_x1000")
    )
    assert [e.step for e in log_curve] == [round(1000 * math.log10(int(r["flops_per_example"]))) for r in rows]
    assert [e.value for e in log_curve] == pytest.approx([float(r["logloss"]) for r in rows])
    hparams = EventAccumulator(str(out / "tb" / "hparams" / "num_layers=2")).Reload()
    assert hparams.Scalars("hparam/logloss")[0].value == pytest.approx(float(rows[1]["logloss"]))
    assert "_hparams_/session_start_info" in hparams.PluginTagToContent("hparams")
    stamp = (out / "points" / "num_layers=1" / "metrics.json").stat().st_mtime
    assert (
        main(["sweep", "--config", str(sweep), "--output", str(out), "--launcher", "torchx"]) == 0
    )  # finished: not re-run
    assert (out / "points" / "num_layers=1" / "metrics.json").stat().st_mtime == stamp


@pytest.mark.slow
def test_a_point_trained_on_other_data_is_not_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real trainer records the dataset's fingerprint: the same data.path re-prepared with other
    rows stops the re-run (default), and --on-change rerun trains the point again on the new rows."""
    from terarec.data_pipeline.manifest import dataset_fingerprint

    data = tmp_path / "data"
    write_synthetic(SynthSpec(rows=3000, eval_fraction=0.2, seed=4), data, progress=False)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "base: wukong_synth\ngrid:\n  model.num_layers: [1]\n"
        f"overrides: [data.path={data}, embeddings.max_rows=2000, train.max_steps=4, checkpoint.final=false]\n"
    )
    out, point = tmp_path / "out", tmp_path / "out" / "points" / "num_layers=1"
    assert main(["sweep", "--config", str(sweep), "--output", str(out)]) == 0
    first = json.loads((point / "metrics.json").read_text())
    assert first["dataset_fingerprint"] == dataset_fingerprint(data) is not None
    write_synthetic(SynthSpec(rows=3000, eval_fraction=0.2, seed=5), data, progress=False, overwrite=True)
    capsys.readouterr()
    assert main(["sweep", "--config", str(sweep), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error: 1 finished sweep point(s) in ") and "num_layers=1: dataset changed" in err
    assert json.loads((point / "metrics.json").read_text()) == first  # stopped before running anything
    assert main(["sweep", "--config", str(sweep), "--output", str(out), "--on-change", "rerun"]) == 0
    second = json.loads((point / "metrics.json").read_text())
    assert second["dataset_fingerprint"] == dataset_fingerprint(data) != first["dataset_fingerprint"]
    assert second["logloss"] != first["logloss"]  # other eval rows, other numbers
    (row,) = csv.DictReader((out / "results.csv").open())
    assert (
        float(row["logloss"]) == pytest.approx(second["logloss"])
        and row["dataset_fingerprint"] == second["dataset_fingerprint"]
    )
    (stale,) = (out / "points").glob("num_layers=1.stale-*")
    assert json.loads((stale / "metrics.json").read_text()) == first
