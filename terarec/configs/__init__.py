"""Typed configuration: dataclasses, YAML recipes and dotted overrides."""

from terarec.configs.loader import ConfigError, load_config, save_config
from terarec.configs.schema import Config

__all__ = ["Config", "ConfigError", "load_config", "save_config"]
