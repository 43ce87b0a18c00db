"""Config system: recipes + dotted overrides, strict keys and types, round trip through YAML."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from terarec.cli import main
from terarec.configs import Config, ConfigError, load_config, save_config
from terarec.configs.loader import available_recipes


def test_defaults_and_overrides_are_typed() -> None:
    cfg = load_config(None, ["train.batch_size=512", "optim.lr=1", "model.args={num_cross_layers: 4}", "run.dir=2024"])
    assert cfg.train.batch_size == 512
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.args == {"num_cross_layers": 4}
    assert cfg.run.dir == "2024"
    assert cfg.data == Config().data


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("bad.key=1", "'bad.key'"),
        ("train.bad_key=1", "'train.bad_key'"),
        ("train.batch_size=abc", "'train.batch_size': expected int"),
        ("train.bf16=3", "'train.bf16': expected bool"),
        ("optim.decay=sideways", "'optim.decay'"),
        ("train=3", "'train' is a section"),
        ("novalue", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_recipe_lists_the_recipes() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_config("nope")


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  batch_sise: 3\n")
    with pytest.raises(ConfigError, match="'train.batch_sise'"):
        load_config(str(unknown))


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.max_steps=7", "sharding.per_table={cat_0: table_wise}", "model.num_layers=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(str(tmp_path / "config.yaml"))
    assert again == cfg
    save_config(again, tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == (tmp_path / "config.yaml").read_text()


@pytest.mark.parametrize("recipe", available_recipes())
def test_every_recipe_loads_and_accepts_contract_overrides(recipe: str, tmp_path: Path) -> None:
    overrides = [
        f"data.path={tmp_path}",
        f"run.dir={tmp_path}/run",
        "train.epochs=2",
        "train.max_steps=5",
        "train.batch_size=32",
        "train.seed=3",
        f"model.flavor={load_config(recipe).model.flavor}",
    ]
    cfg = load_config(recipe, overrides)
    assert cfg.train.max_steps == 5 and cfg.train.seed == 3 and cfg.data.path == str(tmp_path)


# every numeric key whose bad value used to break a run somewhere later (a traceback, or worse:
# keep_last=0 deleted every checkpoint right after saving it)
OUT_OF_RANGE = [
    (["train.batch_size=0"], "'train.batch_size' must be >= 1, got 0"),
    (["train.batch_size=-5"], "'train.batch_size' must be >= 1, got -5"),
    (["train.eval_batch_size=0"], "'train.eval_batch_size' must be >= 1, got 0"),
    (["train.log_every=0"], "'train.log_every' must be >= 1, got 0"),
    (["train.eval_every=-1"], "'train.eval_every' must be >= 0, got -1"),
    (["train.epochs=0"], "'train.epochs' must be >= 1, got 0"),
    (["train.max_steps=-1"], "'train.max_steps' must be >= 0, got -1"),
    (["train.max_minutes=-0.5"], "'train.max_minutes' must be >= 0, got -0.5"),
    (["train.seed=-1"], "'train.seed' must be >= 0, got -1"),
    (["train.collective_timeout_s=0"], "'train.collective_timeout_s' must be > 0, got 0.0"),
    (["optim.lr=-0.001"], "'optim.lr' must be >= 0, got -0.001"),
    (["optim.lr=.nan"], "'optim.lr' must be >= 0, got nan"),
    (["optim.sparse_lr=-1"], "'optim.sparse_lr' must be >= 0, got -1.0"),
    (["optim.weight_decay=-0.1"], "'optim.weight_decay' must be >= 0, got -0.1"),
    (["optim.eps=0"], "'optim.eps' must be > 0, got 0.0"),
    (["optim.warmup_steps=-3"], "'optim.warmup_steps' must be >= 0, got -3"),
    (["optim.grad_clip=-1"], "'optim.grad_clip' must be >= 0, got -1.0"),
    (["data.shuffle_buffer=-1"], "'data.shuffle_buffer' must be >= 0, got -1"),
    (["data.max_history=-1"], "'data.max_history' must be >= 0, got -1"),
    (["data.num_workers=-1"], "'data.num_workers' must be >= 0, got -1"),
    (["embeddings.max_rows=0"], "'embeddings.max_rows' must be >= 1, got 0"),
    (["embeddings.rows={cat_0: 0}"], "'embeddings.rows.cat_0' must be >= 1, got 0"),
    (["embeddings.rows={cat_1: 10, cat_0: -2}"], "'embeddings.rows.cat_0' must be >= 1, got -2"),
    (
        ["embeddings.dim=0"],
        "'embeddings.dim' must be a positive multiple of 4 (fbgemm's embedding kernels need it), got 0",
    ),
    (
        ["embeddings.dim=7"],
        "'embeddings.dim' must be a positive multiple of 4 (fbgemm's embedding kernels need it), got 7",
    ),
    (["embeddings.dim=-4"], "'embeddings.dim' must be a positive multiple of 4"),
    (
        ["embeddings.dim=null", "model.args={embedding_dim: 6}"],
        "'model.args.embedding_dim' must be a positive multiple",
    ),
    (["checkpoint.keep_last=0"], "'checkpoint.keep_last' must be >= 1, got 0"),
    (["checkpoint.keep_last=-1"], "'checkpoint.keep_last' must be >= 1, got -1"),
    (["checkpoint.every_steps=-10"], "'checkpoint.every_steps' must be >= 0, got -10"),
    (["checkpoint.every_minutes=-1"], "'checkpoint.every_minutes' must be >= 0, got -1.0"),
    (["data.valid_fraction=1"], "'data.valid_fraction' must be >= 0.0 and < 1.0, got 1.0"),
    (["data.valid_fraction=-0.1"], "'data.valid_fraction' must be >= 0.0 and < 1.0, got -0.1"),
    (["train.patience=0"], "'train.patience' must be >= 1, got 0"),
]


@pytest.mark.parametrize("overrides, message", OUT_OF_RANGE, ids=[" ".join(o) for o, _ in OUT_OF_RANGE])
def test_out_of_range_values_are_one_line_errors_before_anything_starts(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", "dcnv2_synth", f"data.path={tmp_path / 'no_data'}", f"run.dir={run}", *overrides]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"terarec: error: config key {message}")  # not the missing data: config comes first
    assert err.count("\n") == 1 and not run.exists()


@pytest.mark.parametrize(
    "override",
    [
        "embeddings.dim=4",
        "embeddings.dim=12",
        "embeddings.dim=128",
        "optim.lr=0",
        "train.max_steps=0",
        "checkpoint.keep_last=1",
        "train.seed=0",
        "embeddings.rows={cat_0: 1}",
        "data.valid_fraction=0",
        "data.valid_fraction=0.999",
        "train.patience=1",
    ],
)
def test_values_on_the_edge_of_their_range_are_accepted(override: str) -> None:
    key, value = override.split("=")
    section, name = key.split(".")
    cfg = load_config("dcnv2_synth", [override])
    assert getattr(getattr(cfg, section), name) == yaml.safe_load(value)


def test_every_default_and_recipe_satisfies_the_declared_ranges() -> None:
    """The rules guard what users write; they must hold for what the project ships, too."""
    from terarec.configs.loader import check_range

    for cfg in [Config(), *(load_config(r) for r in available_recipes())]:
        for name, section in _sections(cfg).items():
            for item in dataclasses.fields(section):
                check_range(f"{name}.{item.name}", getattr(section, item.name), item.metadata)


def test_every_numeric_key_declares_a_range() -> None:
    """A new numeric key without a rule is a decision, listed here, not an oversight."""
    unbounded = {"data.dense_fill", "model.num_layers"}  # any float; the models check their own layer counts
    missing = []
    for name, section in _sections(Config()).items():
        hints = typing.get_type_hints(type(section))
        for item in dataclasses.fields(section):
            numeric = {int, float} & {hints[item.name], *typing.get_args(hints[item.name])}
            if numeric and not item.metadata and f"{name}.{item.name}" not in unbounded:
                missing.append(f"{name}.{item.name}")
    assert missing == []


def _sections(cfg: Config) -> dict[str, Any]:
    return {name: value for name, value in vars(cfg).items() if dataclasses.is_dataclass(value)}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.early_stop=logloss", "train.eval_every=10"], "needs validation rows: set data.valid_fraction"),
        (["train.early_stop=auc", "data.valid_fraction=0.1"], "needs train.eval_every > 0"),
    ],
)
def test_early_stopping_without_validation_rows_or_evaluations_is_one_line(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic

    write_synthetic(SynthSpec(rows=2000, seed=1), tmp_path / "data", progress=False)
    run = tmp_path / "run"
    args = ["train", "--config", "dcnv2_synth", f"data.path={tmp_path / 'data'}", f"run.dir={run}", *overrides]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("terarec: error: train.early_stop=") and message in err
    assert err.count("\n") == 1 and not run.exists()
