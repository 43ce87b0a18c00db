"""Models: parity with torchrec DLRM / DLRM_DCN, gradients everywhere, FLOPs vs FlopCounterMode."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchrec.models.dlrm import DLRM as TorchrecDLRM
from torchrec.models.dlrm import DLRM_DCN
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.models import TrainWrapper, get_model, list_models
from terarec.models.dcnv2 import DCNv2, DCNv2Params
from terarec.models.dlrm import DLRM, DLRMParams

B, F, D, N = 6, 3, 8, 5
KEYS = [f"f{i}" for i in range(F)]


def _ebc(device: str = "cpu") -> EmbeddingBagCollection:
    torch.manual_seed(0)
    return EmbeddingBagCollection(tables=[EmbeddingBagConfig(name=f"t_{k}", embedding_dim=D, num_embeddings=20, feature_names=[k]) for k in KEYS],
                                  device=torch.device(device))


def _inputs() -> tuple[torch.Tensor, KeyedJaggedTensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(0, 3, (F * B,), generator=g)
    values = torch.randint(0, 20, (int(lengths.sum()),), generator=g)
    return torch.rand(B, N, generator=g), KeyedJaggedTensor(keys=KEYS, values=values, lengths=lengths)


def test_dlrm_matches_torchrec_dlrm() -> None:
    ours = DLRM(_ebc(), N, DLRMParams(embedding_dim=D, bottom_mlp=[16, D], top_mlp=[12, 1]))
    ref = TorchrecDLRM(_ebc(), N, [16, D], [12, 1])
    ref.load_state_dict(ours.state_dict())
    dense, kjt = _inputs()
    torch.testing.assert_close(ours(dense, kjt), ref(dense, kjt))


def test_dcnv2_stacked_matches_torchrec_dlrm_dcn() -> None:
    ours = DCNv2(_ebc(), N, DCNv2Params(embedding_dim=D, bottom_mlp=[16, D], num_layers=2, low_rank=4, top_mlp=[12, 1]))
    ref = DLRM_DCN(_ebc(), N, [16, D], [12, 1], dcn_num_layers=2, dcn_low_rank_dim=4)
    ref.load_state_dict(ours.state_dict())
    dense, kjt = _inputs()
    torch.testing.assert_close(ours(dense, kjt), ref(dense, kjt))


def _small_variants() -> list[tuple[str, object]]:
    out = []
    for entry in list_models():
        for flavor in entry.flavors:
            hp = entry.resolve(flavor)
            small = {"embedding_dim": D, "bottom_mlp": [16, D], "top_mlp": [12, 1]}
            for key in ("low_rank",):
                if hasattr(hp, key):
                    small[key] = min(getattr(hp, key), 4)
            out.append((f"{entry.name}-{flavor}", entry.builder(dataclasses.replace(hp, **small), _ebc(), N)))
    return out


@pytest.mark.parametrize("name, model", _small_variants(), ids=lambda x: x if isinstance(x, str) else "")
def test_gradients_reach_every_parameter(name: str, model: torch.nn.Module) -> None:
    dense, kjt = _inputs()
    from torchrec.datasets.utils import Batch

    labels = torch.tensor([1.0, 0.0, -1.0, 1.0, 0.0, 1.0])  # one padding row
    loss, (_, logits, _) = TrainWrapper(model)(Batch(dense, kjt, labels))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [], f"{name}: no gradient for {missing}"
    assert logits.shape == (B,)


def test_padding_rows_do_not_change_the_loss() -> None:
    from torchrec.datasets.utils import Batch

    model = DLRM(_ebc(), N, DLRMParams(embedding_dim=D, bottom_mlp=[16, D], top_mlp=[12, 1]))
    dense, kjt = _inputs()
    full, _ = TrainWrapper(model)(Batch(dense, kjt, torch.tensor([1.0, 0, 1, 0, 1, 1])))
    masked, _ = TrainWrapper(model)(Batch(dense, kjt, torch.tensor([1.0, 0, 1, 0, -1, -1])))
    logits = model(dense, kjt).squeeze(-1)[:4]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 0, 1, 0]))
    torch.testing.assert_close(masked, expected)
    assert not torch.isclose(full, masked)


@pytest.mark.parametrize("name, model", _small_variants(), ids=lambda x: x if isinstance(x, str) else "")
def test_analytic_flops_match_flop_counter(name: str, model: torch.nn.Module) -> None:
    dense, kjt = _inputs()
    with FlopCounterMode(display=False) as counter:
        model(dense, kjt)
    measured = counter.get_total_flops() / B
    assert abs(model.flops_per_example() - measured) <= 0.02 * measured, (name, model.flops_per_example(), measured)


def test_flavors_param_counts_on_meta() -> None:
    """Documented sizes: dense params of each flavor on a 3-feature, dim-8 layout."""
    from terarec.trainer.model_factory import describe_models

    rows = {(r["model"], r["flavor"]): r for r in describe_models()}
    mlperf = rows[("dcnv2", "mlperf")]
    # bottom 13-512-256-128, 3 cross layers of rank 512 on W=27*128, top 3456-1024-1024-512-256-1
    w = 27 * 128
    bottom = 13 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128
    cross = 3 * (w * 512 + 512 * w + w)
    top = w * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 256 + 256 + 256 + 1
    assert mlperf["params_dense"] == bottom + cross + top
    assert mlperf["params_sparse"] == 128 * sum(min(c, 40_000_000) for c in __import__("terarec.data_pipeline.criteo_layout", fromlist=["x"]).CRITEO_1TB_CARDINALITIES)
    assert get_model("dcnv2").resolve("mlperf").top_mlp == [1024, 1024, 512, 256, 1]
