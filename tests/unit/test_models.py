"""Models: parity with torchrec DLRM / DLRM_DCN, Wukong FM, BST masking, gradients, FLOPs, documented sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from torchrec.models.dlrm import DLRM as TorchrecDLRM
from torchrec.models.dlrm import DLRM_DCN
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.models import TrainWrapper, get_model, list_models
from terarec.models.dcnv2 import DCNv2, DCNv2Params
from terarec.models.dlrm import DLRM, DLRMParams

B, F, D, N = 6, 3, 8, 5
KEYS = [f"f{i}" for i in range(F)]


def _ebc(device: str = "cpu") -> EmbeddingBagCollection:
    torch.manual_seed(0)
    return EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"t_{k}", embedding_dim=D, num_embeddings=20, feature_names=[k]) for k in KEYS],
        device=torch.device(device),
    )


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


# FlopCounterMode has no formula for the fused CPU attention kernel; it is the same as SDPA's
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, out_shape=None, **kw: (
        sdpa_flop_count(q, k, v)
    ),
}
SMALL = {
    "embedding_dim": D,
    "bottom_mlp": [16, D],
    "top_mlp": [12, 1],
    "dense_mlp": [16],
    "fm_mlp": [16],
    "fm_embeddings": 4,
    "lc_embeddings": 3,
    "fm_rank": 3,
    "num_heads": 2,
    "max_history": 4,
}
SEQ_KEYS = ["item", "category", "time_gap", "user", "hist_item", "hist_category", "hist_time_gap"]


def _ec() -> EmbeddingCollection:
    torch.manual_seed(0)
    tables = [
        EmbeddingConfig(name=f"t_{k}", embedding_dim=D, num_embeddings=20, feature_names=[k, f"hist_{k}"])
        for k in ("item", "category", "time_gap")
    ]
    return EmbeddingCollection(
        tables=[*tables, EmbeddingConfig(name="t_user", embedding_dim=D, num_embeddings=20, feature_names=["user"])]
    )


def _seq_inputs(history: list[int], seed: int = 1) -> tuple[torch.Tensor, KeyedJaggedTensor]:
    """B rows: one id per target/user feature, ``history[b]`` items in each history feature."""
    g = torch.Generator().manual_seed(seed)
    b = len(history)
    lengths = torch.tensor([1] * (4 * b) + history * 3)
    values = torch.randint(1, 20, (int(lengths.sum()),), generator=g)
    return torch.rand(b, N, generator=g), KeyedJaggedTensor(keys=SEQ_KEYS, values=values, lengths=lengths)


def _small(entry, flavor: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, KeyedJaggedTensor]]:
    hp = entry.resolve(flavor)
    names = {f.name for f in dataclasses.fields(hp)}
    small = {k: v for k, v in SMALL.items() if k in names}
    if "low_rank" in names:
        small["low_rank"] = min(hp.low_rank, 4)
    hp = dataclasses.replace(hp, **small)
    if entry.embeddings == "sequence":
        return entry.builder(_ec(), N, hp), _seq_inputs([4, 4, 4, 4, 4, 4])
    return entry.builder(_ebc(), N, hp), _inputs()


def _small_variants() -> list[tuple[str, object]]:
    return [(f"{entry.name}-{flavor}", _small(entry, flavor)) for entry in list_models() for flavor in entry.flavors]


@pytest.mark.parametrize("name, model", _small_variants(), ids=lambda x: x if isinstance(x, str) else "")
def test_gradients_reach_every_parameter(name: str, model: tuple) -> None:
    from torchrec.datasets.utils import Batch

    model, (dense, kjt) = model

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
def test_analytic_flops_match_flop_counter(name: str, model: tuple) -> None:
    model, (dense, kjt) = model
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        model(dense, kjt)
    measured = counter.get_total_flops() / B
    assert abs(model.flops_per_example() - measured) <= 0.02 * measured, (name, model.flops_per_example(), measured)


@pytest.mark.parametrize("name, model", _small_variants(), ids=lambda x: x if isinstance(x, str) else "")
def test_training_flops_are_three_times_forward_and_match_forward_plus_backward(name: str, model: tuple) -> None:
    """``train_flops_per_example`` = 3 x forward (the convention in models/common.py); the flop
    counter over forward + backward agrees, short only of the first layer's input gradient on raw
    dense features, which autograd skips and the convention counts (a few % on these tiny models)."""
    model, (dense, kjt) = model
    assert model.train_flops_per_example() == 3 * model.flops_per_example()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        model(dense, kjt).sum().backward()
    measured = counter.get_total_flops() / B
    assert 0.94 * model.train_flops_per_example() <= measured <= model.train_flops_per_example(), (name, measured)


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
    assert mlperf["params_sparse"] == 128 * sum(
        min(c, 40_000_000)
        for c in __import__("terarec.data_pipeline.criteo_layout", fromlist=["x"]).CRITEO_1TB_CARDINALITIES
    )
    assert get_model("dcnv2").resolve("mlperf").top_mlp == [1024, 1024, 512, 256, 1]


def test_wukong_optimized_fm_equals_pairwise_when_rank_is_n() -> None:
    from terarec.models.wukong import optimized_fm

    x = torch.randn(4, 7, D, dtype=torch.float64)
    pairwise = torch.stack(
        [torch.stack([torch.stack([(x[b, i] * x[b, j]).sum() for j in range(7)]) for i in range(7)]) for b in range(4)]
    )
    torch.testing.assert_close(optimized_fm(x, torch.eye(7, dtype=torch.float64)), pairwise)  # k = n, Y = I
    y = torch.randn(7, 3, dtype=torch.float64)  # any rank-k projection of the pairwise matrix
    torch.testing.assert_close(optimized_fm(x, y), pairwise @ y)


def test_wukong_layer_shapes_and_residual_projection() -> None:
    from terarec.models.wukong import Wukong, WukongParams

    model = Wukong(
        _ebc(), N, WukongParams(embedding_dim=D, num_layers=3, num_dense_embeddings=2, fm_embeddings=4, lc_embeddings=3)
    )
    assert model.layer_inputs() == [F + 2, 7, 7]
    assert not isinstance(model.layers[0].residual, torch.nn.Identity)  # 5 -> 7 embeddings: projected
    assert isinstance(model.layers[1].residual, torch.nn.Identity)
    dense, kjt = _inputs()
    assert model(dense, kjt).shape == (B, 1)


def _bst():
    from terarec.models.bst import BST, BSTParams

    return BST(_ec(), N, BSTParams(embedding_dim=D, num_heads=2, num_layers=2, dropout=0.0, top_mlp=[12, 1])).eval()


def test_bst_row_output_does_not_depend_on_padding() -> None:
    """A row's logit is the same alone (padded to its own length) or next to longer histories."""
    model = _bst()
    dense, kjt = _seq_inputs([1, 5, 0, 3])
    together = model(dense, kjt)
    for row in range(4):
        single = KeyedJaggedTensor.from_jt_dict({k: _row(kjt[k], row) for k in SEQ_KEYS})
        torch.testing.assert_close(model(dense[row : row + 1], single), together[row : row + 1], atol=1e-5, rtol=1e-5)


def _row(jt, row: int):
    from torchrec.sparse.jagged_tensor import JaggedTensor

    offsets = jt.offsets()
    return JaggedTensor(values=jt.values()[offsets[row] : offsets[row + 1]], lengths=jt.lengths()[row : row + 1])


def test_bst_padded_slots_are_masked_out() -> None:
    """Garbage in the padded slots of the sequence tensor changes nothing."""
    model = _bst()
    _, kjt = _seq_inputs([1, 5, 0, 3])
    sequence, padding = model.inter_arch.sequence(model.embedding_collection(kjt))
    assert padding.tolist()[0] == [False, True, True, True, True, False]  # 1 history item, then the target
    noisy = torch.where(padding.unsqueeze(-1), torch.randn_like(sequence) * 100, sequence)
    torch.testing.assert_close(model.inter_arch.encode(noisy, padding), model.inter_arch.encode(sequence, padding))


def test_bst_history_changes_the_output() -> None:
    model = _bst()
    dense, with_history = _seq_inputs([3, 3])
    lengths = with_history.lengths().clone()
    lengths[-6:] = 0  # drop every history item
    values = with_history.values()[: int(lengths.sum())]
    without = KeyedJaggedTensor(keys=SEQ_KEYS, values=values, lengths=lengths)
    assert not torch.allclose(model(dense, with_history), model(dense, without))


def test_documented_param_counts_match_models_on_meta() -> None:
    """docs/models.md's table is what `terarec models --markdown` computes (built on meta)."""
    from pathlib import Path

    from terarec.trainer.model_factory import describe_models

    table = Path(__file__).resolve().parents[2] / "docs" / "models.md"
    documented = {}
    for line in table.read_text().splitlines():
        cells = [c.strip().replace(",", "") for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[2].isdigit():
            documented[(cells[0], cells[1])] = tuple(int(c) for c in cells[2:6])
    computed = {
        (r["model"], r["flavor"]): (
            r["params_dense"],
            r["params_sparse"],
            r["flops_per_example"],
            r["train_flops_per_example"],
        )
        for r in describe_models()
    }
    assert documented == computed
