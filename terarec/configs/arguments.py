"""The command-line arguments of the commands that have a torchrun entry, each defined once.

``terarec train``, ``terarec launch -- train`` and the torchrun entry ``python -m terarec.trainer.main``
take exactly the training arguments, so a command line that works for one works for the others;
likewise eval, predict and calibrate and their entries (``python -m terarec.trainer.evaluate`` ...).
Kept free of torch so that ``terarec --help`` stays instant.
"""

from __future__ import annotations

import argparse

from terarec.configs.loader import load_config
from terarec.configs.schema import Config
from terarec.errors import UserArgumentParser

CALIBRATION_METHODS = ("temperature", "platt", "isotonic")  # terarec.trainer.calibration implements them
# calibration metrics of a scored split (terarec.trainer.metrics computes them); here, free of torch, for launch
CALIBRATION_KEYS = ("brier", "ece", "mce", "ece_mass", "mce_mass")
PREDICT_SPLITS = ("eval", "valid", "train")
EXPORT_DTYPES = ("fp32", "fp16", "int8")  # embedding-table dtypes of an export (terarec.serving.artifact)


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


def add_predict_arguments(parser: argparse.ArgumentParser, run_flag: str = "--run") -> None:
    """``terarec predict``'s arguments: eval's plus ``--split`` and ``--output``."""
    add_eval_arguments(parser, run_flag=run_flag)
    parser.add_argument("--split", choices=PREDICT_SPLITS, help="split to score (default: the run's eval split)")
    parser.add_argument("--output", required=True, metavar="FILE.parquet", help="predictions file (written atomically)")


def add_calibrate_arguments(parser: argparse.ArgumentParser, run_flag: str = "--run") -> None:
    """``terarec calibrate``'s arguments: eval's (without ``--calibrated``) plus ``--method``."""
    add_eval_arguments(parser, run_flag=run_flag, calibrated_flag=False)
    parser.add_argument(
        "--method", choices=CALIBRATION_METHODS, default="temperature", help="calibrator (default temperature)"
    )
