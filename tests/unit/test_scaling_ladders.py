"""Training FLOPs against the Wukong paper's Table 5, and the shipped scaling ladders' sizes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from terarec.configs.loader import load_config
from terarec.launch.sweep import SweepSpec
from terarec.models import get_model
from terarec.models.dlrm import DLRM, DLRMParams
from terarec.trainer.model_factory import build_model, reference_schema

# Wukong paper (arXiv 2403.02545) Table 5, DLRM rows: GFLOP/example, a training (forward + backward)
# axis. The table's configurations could not be retrieved here; these are reconstructed from the
# forward FLOPs the project's issue recomputed for them (0.433, 1.256, 2.395, 10.288 GFLOP): the
# internal dataset's 720 sparse features, embedding dim 160, dot interaction, and a top MLP of
# 4 layers of width 512 / 2048 / 4096 / 16384, which give those forward FLOPs within 0.3%.
TABLE5_DLRM = [(512, 0.433, 1.37), (2048, 1.256, 3.85), (4096, 2.395, 7.29), (16384, 10.288, 31.0)]


def _table5_dlrm(width: int) -> DLRM:
    """On meta: 720 one-row tables (only their count and width matter), 13 dense inputs."""
    with torch.device("meta"):
        tables = [
            EmbeddingBagConfig(name=f"t{i}", embedding_dim=160, num_embeddings=1, feature_names=[f"f{i}"])
            for i in range(720)
        ]
        ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
        return DLRM(ebc, 13, DLRMParams(embedding_dim=160, bottom_mlp=[160], top_mlp=[width] * 4 + [1]))


@pytest.mark.parametrize("width, forward_gflop, paper_gflop", TABLE5_DLRM)
def test_training_flops_reproduce_the_wukong_papers_table5_dlrm_rows(
    width: int, forward_gflop: float, paper_gflop: float
) -> None:
    """Forward FLOPs are about a third of the paper's numbers; training FLOPs (3 x forward) land
    within 5% of them (-4.99%, -2.2%, -1.5%, -0.4%): the paper's axis is training compute. The
    smallest row is at the edge: the paper counts about 0.07 GFLOP more per row than we do."""
    model = _table5_dlrm(width)
    assert model.flops_per_example() / 1e9 == pytest.approx(forward_gflop, rel=0.003)
    assert model.train_flops_per_example() / 1e9 == pytest.approx(paper_gflop, rel=0.05)
    assert abs(model.flops_per_example() / 1e9 - paper_gflop) > 0.6 * paper_gflop  # forward alone is far off


def _ladder(name: str) -> list[tuple[Any, dict[str, int]]]:
    """(hyper-parameters, summary) of every point of a shipped ladder sweep, on its model's reference schema."""
    spec = SweepSpec.load(name, [])
    built = []
    for point in spec.points():
        cfg = load_config(spec.base, spec.point_overrides(point))
        with torch.device("meta"):
            model = build_model(cfg, reference_schema(get_model(cfg.model.name)), "meta")
        built.append((model.hparams, model.summary()))
    return built


def _grows(values: list[Any]) -> bool:
    """Never shrinks from one rung to the next, and ends larger than it starts."""
    return all(b >= a for a, b in zip(values, values[1:])) and values[-1] > values[0]


def test_cpu_wukong_ladder_grows_depth_and_width_over_30x_training_flops() -> None:
    rungs = _ladder("wukong_ladder")
    flops = [summary["train_flops_per_example"] for _, summary in rungs]
    assert all(b > 2 * a for a, b in zip(flops, flops[1:])) and flops[-1] / flops[0] >= 30
    for knob in ("num_layers", "fm_embeddings", "fm_rank"):
        assert _grows([getattr(hp, knob) for hp, _ in rungs]), knob
    assert _grows([hp.fm_mlp[0] for hp, _ in rungs]) and all(hp.embedding_dim == 16 for hp, _ in rungs)
    assert all(hp.fm_embeddings == hp.lc_embeddings and len(hp.fm_mlp) == 3 for hp, _ in rungs)


def test_cluster_wukong_ladder_is_the_papers_ladder() -> None:
    """wukong_ladder_criteo1tb (not run in CI): the paper's first and last rungs (Table 5: 2 layers,
    n_F = n_L = 8, k = 24, MLP 3 x 2048 -> 8 layers, 192, 192, 3 x 16384), at embedding dim 128,
    from 0.16 to 98 training GFLOP/example (the paper's Wukong reaches past 100) and 16B dense params."""
    rungs = _ladder("wukong_ladder_criteo1tb")
    ends = [
        (hp.num_layers, hp.fm_embeddings, hp.lc_embeddings, hp.fm_rank, hp.fm_mlp) for hp, _ in (rungs[0], rungs[-1])
    ]
    assert ends == [(2, 8, 8, 24, [2048] * 3), (8, 192, 192, 192, [16384] * 3)]
    assert all(hp.embedding_dim == 128 for hp, _ in rungs)
    flops = [summary["train_flops_per_example"] for _, summary in rungs]
    assert _grows(flops) and flops[-1] / flops[0] >= 100 and flops[-1] == pytest.approx(98e9, rel=0.01)
    assert rungs[-1][1]["params_dense"] == pytest.approx(16.1e9, rel=0.01)


@pytest.mark.parametrize(
    "name, knobs",
    [("dcnv2_ladder", ("num_layers", "low_rank")), ("bst_ladder", ("num_layers", "embedding_dim", "num_heads"))],
)
def test_dcnv2_and_bst_ladders_grow_every_knob_over_30x_training_flops(name: str, knobs: tuple[str, ...]) -> None:
    rungs = _ladder(name)
    flops = [summary["train_flops_per_example"] for _, summary in rungs]
    assert all(b > a for a, b in zip(flops, flops[1:])) and flops[-1] / flops[0] >= 30
    for knob in knobs:
        assert _grows([getattr(hp, knob) for hp, _ in rungs]), knob
