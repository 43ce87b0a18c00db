"""``terarec`` console script: prepare | synth | train | eval | calibrate | predict | export | score | sweep |
models | compare | launch.

Heavy imports (torch, torchrec, pyarrow) happen inside the command handlers so ``--help`` is
instant. Every command runs inside the one error boundary (``terarec.errors.run_entry``): a user
mistake (bad flag, bad config key, bad input file) prints one ``terarec: error:`` line and exits 2;
it never shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from terarec.cli_data import add_data_commands
from terarec.cli_drivers import add_driver_commands
from terarec.configs.arguments import (
    EXPORT_DTYPES,
    add_calibrate_arguments,
    add_eval_arguments,
    add_predict_arguments,
    add_train_arguments,
)
from terarec.errors import EXIT_USAGE, UserArgumentParser, UserError, run_entry

__all__ = ["EXIT_USAGE", "UserError", "build_parser", "main"]


def _add_train_eval(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a model (alone or under torchrun)",
        description=(
            "Train from a recipe name or YAML file plus key=value overrides. Under torchrun "
            "use `python -m terarec.trainer.main` with the same arguments."
        ),
    )
    add_train_arguments(train)
    train.set_defaults(handler=_train)
    _add_worker_command(
        sub.add_parser(
            "eval",
            help="evaluate a run's checkpoint",
            description="Evaluate the newest checkpoint of a run; writes RUN/eval.json.",
        ),
        add_eval_arguments,
        _eval,
    )
    _add_worker_command(
        sub.add_parser(
            "calibrate",
            help="fit a post-hoc calibrator on a run's validation rows",
            description="Fit temperature/Platt/isotonic calibration on the valid rows only; writes calibration.json.",
        ),
        add_calibrate_arguments,
        _calibrate,
    )


def _add_worker_command(
    parser: argparse.ArgumentParser,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """A command that runs on a run's checkpoint, alone or under torchrun (``--nproc``)."""
    add_arguments(parser)
    parser.add_argument("--nproc", type=int, default=1, help="processes (torchrun when > 1)")
    parser.set_defaults(handler=handler)


def _add_predict_export_score(sub: argparse._SubParsersAction) -> None:
    _add_worker_command(
        sub.add_parser(
            "predict",
            help="score a split with a run's checkpoint",
            description="Score every row of a split with the run's newest checkpoint; one parquet row per input row.",
        ),
        add_predict_arguments,
        _predict,
    )
    export = sub.add_parser(
        "export",
        help="export a run's checkpoint for serving",
        description="Write an unsharded single-process model (+ feature transform, manifest) for terarec.serving.",
    )
    export.add_argument("--run", required=True, metavar="RUN_DIR")
    export.add_argument("--output", required=True, metavar="DIR")
    export.add_argument("--dtype", choices=EXPORT_DTYPES, default="fp32", help="embedding table dtype")
    export.add_argument(
        "--calibrated", action="store_true", help="carry RUN/calibration.json: the export scores calibrated"
    )
    export.set_defaults(handler=_export)
    score = sub.add_parser(
        "score",
        help="score a dataset with an exported model",
        description="Score every row of a prepared split with an export (no process group, no sharding).",
    )
    score.add_argument("--model", required=True, metavar="DIR", help="a terarec export directory")
    score.add_argument("--data", required=True, metavar="DIR", help="prepared dataset")
    score.add_argument("--split", default="eval", help="split to score (default eval)")
    score.add_argument("--output", required=True, metavar="FILE.parquet", help="written atomically")
    score.set_defaults(handler=_score)


def _add_models(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser(
        "models",
        help="list registered models and flavors",
        description="List every model flavor with dense/sparse params and forward FLOPs per example.",
    )
    models.add_argument("--json", action="store_true")
    models.add_argument("--markdown", action="store_true", help="a markdown table (docs/models.md is this output)")
    models.set_defaults(handler=_models)


def build_parser() -> argparse.ArgumentParser:
    parser = UserArgumentParser(prog="terarec", description="Distributed training of CTR/ranking models on TorchRec.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(sub)
    _add_train_eval(sub)
    _add_predict_export_score(sub)
    add_driver_commands(sub)
    _add_models(sub)
    return parser


def _train(args: argparse.Namespace) -> int:
    from terarec.configs.arguments import train_config

    cfg = train_config(args)  # validates before any process group starts
    from terarec.trainer.main import run_training

    run_training(cfg)
    return 0


def _eval(args: argparse.Namespace) -> int:
    def alone() -> None:
        from terarec.trainer.evaluate import run_eval

        run_eval(args.run, args.data, args.overrides, args.calibrated)

    flags = ["--calibrated"] if args.calibrated else []
    return _alone_or_torchrun(args, "terarec.trainer.evaluate", flags, alone)


def _calibrate(args: argparse.Namespace) -> int:
    def alone() -> None:
        from terarec.trainer.calibrate import run_calibrate

        run_calibrate(args.run, args.method, args.data, args.overrides)

    return _alone_or_torchrun(args, "terarec.trainer.calibrate", ["--method", args.method], alone)


def _predict(args: argparse.Namespace) -> int:
    def alone() -> None:
        from terarec.trainer.predict import run_predict

        run_predict(args.run, args.output, args.data, args.split, args.overrides, args.calibrated)

    flags = ["--output", args.output, *(["--split", args.split] if args.split else [])]
    flags += ["--calibrated"] if args.calibrated else []
    return _alone_or_torchrun(args, "terarec.trainer.predict", flags, alone)


def _alone_or_torchrun(args: argparse.Namespace, module: str, flags: list[str], alone: Callable[[], None]) -> int:
    """A command on a run's checkpoint: in this process (``--nproc 1``), or on ``--nproc`` ranks under
    torchrun running ``module``'s entry with the run, the data, ``flags`` and the overrides; the
    workers' user error, if any, comes back as one UserError."""
    if args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc == 1:
        alone()
        return 0
    from terarec.launch.torchrun import run_child, torchrun_command
    from terarec.trainer.evaluate import eval_config

    # the run, its checkpoint and the overrides checked here, before any process group starts: a
    # mistake is one untagged line, not whichever rank's report reached us before torchrun stopped the rest
    eval_config(args.run, args.data, args.overrides)

    common = ["--run-dir", args.run, *(["--data", args.data] if args.data else [])]
    return run_child(torchrun_command(module, [*common, *flags, *args.overrides], args.nproc))


def _export(args: argparse.Namespace) -> int:
    from terarec.trainer.export import run_export

    manifest = run_export(args.run, args.output, args.dtype, args.calibrated)
    method = manifest.get("calibration", {}).get("calibrator", {}).get("method")
    print(f"exported {manifest['source_checkpoint']} ({args.dtype}{', ' + method if method else ''}) -> {args.output}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from terarec.serving import load, score_dataset
    from terarec.trainer.quiet import quiet_known_warnings

    quiet_known_warnings()  # the same third-party notices a training run drops (torch.fx's, from KJT building)
    rows = score_dataset(load(args.model), args.data, args.split, args.output)
    print(f"scored {rows} rows of {args.data}/{args.split} -> {args.output}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from terarec.trainer.model_factory import describe_models

    rows = describe_models()
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
    elif args.markdown:
        print("| model | flavor | dense params | sparse params | FLOPs/example | train FLOPs/example | embedding dim |")
        print("|---|---|--:|--:|--:|--:|--:|")
        for r in rows:
            print(
                f"| {r['model']} | {r['flavor']} | {r['params_dense']:,} | {r['params_sparse']:,} | "
                f"{r['flops_per_example']:,} | {r['train_flops_per_example']:,} | {r['embedding_dim']} |"
            )
    else:
        print(
            f"{'model':<10} {'flavor':<12} {'dense params':>14} {'sparse params':>15} {'FLOPs/example':>15} "
            f"{'train FLOPs/ex':>16}"
        )
        for r in rows:
            print(
                f"{r['model']:<10} {r['flavor']:<12} {r['params_dense']:>14,} "
                f"{r['params_sparse']:>15,} {r['flops_per_example']:>15,} {r['train_flops_per_example']:>16,}"
            )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``terarec``: parse, run the command; user errors are one line and exit 2 (terarec.errors)."""
    return run_entry(_run_command, argv)


def _run_command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)  # before the heavy imports: --help stays instant
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
