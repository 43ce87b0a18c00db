"""Single-GPU smoke test per model: 20 steps with fused kernels and row-wise sharding (CUDA only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from terarec.cli import main
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.models import list_models

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU host)")]


@pytest.mark.parametrize("model", [e.name for e in list_models()])
def test_twenty_steps_row_wise_fused(model: str, tmp_path: Path) -> None:
    write_synthetic(SynthSpec(rows=30000, eval_fraction=0.1), tmp_path / "data", progress=False)
    run = tmp_path / "run"
    assert main(["train", "--config", "dcnv2_synth", f"model.name={model}", "model.flavor=small", f"data.path={tmp_path / 'data'}",
                 f"run.dir={run}", "train.max_steps=20", "sharding.sharding_type=row_wise", "sharding.compute_kernel=fused"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["eval_rows"] == 3000 and metrics["auc"] == metrics["auc"]  # not NaN
