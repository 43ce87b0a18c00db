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
