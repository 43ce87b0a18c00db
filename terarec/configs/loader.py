"""Load a :class:`~terarec.configs.schema.Config` from a recipe and dotted ``key=value`` overrides.

Every key and value is checked against the dataclass types and the ranges the fields declare in
their ``metadata`` (see :mod:`terarec.configs.schema`) before anything starts: an unknown key, a
wrong type or a value out of range raises :class:`ConfigError` with one line naming the key, the
value and the rule, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from terarec.configs.schema import EMBEDDING_DIM_RULE, RETIRED_KEYS, Config
from terarec.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class ConfigError(UserError, ValueError):
    """A user mistake in a recipe or override: the message names the key or file."""


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe name (``dcnv2_synth``) or a path to a YAML file -> an existing path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file '{name_or_path}' does not exist")
        return path
    recipe = RECIPES_DIR / f"{name_or_path}.yaml"
    if not recipe.is_file():
        raise ConfigError(f"unknown recipe '{name_or_path}' (recipes: {', '.join(available_recipes()) or 'none'})")
    return recipe


def read_yaml(path: Path, holds: str = "config sections") -> dict[str, Any]:
    """A YAML file's top-level mapping (of ``holds``); malformed YAML or another top level is a ConfigError."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of {holds}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``train.batch_size=512`` -> ``("train.batch_size", 512)``; values are parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` converted to ``hint`` (int -> float only) or raise naming ``key``."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_value(key, value, options[0])
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        _, item = typing.get_args(hint)
        return {str(k): _check_value(f"{key}.{k}", v, item) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # `run.dir=2024` is a directory name, not a number
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}': expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _rule_text(rule: Mapping[str, Any]) -> str | None:
    """The rule a field's ``metadata`` declares, as words (``">= 1"``), or None if it declares none."""
    if "positive_multiple_of" in rule:
        text = f"a positive multiple of {rule['positive_multiple_of']}"
    elif "above" in rule:
        text = f"> {rule['above']}"
    elif "min" in rule:
        text = f">= {rule['min']}" + (f" and < {rule['below']}" if "below" in rule else "")
    else:
        return None
    return f"{text} ({rule['why']})" if "why" in rule else text


def _breaks_rule(value: float, rule: Mapping[str, Any]) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return True  # NaN compares False to everything: it would pass any range test below
    if "positive_multiple_of" in rule:
        return value <= 0 or value % int(rule["positive_multiple_of"]) != 0
    if "above" in rule:
        return value <= float(rule["above"])
    if "below" in rule and value >= float(rule["below"]):
        return True
    return value < float(rule["min"])


def check_range(key: str, value: Any, rule: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` if ``value`` (already type-checked) breaks the field's declared range.

    A mapping's rule holds for each of its values (``embeddings.rows.cat_0``); None is "not set".
    """
    text = _rule_text(rule)
    if text is None or value is None:
        return
    if isinstance(value, dict):
        for name, item in value.items():
            check_range(f"{key}.{name}", item, rule)
        return
    if _breaks_rule(value, rule):
        raise ConfigError(f"config key '{key}' must be {text}, got {value!r}")


def override_key(item: str) -> str:
    """The dotted key of a ``key=value`` override (``optim.lr =0.05`` -> ``optim.lr``), as the loader reads it."""
    return item.split("=", 1)[0].strip()


def carved_train_rows(cfg: Config, split_rows: int) -> int:
    """The train split's rows left for training by the ``data.valid_fraction`` carve (the loader's cut)."""
    return round(split_rows * (1.0 - cfg.data.valid_fraction))


def train_rows(cfg: Config, split_rows: Mapping[str, int]) -> int:
    """Rows one epoch trains on (all ranks together) given a dataset's rows per split: ``data.max_train_rows``,
    else all the carve leaves. The trainer, compare and tune all count with this one rule."""
    return cfg.data.max_train_rows or carved_train_rows(cfg, split_rows.get(cfg.data.train_split, 0))


def check_max_train_rows(cfg: Config, split_rows: Mapping[str, int]) -> None:
    """Raise :class:`ConfigError` if ``data.max_train_rows`` asks for more rows than the train split
    leaves after the ``data.valid_fraction`` carve (the trainer and sweeps check with this one rule)."""
    rows = split_rows.get(cfg.data.train_split)
    if cfg.data.max_train_rows <= 0 or rows is None:  # schema.json counts every split it writes
        return
    available = carved_train_rows(cfg, rows)
    if cfg.data.max_train_rows > available:
        carve = f" less data.valid_fraction={cfg.data.valid_fraction:g}" if cfg.data.valid_fraction > 0 else ""
        raise ConfigError(
            f"data.max_train_rows={cfg.data.max_train_rows:,} exceeds the {available:,} train rows of "
            f"{cfg.data.path} ('{cfg.data.train_split}'{carve}): use at most {available:,}"
        )


def has_validation_rows(cfg: Config, split_rows: Mapping[str, int]) -> bool:
    """Whether a run of ``cfg`` has validation rows (carved from train, or the dataset's valid split)."""
    return cfg.data.valid_fraction > 0 or split_rows.get(cfg.data.valid_split, 0) > 0


def rows_per_rank(rows: int, world_size: int) -> int:
    """A rank's share of a split's ``rows``, rounded up (the loader pads the short ranks)."""
    return math.ceil(rows / world_size)


def check_batch_fits(batch_size: int, split: str, rows: int, world_size: int) -> None:
    """Raise if ``train.batch_size`` is more than a rank's share of the ``split``'s ``rows``.

    Every batch is padded to the full size, so a larger one only allocates padding
    (``train.batch_size=10000000`` on 8,000 rows grows until memory runs out).
    """
    if rows <= 0:
        raise ConfigError(f"data.train_split '{split}' has no rows: nothing to train on")
    share = rows_per_rank(rows, world_size)
    if batch_size > share:
        ranks = f"{world_size} rank{'s' if world_size > 1 else ''}"
        raise ConfigError(
            f"train.batch_size={batch_size} exceeds the {share:,} train rows per rank "
            f"({rows:,} rows in '{split}' over {ranks}): use at most {share:,}"
        )


def _first_leaf(key: str, value: Any) -> str:
    """``bad`` holding ``{"key": 1}`` -> ``bad.key``: name the key exactly as the user wrote it."""
    while isinstance(value, dict) and len(value) == 1:
        ((child, value),) = value.items()
        key = f"{key}.{child}"
    return key


def build_dataclass(cls: type, tree: dict[str, Any], prefix: str = "") -> Any:
    """Build ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    rules = {f.name: f.metadata for f in dataclasses.fields(cls)}
    names = set(rules)
    kwargs: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if name not in names:
            where = f"section '{prefix[:-1]}'" if prefix else "the config"
            raise ConfigError(
                f"unknown config key '{_first_leaf(key, value)}' (valid keys in {where}: {', '.join(sorted(names))})"
            )
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' is a section: set '{key}.<field>=...'")
            kwargs[name] = build_dataclass(hint, value, f"{key}.")
        else:
            kwargs[name] = _check_value(key, value, hint)
            check_range(key, kwargs[name], rules[name])
    return cls(**kwargs)


def load_config(recipe: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve ``recipe`` (name or YAML path; ``None`` = defaults) plus ``key=value`` overrides."""
    tree: dict[str, Any] = read_yaml(resolve_recipe(recipe)) if recipe else {}
    for section, key in RETIRED_KEYS:
        if isinstance(tree.get(section), dict):
            tree[section].pop(key, None)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    cfg: Config = build_dataclass(Config, tree)
    model_dim = cfg.model.args.get("embedding_dim")
    if cfg.embeddings.dim is None and isinstance(model_dim, int):  # the other way to set the tables' dim
        check_range("model.args.embedding_dim", model_dim, EMBEDDING_DIM_RULE)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_text(cfg: Config) -> str:
    """The fully resolved config as YAML; :func:`load_config` reads it back to an equal object."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write :func:`config_text` to ``path``."""
    Path(path).write_text(config_text(cfg))
