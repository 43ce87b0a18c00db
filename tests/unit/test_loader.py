"""Streaming loader: batches match the parquet rows, equal counts per rank, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from terarec.data_pipeline.loader import PAD_LABEL, BatchLoader, LoaderSpec
from terarec.data_pipeline.schema import DatasetSchema, SequenceFeature, SparseFeature


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 rows in uneven files/row groups; label = row id % 2, int_0 = row id, cat_0 = row id."""
    root = tmp_path_factory.mktemp("ds")
    (root / "train").mkdir()
    start = 0
    for part, (rows, group) in enumerate([(430, 100), (370, 64), (200, 200)]):
        ids = np.arange(start, start + rows)
        table = pa.table(
            {
                "label": (ids % 2).astype(np.int8),
                "int_0": ids.astype(np.int64),
                "cat_0": ids.astype(np.uint32),
                "cat_1": (ids * 7).astype(np.uint32),
                "hist": pa.array([list(range(i % 5)) for i in ids], pa.list_(pa.uint32())),
            }
        )
        pq.write_table(table, root / "train" / f"part-{part:05d}.parquet", row_group_size=group)
        start += rows
    DatasetSchema(
        dense=["int_0"],
        sparse=[SparseFeature("cat_0", 2000), SparseFeature("cat_1", 10_000)],
        sequence=[SequenceFeature("hist", "cat_0", 4)],
        split_rows={"train": 1000},
    ).save(root)
    return root


def _spec(root: Path, **kw) -> LoaderSpec:
    args = dict(
        directory=str(root),
        split="train",
        batch_size=32,
        table_sizes={"cat_0": 2000, "cat_1": 500},
        shuffle_buffer=150,
        seed=1,
        dense_transform="none",
        max_history=3,
    )
    return LoaderSpec(**{**args, **kw})


def _row_ids(batches: list) -> list[int]:
    out = []
    for b in batches:
        keep = b.labels != PAD_LABEL
        out += b.dense_features[keep, 0].long().tolist()
    return out


def test_batches_hold_the_rows_with_hashing_and_history(dataset: Path) -> None:
    schema = DatasetSchema.load(dataset)
    batches = list(BatchLoader(_spec(dataset, shuffle_buffer=0), schema))
    assert sorted(_row_ids(batches)) == list(range(1000))
    first = batches[0]
    kjt = first.sparse_features.to_dict()
    assert first.sparse_features.keys() == ["cat_0", "cat_1", "hist"] and first.sparse_features.stride() == 32
    assert torch.equal(kjt["cat_0"].values(), first.dense_features[:, 0].long())
    assert torch.equal(kjt["cat_1"].values(), (first.dense_features[:, 0].long() * 7) % 500)
    assert kjt["hist"].lengths().tolist()[:6] == [0, 1, 2, 3, 3, 0]  # capped at max_history=3
    assert kjt["hist"].values().tolist()[:9] == [0, 0, 1, 0, 1, 2, 1, 2, 3]  # keeps the most recent
    assert torch.equal(first.labels, (first.dense_features[:, 0] % 2).float())
    last = batches[-1]
    assert last.labels.shape == (32,) and (last.labels == PAD_LABEL).sum() == 32 * len(batches) - 1000


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_equal_counts_disjoint_and_complete(dataset: Path, workers: int) -> None:
    schema = DatasetSchema.load(dataset)
    loaders = [BatchLoader(_spec(dataset), schema, rank=r, world_size=2, num_workers=workers) for r in range(2)]
    per_rank = [list(loader) for loader in loaders]
    assert len(per_rank[0]) == len(per_rank[1]) == len(loaders[0]) == len(loaders[1])
    ids = [_row_ids(b) for b in per_rank]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(1000))


@pytest.mark.parametrize("stop_at", [1, 5, 9, 15])
def test_resume_continues_exactly(dataset: Path, stop_at: int) -> None:
    """Stop each rank after `stop_at` batches, resume from state_dict: no duplicate, no gap."""
    assert_resume_continues_exactly(dataset, stop_at, num_workers=0)


def assert_resume_continues_exactly(dataset: Path, stop_at: int, num_workers: int) -> None:
    """On each of 2 ranks: batches before a stop after ``stop_at`` plus those after a resume from its
    state_dict equal an uninterrupted epoch's, batch for batch."""
    schema = DatasetSchema.load(dataset)
    for rank in range(2):
        reference = list(BatchLoader(_spec(dataset), schema, rank, 2, num_workers=num_workers))
        first = BatchLoader(_spec(dataset), schema, rank, 2, num_workers=num_workers)
        seen = [b for _, b in zip(range(stop_at), first)]
        resumed = BatchLoader(_spec(dataset), schema, rank, 2, num_workers=num_workers)
        resumed.load_state_dict(first.state_dict())
        rest = list(resumed)
        assert len(seen) + len(rest) == len(reference)
        for got, want in zip(seen + rest, reference):
            assert torch.equal(got.labels, want.labels) and torch.equal(got.dense_features, want.dense_features)
            assert torch.equal(got.sparse_features.values(), want.sparse_features.values())


def test_epochs_reshuffle_deterministically(dataset: Path) -> None:
    schema = DatasetSchema.load(dataset)
    loader = BatchLoader(_spec(dataset), schema)
    epoch0, epoch1 = _row_ids(list(loader)), _row_ids(list(loader))
    assert sorted(epoch0) == sorted(epoch1) == list(range(1000)) and epoch0 != epoch1
    assert _row_ids(list(BatchLoader(_spec(dataset), schema))) == epoch0
    assert loader.state_dict() == {"epoch": 2, "batches": 0, "world_size": 1, "workers": 1}


def test_ids_are_reduced_modulo_the_table_size_whatever_the_schema_says(dataset: Path) -> None:
    """cat_1 = 7 x row id reaches 6993 with 500 rows; schema cardinalities (Criteo's are distinct
    counts of raw 32-bit hashes) never license skipping the modulo."""
    schema = DatasetSchema.load(dataset)
    schema.sparse[1].cardinality = 10  # as if a distinct count: smaller than the raw ids
    for batch in BatchLoader(_spec(dataset, shuffle_buffer=0, table_sizes={"cat_0": 2000, "cat_1": 500}), schema):
        keep = batch.labels != PAD_LABEL
        row_ids = batch.dense_features[keep, 0].long()
        assert torch.equal(batch.sparse_features["cat_1"].values(), (row_ids * 7) % 500)
        assert torch.equal(batch.sparse_features["cat_0"].values(), row_ids)


@pytest.mark.parametrize("fraction", [0.2, 0.37])
def test_carved_validation_is_the_last_rows_disjoint_and_the_same_at_any_world_size(
    dataset: Path, fraction: float
) -> None:
    """data.valid_fraction: train reads rows [0, cut), valid [cut, 1000) in file (time) order, with
    cut = round(1000 * (1 - f)), whatever the world size and workers; train and valid partition the split."""
    schema = DatasetSchema.load(dataset)
    cut = round(1000 * (1 - fraction))

    def rows_read(rows: tuple[float, float], world: int, workers: int, shuffle: int) -> list[int]:
        specs = _spec(dataset, rows=rows, shuffle_buffer=shuffle)
        loaders = [BatchLoader(specs, schema, rank=r, world_size=world, num_workers=workers) for r in range(world)]
        per_rank = [_row_ids(list(loader)) for loader in loaders]
        assert len({len(loader) for loader in loaders}) == 1  # equal batch counts: no rank waits in a collective
        return sorted(i for ids in per_rank for i in ids)

    for world, workers in [(1, 0), (2, 0), (2, 2), (3, 0)]:
        assert rows_read((1 - fraction, 1.0), world, workers, 0) == list(range(cut, 1000))
        assert rows_read((0.0, 1 - fraction), world, workers, 150) == list(range(cut))
