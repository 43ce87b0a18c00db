"""Which rows validate when a run carves ``data.valid_fraction`` from a dataset with its own valid split."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import synthetic_dataset

from terarec.configs.loader import load_config
from terarec.data_pipeline.schema import DatasetSchema
from terarec.trainer.distributed import DistInfo
from terarec.trainer.setup import valid_loader

ALONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="none")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataset(tmp_path_factory, rows=2000, eval_fraction=0.2, valid_fraction=0.1, seed=1)


@pytest.mark.parametrize("fraction", [0.0, 0.25])
def test_a_carve_beside_a_valid_split_is_said_and_the_carve_validates(
    data: Path, fraction: float, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config("dcnv2_synth", [f"data.path={data}", f"data.valid_fraction={fraction}"])
    schema = DatasetSchema.load(str(data))
    sizes = {f.name: 100 for f in schema.sparse}
    with caplog.at_level(logging.INFO, logger="terarec"):
        loader = valid_loader(cfg, schema, sizes, ALONE)
    said = [r.getMessage() for r in caplog.records if "is not read" in r.getMessage()]
    assert loader is not None
    if fraction:
        assert said == [
            "validation: data.valid_fraction=0.25 carves the last train rows; the dataset's own 'valid' split "
            "(200 rows) is not read (data.valid_fraction=0 uses it)"
        ]
        assert loader.stream.spec.split == "train"
    else:
        assert said == [] and loader.stream.spec.split == "valid"
