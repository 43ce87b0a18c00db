"""The one set of command-line arguments of a training run: ``--config RECIPE_OR_YAML key=value ...``.

``terarec train``, ``terarec launch -- train`` and the torchrun entry ``python -m terarec.trainer.main``
take exactly these arguments, so a command line that works for one works for the others.
"""

from __future__ import annotations

import argparse

from terarec.configs.loader import load_config
from terarec.configs.schema import Config
from terarec.errors import UserArgumentParser


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="RECIPE_OR_YAML", help="a recipe name or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.max_steps=100")


def train_parser(prog: str, description: str) -> UserArgumentParser:
    """A stand-alone parser of the training arguments (usage mistakes are one-line user errors)."""
    parser = UserArgumentParser(prog=prog, description=description)
    add_train_arguments(parser)
    return parser


def train_config(args: argparse.Namespace) -> Config:
    """The validated config the parsed training arguments describe (raises ConfigError naming the key)."""
    return load_config(args.config, args.overrides)


def add_eval_arguments(parser: argparse.ArgumentParser, run_flag: str = "--run", calibrated_flag: bool = True) -> None:
    """``terarec eval``'s arguments (``run_flag``: the torchrun entry says ``--run-dir``, as torchrun
    would take ``--run`` for its own ``--run-path``); the run directory lands in ``args.run``.
    ``calibrated_flag``: offer ``--calibrated`` (eval, predict; not calibrate itself)."""
    parser.add_argument(run_flag, dest="run", required=True, metavar="RUN_DIR", help="a terarec run directory")
    parser.add_argument("--data", metavar="DIR", help="prepared dataset (default: the run's)")
    if calibrated_flag:
        parser.add_argument(
            "--calibrated", action="store_true", help="apply RUN/calibration.json (terarec calibrate) to the scores"
        )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.eval_batch_size=4096"
    )
