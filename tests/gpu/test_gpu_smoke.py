"""Single-GPU smoke test per model: 20 steps with fused kernels and row-wise sharding (CUDA only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from terarec.cli import main
from terarec.data_pipeline.synth import SynthSpec, write_synthetic
from terarec.models import get_model, list_models

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU host)"),
]


@pytest.mark.parametrize("model", [e.name for e in list_models()])
def test_twenty_steps_row_wise_fused(model: str, tmp_path: Path) -> None:
    if get_model(model).embeddings == "sequence":  # BST needs a sequence dataset: the MovieLens sample
        from terarec.data_pipeline.sequence_sources import prepare_movielens
        from terarec.data_pipeline.sequences import SequenceOptions

        sample = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens_100k"
        if not sample.exists():
            pytest.skip(f"real data sample {sample} is absent")
        schema = prepare_movielens(str(sample), str(tmp_path / "data"), SequenceOptions(max_history=20))
        recipe, eval_rows = "bst_movielens", schema.split_rows["eval"]
    else:
        write_synthetic(SynthSpec(rows=30000, eval_fraction=0.1), tmp_path / "data", progress=False)
        recipe, eval_rows = "dcnv2_synth", 3000
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                recipe,
                f"model.name={model}",
                "model.flavor=small",
                f"data.path={tmp_path / 'data'}",
                f"run.dir={run}",
                "train.max_steps=20",
                "sharding.sharding_type=row_wise",
                "sharding.compute_kernel=fused",
            ]
        )
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["eval_rows"] == eval_rows and metrics["auc"] == metrics["auc"]  # not NaN


def test_fused_uvm_caching_kernel(tmp_path: Path) -> None:
    """Tables larger than GPU memory: the UVM-caching kernel trains too."""
    write_synthetic(SynthSpec(rows=30000, eval_fraction=0.1), tmp_path / "data", progress=False)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                "dcnv2_synth",
                f"data.path={tmp_path / 'data'}",
                f"run.dir={run}",
                "train.max_steps=20",
                "sharding.compute_kernel=fused_uvm_caching",
            ]
        )
        == 0
    )
    assert json.loads((run / "metrics.json").read_text())["steps"] == 20
