"""Load a :class:`~terarec.configs.schema.Config` from a recipe and dotted ``key=value`` overrides.

Every key and value is checked against the dataclass types before anything starts: an unknown
key or a wrong type raises :class:`ConfigError` with one line naming the key, which the CLI turns
into exit code 2.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from terarec.configs.schema import RETIRED_KEYS, Config

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class ConfigError(ValueError):
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


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config sections")
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


def _first_leaf(key: str, value: Any) -> str:
    """``bad`` holding ``{"key": 1}`` -> ``bad.key``: name the key exactly as the user wrote it."""
    while isinstance(value, dict) and len(value) == 1:
        ((child, value),) = value.items()
        key = f"{key}.{child}"
    return key


def build_dataclass(cls: type, tree: dict[str, Any], prefix: str = "") -> Any:
    """Build ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if name not in names:
            where = f"section '{prefix[:-1]}'" if prefix else "the config"
            raise ConfigError(
                f"unknown config key '{_first_leaf(key, value)}' (valid keys in {where}: {', '.join(sorted(names))})"
            )
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' is a section: set '{key}.<field>=...'")
            kwargs[name] = build_dataclass(hint, value, f"{key}.")
        else:
            kwargs[name] = _check_value(key, value, hint)
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
    return build_dataclass(Config, tree)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config; :func:`load_config` reads it back to an equal object."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
