"""Config system: recipes + dotted overrides, strict keys and types, round trip through YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

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
