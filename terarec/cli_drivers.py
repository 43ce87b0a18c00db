"""``terarec sweep``, ``terarec compare`` and ``terarec launch``: the driver commands' arguments and
handlers (``terarec.cli`` builds the parser; every handler runs inside its error boundary). Heavy
imports stay inside handlers."""

from __future__ import annotations

import argparse
import sys

from terarec.configs.arguments import CALIBRATION_METHODS
from terarec.configs.baselines import MAX_TRAIN_ROWS
from terarec.configs.recipe_sizes import SIZE_CLASSES as RECIPE_SIZES
from terarec.configs.search_spaces import describe_spaces
from terarec.errors import UserError
from terarec.launch.reuse import STALE_PATTERN  # light (no torch): help texts only

__all__ = ["add_driver_commands"]


def add_driver_commands(sub: argparse._SubParsersAction) -> None:
    """``sweep``, ``compare`` and ``launch``."""
    _add_sweep(sub)
    _add_compare_launch(sub)


def _add_on_change(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--on-change",
        choices=["stop", "rerun"],
        default="stop",
        help=f"a finished {what} made with another config or dataset: stop and list them (default), or move "
        f"it aside ({STALE_PATTERN}) and run it again",
    )


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser(
        "sweep", help="scaling-law sweep", description="Run a grid of trainings and fit a power law."
    )
    sweep.add_argument("--config", required=True, metavar="SWEEP_YAML")
    sweep.add_argument("--output", metavar="DIR")
    sweep.add_argument("--launcher", choices=["local", "torchx"], default="local")
    sweep.add_argument(
        "--scheduler",
        help="torchx scheduler for --launcher torchx (default local_cwd; e.g. slurm, settings from .torchxconfig)",
    )
    _add_on_change(sweep, "point")
    sweep.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="runs trained at once (default 1); local runs then share the cores: cores / (N x nproc) threads each",
    )
    sweep.add_argument(
        "--predict",
        metavar="FLAVOR_OR_FLOPS",
        help="train nothing: the finished sweep's law at a flavor of its model or a training compute in FLOPs",
    )
    sweep.add_argument(
        "--predict-samples", type=int, metavar="N", help="samples the --predict flavor trains on (default: the sweep's)"
    )
    sweep.add_argument("overrides", nargs="*", metavar="key=value")
    sweep.set_defaults(handler=_sweep)


def _add_compare_launch(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser(
        "compare",
        help="same-data model comparison",
        description=(
            "Train several models (and optional LightGBM / logistic-regression baselines) on "
            "the same data, split, budget and seeds; write compare.md, compare.json and compare.png."
        ),
    )
    compare.add_argument("--data", required=True, metavar="DIR")
    compare.add_argument("--models", required=True, help="comma list, e.g. dlrm,dcnv2,wukong")
    compare.add_argument(
        "--baseline", default="", help="comma list: lightgbm,logreg (pip install 'terarec[baselines]')"
    )
    compare.add_argument("--seeds", default="0", help="comma list; every model and baseline runs with each (default 0)")
    compare.add_argument("--nproc", type=int, default=1, help="processes per model run (torchrun when > 1)")
    compare.add_argument(
        "--baseline-max-train-rows",
        type=int,
        default=MAX_TRAIN_ROWS,
        metavar="N",
        help="baselines train in memory on at most the first N train rows",
    )
    compare.add_argument(
        "--tune",
        type=int,
        default=0,
        metavar="N",
        help="first run N optuna trials per model and LightGBM, selected on valid logloss (needs validation rows), "
        "then the best config over the seeds; trials under OUTPUT/tune/, resumable. Search spaces: "
        + describe_spaces().replace("%", "%%"),
    )
    compare.add_argument("--output", metavar="DIR", help="default runs/compare/<data dir name>")
    compare.add_argument(
        "--calibrate",
        choices=CALIBRATION_METHODS,
        metavar="METHOD",
        help="calibrate each model run on its validation rows (temperature|platt|isotonic); report before/after",
    )
    compare.add_argument(
        "--recipe-size",
        choices=RECIPE_SIZES,
        help="recipe size class for model names (default: by the dataset's train rows; see configs/recipe_sizes.py)",
    )
    _add_on_change(compare, "run")
    compare.add_argument(
        "overrides", nargs="*", metavar="key=value", help="applied to every model run, e.g. train.max_steps=500"
    )
    compare.set_defaults(handler=_compare)
    launch = sub.add_parser(
        "launch",
        help="torchrun wrapper",
        description="Run `terarec launch -- train --config ...` under torchrun (NGPU/NNODES env).",
    )
    launch.add_argument("rest", nargs=argparse.REMAINDER)
    launch.set_defaults(handler=_launch)


def _driver_logging(command: str) -> None:
    """INFO lines of a driver command (sweep, compare) on stderr, ``HH:MM:SS COMMAND message``;
    set on the ``terarec`` logger itself, so whatever an earlier set-up left there is replaced."""
    import logging

    logger = logging.getLogger("terarec")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {command} %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from terarec.launch.sweep import SweepSpec, run_sweep

    if args.scheduler and args.launcher != "torchx":
        raise UserError("--scheduler needs --launcher torchx")
    scheduler = args.scheduler or "local_cwd"
    if args.launcher == "torchx":
        from torchx.schedulers import get_scheduler_factories

        if scheduler not in get_scheduler_factories():
            raise UserError(
                f"--scheduler {scheduler}: not a torchx scheduler (one of "
                f"{', '.join(sorted(get_scheduler_factories()))})"
            )
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    spec = SweepSpec.load(args.config, args.overrides)  # every point's config is validated first
    output = Path(args.output or Path("runs") / "sweeps" / Path(args.config).stem)
    if args.predict is not None:
        from terarec.launch.sweep_predict import predict_from_sweep, report, sweep_model

        result = predict_from_sweep(output, args.predict, sweep_model(spec), args.predict_samples)
        print("\n".join(report(result)))
        return 0
    output.mkdir(parents=True, exist_ok=True)
    _driver_logging("sweep")
    rows = run_sweep(
        spec, output, args.launcher, scheduler, args.on_change, args.jobs
    )  # a failed point: finished ones are kept for a re-run
    print(
        f"sweep done: {len(rows)} points -> {output / 'results.csv'}, {output / 'fit.json'}, {output / 'scaling.png'}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from terarec.launch.compare import CompareSpec, run_compare

    spec = CompareSpec.build(
        args.data,
        args.models,
        args.baseline,
        args.seeds,
        args.nproc,
        args.overrides,
        args.baseline_max_train_rows,
        calibrate=args.calibrate,
        recipe_size=args.recipe_size,
        tune=args.tune,
    )
    output = Path(args.output or Path("runs") / "compare" / Path(args.data).resolve().name)
    output.mkdir(parents=True, exist_ok=True)
    _driver_logging("compare")
    run_compare(spec, output, args.on_change)  # a failed run: finished ones are kept, a re-run continues after them
    print((output / "compare.md").read_text())
    print(f"compare done: {output / 'compare.md'}, {output / 'compare.json'}, {output / 'compare.png'}")
    return 0


def _launch(args: argparse.Namespace) -> int:
    """``terarec launch -- train --config ...``: torchrun on this node; NPROC_PER_NODE (or NGPU),
    NNODES and MAX_RESTARTS come from the environment, as cluster launchers set them."""
    import os

    from terarec.launch.torchrun import run_child, torchrun_command

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if rest[:1] != ["train"]:
        raise UserError("usage: terarec launch -- train --config RECIPE [key=value ...]")
    from terarec.cli import build_parser  # the whole CLI's parser: `launch -- train` checks as `train` does
    from terarec.configs.arguments import train_config

    train_args = rest[1:]
    train_config(build_parser().parse_args(["train", *train_args]))  # fail here, before torchrun starts any process
    env = os.environ
    nnodes = _env_int("NNODES", "1")
    cmd = torchrun_command(
        "terarec.trainer.main",
        train_args,
        _env_int("NPROC_PER_NODE" if "NPROC_PER_NODE" in env else "NGPU", "1"),
        nnodes,
        _env_int("MAX_RESTARTS", "0", minimum=0),
        rdzv_id=env.get("RDZV_ID", "terarec"),
        rdzv_endpoint=env.get("RDZV_ENDPOINT", "localhost:29500") if nnodes > 1 else "localhost:0",
    )
    return run_child(cmd)


def _env_int(name: str, default: str, minimum: int = 1) -> int:
    import os

    value = os.environ.get(name, default)
    if not value.isdigit() or int(value) < minimum:
        raise UserError(f"environment variable {name}={value!r} must be an integer >= {minimum}")
    return int(value)
