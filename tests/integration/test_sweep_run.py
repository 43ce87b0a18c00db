"""``terarec sweep`` end to end: two points, results, fit, plot, TensorBoard curves, re-run skips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from terarec.cli import main
from terarec.data_pipeline.synth import SynthSpec, write_synthetic


@pytest.mark.slow
def test_layer_sweep_writes_results_fit_and_skips_finished_points(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_synthetic(SynthSpec(rows=6000, eval_fraction=0.2, seed=4), tmp_path / "data", progress=False)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: wukong_synth\ngrid:\n  model.num_layers: [1, 2, 3]\n"
                     f"overrides: [data.path={tmp_path / 'data'}, embeddings.max_rows=2000, train.max_steps=8, checkpoint.final=false]\n")
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(sweep), "--output", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model.num_layers"] for r in rows] == ["1", "2", "3"]
    assert int(rows[2]["flops_per_example"]) > int(rows[1]["flops_per_example"]) > int(rows[0]["flops_per_example"])
    fit = json.loads((out / "fit.json").read_text())
    assert set(fit["fits"]) == {"flops_per_example", "params_dense"} and fit["points"] == 3
    assert (out / "scaling.png").stat().st_size > 10_000
    curve = EventAccumulator(str(out / "tb"), size_guidance={SCALARS: 0}).Reload().Scalars("scaling/logloss_vs_flops_per_example")
    assert [e.step for e in curve] == [int(r["flops_per_example"]) for r in rows]
    stamp = (out / "points" / "num_layers=1" / "metrics.json").stat().st_mtime
    assert main(["sweep", "--config", str(sweep), "--output", str(out), "--launcher", "torchx"]) == 0  # finished: not re-run
    assert (out / "points" / "num_layers=1" / "metrics.json").stat().st_mtime == stamp


@pytest.mark.slow
@pytest.mark.distributed
def test_torchx_component_trains_on_the_local_scheduler(tmp_path: Path) -> None:
    import sys

    from torchx.runner import get_runner
    from torchx.specs import AppState

    from terarec.launch.components import train

    write_synthetic(SynthSpec(rows=6000, eval_fraction=0.2, seed=5), tmp_path / "data", progress=False)
    app = train("--config", "dcnv2_synth", f"data.path={tmp_path / 'data'}", f"run.dir={tmp_path / 'run'}", "train.max_steps=6",
                "embeddings.max_rows=2000", "logging.progress=false", "checkpoint.final=false", nproc_per_node=2, python=sys.executable)
    runner = get_runner()
    status = runner.wait(runner.run(app, "local_cwd", cfg={}), wait_interval=1)
    assert status is not None and status.state == AppState.SUCCEEDED, status
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 6
