"""Loader speed work keeps the batches: the shuffled order is pinned, workers/ranks are reproducible,
ids are int32 (and feed torchrec's kernels), batches are pinned where CUDA is present, thread workers
give the batches (and order) that DataLoader worker processes gave, and resume exactly."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from test_loader import _row_ids, _spec, assert_resume_continues_exactly, dataset  # noqa: F401  (the fixture)
from torchrec.datasets.utils import Batch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from terarec.data_pipeline import loader as loader_module
from terarec.data_pipeline.loader import PAD_LABEL, BatchLoader
from terarec.data_pipeline.schema import DatasetSchema

# first 4 row ids of batches 0, 3 and -2 per (world, rank), and the sum of all KJT values, as the
# loader produced them before the batch-grid layout (seed 1, window 150, batch 32)
GOLDEN = {
    (1, 0): ([[629, 809, 685, 931], [666, 626, 683, 956], [760, 369, 347, 761]], 751000),
    (2, 0): ([[984, 622, 951, 224], [949, 966, 998, 329], [272, 574, 342, 160]], 373750),
    (2, 1): ([[132, 123, 263, 36], [487, 10, 62, 129], [92, 535, 89, 83]], 377250),
}


# the same with data.num_workers=2, as torch's DataLoader with 2 worker processes produced them
# (before workers were threads): the rank's batch k is worker stream k % 2's
GOLDEN_WORKERS = {
    (1, 0): ([[984, 622, 951, 224], [479, 45, 117, 618], [506, 494, 512, 514]], 751000),
    (2, 0): ([[129, 131, 234, 798], [13, 770, 820, 804], [0, 0, 0, 0]], 353649),
    (2, 1): ([[364, 402, 90, 85], [925, 923, 328, 327], [0, 0, 0, 0]], 397351),
}


@pytest.mark.parametrize("world_rank", list(GOLDEN_WORKERS))
def test_thread_workers_give_the_batches_of_worker_processes(dataset: Path, world_rank: tuple[int, int]) -> None:  # noqa: F811
    world, rank = world_rank
    loader = BatchLoader(_spec(dataset), DatasetSchema.load(dataset), rank, world, num_workers=2)
    threads = threading.active_count()
    batches = list(loader)
    heads = [b.dense_features[:4, 0].long().tolist() for b in (batches[0], batches[3], batches[-2])]
    assert (heads, int(sum(b.sparse_features.values().long().sum() for b in batches))) == GOLDEN_WORKERS[world_rank]
    assert len(batches) == len(loader) and threading.active_count() == threads  # no thread outlives the epoch


@pytest.mark.parametrize("stop_at", [1, 4, 7])
def test_resume_with_workers_continues_exactly(dataset: Path, stop_at: int) -> None:  # noqa: F811
    """Stopped after an odd or even batch, a 2-worker loader resumes with the batch that follows,
    from the right worker stream (DataLoader processes restarted at worker 0 and swapped a pair)."""
    assert_resume_continues_exactly(dataset, stop_at, num_workers=2)


def test_one_worker_is_the_in_process_loader(dataset: Path) -> None:  # noqa: F811
    schema = DatasetSchema.load(dataset)
    in_process, one_worker = BatchLoader(_spec(dataset), schema, 0, 2), BatchLoader(_spec(dataset), schema, 0, 2, 1)
    for a, b in zip(in_process, one_worker):
        assert torch.equal(a.dense_features, b.dense_features) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.sparse_features.values(), b.sparse_features.values())


@pytest.mark.parametrize("world_rank", list(GOLDEN))
def test_shuffled_order_is_the_one_of_before(dataset: Path, world_rank: tuple[int, int]) -> None:  # noqa: F811
    world, rank = world_rank
    batches = list(BatchLoader(_spec(dataset), DatasetSchema.load(dataset), rank, world))
    heads = [b.dense_features[:4, 0].long().tolist() for b in (batches[0], batches[3], batches[-2])]
    assert (heads, int(sum(b.sparse_features.values().long().sum() for b in batches))) == GOLDEN[world_rank]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 0), (1, 2), (2, 2)])
def test_same_seed_same_batches(dataset: Path, world: int, workers: int) -> None:  # noqa: F811
    schema = DatasetSchema.load(dataset)
    for rank in range(world):
        runs = [list(BatchLoader(_spec(dataset), schema, rank, world, workers)) for _ in range(2)]
        assert len(runs[0]) == len(runs[1])
        for a, b in zip(*runs):
            assert torch.equal(a.dense_features, b.dense_features) and torch.equal(a.labels, b.labels)
            assert torch.equal(a.sparse_features.values(), b.sparse_features.values())
            assert torch.equal(a.sparse_features.lengths(), b.sparse_features.lengths())
    other_seed = _row_ids(list(BatchLoader(_spec(dataset, seed=2), schema)))
    assert other_seed != _row_ids(list(BatchLoader(_spec(dataset), schema)))


def test_ids_are_int32_when_tables_fit_else_int64(dataset: Path) -> None:  # noqa: F811
    schema = DatasetSchema.load(dataset)
    batch = next(iter(BatchLoader(_spec(dataset), schema)))
    assert batch.sparse_features.values().dtype == batch.sparse_features.lengths().dtype == torch.int32
    huge = {"cat_0": 2000, "cat_1": 1 << 33}
    wide = next(iter(BatchLoader(_spec(dataset, table_sizes=huge), schema)))
    assert wide.sparse_features.values().dtype == wide.sparse_features.lengths().dtype == torch.int64
    assert torch.equal(wide.sparse_features["cat_1"].values(), wide.dense_features[:, 0].long() * 7)


def test_int32_batches_train_torchrec_embedding_modules(dataset: Path) -> None:  # noqa: F811
    """The loader's int32 KJTs go through EmbeddingBagCollection (pooled) and EmbeddingCollection
    (the history key) forward and backward, with the same result as int64 ids."""
    schema = DatasetSchema.load(dataset)
    batch = next(iter(BatchLoader(_spec(dataset, shuffle_buffer=0), schema)))
    kjt = batch.sparse_features
    torch.manual_seed(0)
    bags = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name="t0", embedding_dim=4, num_embeddings=2000, feature_names=["cat_0", "hist"])]
        + [EmbeddingBagConfig(name="t1", embedding_dim=4, num_embeddings=500, feature_names=["cat_1"])]
    )
    seq = EmbeddingCollection(
        tables=[EmbeddingConfig(name="t0", embedding_dim=4, num_embeddings=2000, feature_names=["hist"])]
    )
    pooled = bags(kjt).values()
    pooled.sum().backward()
    jagged = seq(kjt)["hist"].values()
    jagged.sum().backward()
    wide = type(kjt)(keys=kjt.keys(), values=kjt.values().long(), lengths=kjt.lengths().long(), stride=kjt.stride())
    assert torch.equal(pooled, bags(wide).values()) and torch.equal(jagged, seq(wide)["hist"].values())
    assert pooled.shape == (32, 12) and bags.embedding_bags["t0"].weight.grad is not None


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_pinned_one_ahead_off_the_training_thread_when_cuda_is_present(
    dataset: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    """With CUDA (mocked) every batch goes through ``pin_batch`` in the loader's pinning thread, off
    the training thread, at most one batch ahead of the one handed out: 2 pinned batches per rank
    (the prefetch threads used to pin whole windows, up to 3W windows' worth). Without CUDA nothing
    is pinned."""
    pinned: list[tuple[int, str]] = []

    def fake_pin(batch: Batch) -> Batch:
        pinned.append((id(batch.labels), threading.current_thread().name))
        return batch

    monkeypatch.setattr(loader_module, "pin_batch", fake_pin)
    schema = DatasetSchema.load(dataset)
    assert not BatchLoader(_spec(dataset), schema).pin_memory  # this host has no CUDA
    list(BatchLoader(_spec(dataset), schema))
    assert not pinned
    monkeypatch.setattr(loader_module.torch.cuda, "is_available", lambda: True)
    loader = BatchLoader(_spec(dataset), schema, num_workers=workers)
    batches, ahead = [], []
    for batch in loader:
        batches.append(batch)
        ahead.append(len(pinned) - len(batches))  # pinned but not yet handed out
    assert loader.pin_memory and [p for p, _ in pinned] == [id(b.labels) for b in batches]
    assert {name.split("_")[0] for _, name in pinned} == {"terarec-pin"} and max(ahead) <= 1
    assert sum(int((b.labels != PAD_LABEL).sum()) for b in batches) == 1000


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU host)")
def test_batches_are_pinned_and_copy_asynchronously(dataset: Path) -> None:  # noqa: F811
    schema = DatasetSchema.load(dataset)
    for workers in (0, 2):
        for batch in BatchLoader(_spec(dataset), schema, num_workers=workers):
            kjt = batch.sparse_features
            assert batch.dense_features.is_pinned() and batch.labels.is_pinned() and kjt.values().is_pinned()
            on_gpu = batch.to(torch.device("cuda"), non_blocking=True)
            torch.cuda.synchronize()
            assert torch.equal(on_gpu.sparse_features.values().cpu(), kjt.values())
            assert torch.equal(on_gpu.dense_features.cpu(), batch.dense_features)


@pytest.mark.parametrize(("saved", "now"), [((1, 1), (1, 2)), ((1, 1), (2, 1)), ((2, 2), (1, 1))])
def test_mid_epoch_resume_under_another_stream_layout_is_refused(
    dataset: Path,  # noqa: F811
    saved: tuple[int, int],
    now: tuple[int, int],
) -> None:
    """(world size, workers) deal the rows to streams: a mid-epoch position under another layout
    would skip some rows and repeat others, so it is
    refused with one line naming both layouts; at an epoch boundary either may change."""
    schema = DatasetSchema.load(dataset)
    first = BatchLoader(_spec(dataset), schema, 0, saved[0], num_workers=saved[1])
    assert [b for _, b in zip(range(10), first)] and first.state_dict()["batches"] == 10
    resumed = BatchLoader(_spec(dataset), schema, 0, now[0], num_workers=now[1])
    with pytest.raises(loader_module.LoaderLayoutError) as err:
        resumed.load_state_dict(first.state_dict())
    message = str(err.value)
    assert "\n" not in message and "epoch 0, batch 10" in message
    assert f"world size {saved[0]} x data.num_workers {saved[1]}" in message
    assert f"world size {now[0]} x data.num_workers {now[1]}" in message
    boundary = {**first.state_dict(), "epoch": 1, "batches": 0}
    resumed.load_state_dict(boundary)  # a new epoch: any layout deals all its rows
    ranks = [BatchLoader(_spec(dataset), schema, r, now[0], num_workers=now[1]) for r in range(now[0])]
    for loader in ranks:
        loader.load_state_dict(boundary)
    rows = [row for loader in ranks for row in _row_ids(list(loader))]
    assert sorted(rows) == list(range(1000)) and ranks[0].state_dict()["epoch"] == 2


def test_mid_epoch_resume_keeps_the_layout_or_trusts_an_older_state(dataset: Path) -> None:  # noqa: F811
    """num_workers 0 and 1 are one stream (the same layout); a state from before the layout was
    recorded is taken as it is (the trainer fills in the world size its checkpoint recorded)."""
    schema = DatasetSchema.load(dataset)
    reference = _row_ids(list(BatchLoader(_spec(dataset), schema, num_workers=0)))
    first = BatchLoader(_spec(dataset), schema, num_workers=0)
    seen = _row_ids([b for _, b in zip(range(10), first)])
    assert first.state_dict() == {"epoch": 0, "batches": 10, "world_size": 1, "workers": 1}
    resumed = BatchLoader(_spec(dataset), schema, num_workers=1)
    resumed.load_state_dict(first.state_dict())
    assert seen + _row_ids(list(resumed)) == reference
    older = BatchLoader(_spec(dataset), schema, num_workers=1)
    older.load_state_dict({"epoch": 0, "batches": 10})
    assert seen + _row_ids(list(older)) == reference
