"""Config against data before any process group starts: the train batch must fit a rank's rows;
the eval batch is clamped to them (said in one INFO line)."""

from __future__ import annotations

import logging

import pytest

from terarec.configs import ConfigError, load_config
from terarec.data_pipeline.schema import DatasetSchema
from terarec.trainer.preflight import check_config_against_data, eval_batch_size

SCHEMA = DatasetSchema(dense=[], sparse=[], split_rows={"train": 8000, "eval": 2000})


def test_a_train_batch_larger_than_a_ranks_rows_is_refused_naming_the_limit() -> None:
    cfg = load_config(None, ["train.batch_size=10000000"])
    with pytest.raises(ConfigError) as err:
        check_config_against_data(cfg, SCHEMA, world_size=1)
    assert str(err.value) == (
        "train.batch_size=10000000 exceeds the 8,000 train rows per rank (8,000 rows in 'train' over 1 rank): "
        "use at most 8,000"
    )
    with pytest.raises(ConfigError, match=r"exceeds the 2,667 train rows per rank \(8,000 rows in 'train' over 3"):
        check_config_against_data(load_config(None, ["train.batch_size=2668"]), SCHEMA, world_size=3)
    check_config_against_data(load_config(None, ["train.batch_size=2667"]), SCHEMA, world_size=3)  # fits exactly


def test_the_world_size_comes_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, ["train.batch_size=4001"])
    check_config_against_data(cfg, SCHEMA)  # alone: 8,000 rows on the one rank
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="exceeds the 4,000 train rows per rank"):
        check_config_against_data(cfg, SCHEMA)


def test_an_empty_train_split_is_refused() -> None:
    empty = DatasetSchema(dense=[], sparse=[], split_rows={"train": 0, "eval": 10})
    with pytest.raises(ConfigError, match="data.train_split 'train' has no rows"):
        check_config_against_data(load_config(None, []), empty, world_size=1)


def test_a_large_eval_batch_is_clamped_and_said_in_one_info_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = logging.getLogger("terarec")  # the trainer stops it propagating once logging is set up: listen on it
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="terarec"):
            cfg = load_config(None, ["train.eval_batch_size=1024"])
            assert eval_batch_size(cfg, SCHEMA, 1) == 1024 and not caplog.records  # fits: nothing to say
            assert eval_batch_size(cfg, SCHEMA, 3) == 667
            assert eval_batch_size(cfg, SCHEMA, 2) == 1000
    finally:
        logger.removeHandler(caplog.handler)
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO"]
    assert caplog.records[-1].getMessage() == (
        "train.eval_batch_size=1024 is more than the 1,000 eval rows per rank (2,000 in 'eval' over 2 ranks): "
        "eval batches of 1,000"
    )
    no_eval = DatasetSchema(dense=[], sparse=[], split_rows={"train": 8000})
    assert eval_batch_size(cfg, no_eval, 2) == 1024  # nothing counted: nothing to clamp to


def test_l2_that_cannot_apply_on_the_device_is_refused_in_preflight() -> None:
    cfg = load_config(None, ["embeddings.l2=0.01"])
    with pytest.raises(ConfigError, match="embeddings.l2 on CPU needs sharding.sharding_type=data_parallel"):
        check_config_against_data(cfg, SCHEMA, world_size=1, device_type="cpu")
    check_config_against_data(cfg, SCHEMA, world_size=1, device_type="cuda")


def test_max_train_rows_without_a_train_row_count_is_refused() -> None:
    uncounted = DatasetSchema(dense=[], sparse=[], split_rows={"eval": 10})
    check_config_against_data(load_config(None, []), uncounted, world_size=1)  # nothing to check against
    with pytest.raises(ConfigError, match="data.max_train_rows needs the row count of 'train'"):
        check_config_against_data(load_config(None, ["data.max_train_rows=100"]), uncounted, world_size=1)
