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

from terarec.configs.arguments import (
    CALIBRATION_METHODS,
    EXPORT_DTYPES,
    add_calibrate_arguments,
    add_eval_arguments,
    add_predict_arguments,
    add_train_arguments,
)
from terarec.configs.recipe_sizes import SIZE_CLASSES as RECIPE_SIZES
from terarec.configs.search_spaces import describe_spaces
from terarec.errors import EXIT_USAGE, UserArgumentParser, UserError, run_entry

__all__ = ["EXIT_USAGE", "UserError", "build_parser", "main"]


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser(
        "prepare",
        help="raw data -> prepared parquet dataset",
        description="Prepare a raw dataset as parquet + schema.json.",
    )
    kinds = prepare.add_subparsers(dest="source", required=True, metavar="{criteo,multihot,movielens,taobao}")
    criteo = kinds.add_parser("criteo", help="Criteo TSV (Kaggle train.txt or 1TB day_N, .gz too)")
    criteo.add_argument("--input", nargs="+", required=True, metavar="FILE", help="raw TSV files, in time order")
    criteo.add_argument("--output", required=True, metavar="DIR")
    split = criteo.add_mutually_exclusive_group()
    split.add_argument("--eval-fraction", type=float, metavar="F", help="last fraction of rows (time order) -> eval")
    split.add_argument("--eval-files", nargs="+", metavar="FILE", help="these files -> eval")
    criteo.add_argument(
        "--valid-fraction", type=float, default=0.0, metavar="F", help="fraction of rows just before eval -> valid/"
    )
    criteo.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="malformed rows: stop (default) or skip into DIR/rejects/",
    )
    criteo.add_argument("--workers", type=int, default=0, help="parallel file workers (0: one per core)")
    criteo.add_argument("--overwrite", action="store_true", help="replace DIR: build beside it, swap in when complete")
    criteo.set_defaults(handler=_prepare_criteo)
    _add_prepare_multihot(kinds)
    for name, what in (
        ("movielens", "MovieLens-100K folder (u.data, u.item, u.user)"),
        ("taobao", "Taobao UserBehavior CSV"),
    ):
        seq = kinds.add_parser(name, help=f"{what} -> BST sequence dataset")
        seq.add_argument("--input", required=True, metavar="PATH", help=what)
        seq.add_argument("--output", required=True, metavar="DIR")
        seq.add_argument("--max-history", type=int, default=50, help="history items kept per row")
        seq.add_argument(
            "--eval-fraction", type=float, default=0.2, help="last fraction of events (time order) -> eval"
        )
        seq.add_argument(
            "--valid-fraction", type=float, default=0.0, help="fraction of events just before eval (time) -> valid/"
        )
        seq.add_argument("--overwrite", action="store_true", help="replace DIR: build beside it, swap in when complete")
        seq.set_defaults(handler=_prepare_sequences)


def _add_prepare_multihot(kinds: argparse._SubParsersAction) -> None:
    multihot = kinds.add_parser(
        "multihot",
        help="one-hot Criteo dataset -> MLPerf DLRMv2 synthetic multi-hot dataset",
        description="Materialise MLPerf DLRMv2's synthetic multi-hot dataset (torchrec_dlrm's "
        "materialize_synthetic_multihot_dataset.py, seed 0) from a prepared one-hot Criteo dataset.",
    )
    multihot.add_argument("--input", required=True, metavar="DIR", help="a prepared one-hot Criteo dataset")
    multihot.add_argument("--output", required=True, metavar="DIR")
    multihot.add_argument("--preset", choices=["mlperf"], default="mlperf", help="bag and table sizes (MLPerf DLRMv2)")
    multihot.add_argument(
        "--distribution", choices=["uniform", "pareto"], help="synthetic ids (default: the preset's, uniform)"
    )
    multihot.add_argument(
        "--max-embeddings", type=int, metavar="N", help="cap every table at N rows (small rehearsals; MLPerf: none)"
    )
    multihot.add_argument("--workers", type=int, default=0, help="parallel part workers (0: one per core)")
    multihot.add_argument(
        "--overwrite", action="store_true", help="replace DIR: build beside it, swap in when complete"
    )
    multihot.set_defaults(handler=_prepare_multihot)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser(
        "synth",
        help="synthetic Criteo-shaped data",
        description="Write a synthetic dataset with Criteo cardinalities, Zipf ids and a planted label signal.",
    )
    synth.add_argument("--preset", choices=["criteo-1tb", "criteo-kaggle"], default="criteo-1tb")
    synth.add_argument("--rows", type=int, required=True, metavar="N")
    synth.add_argument("--output", required=True, metavar="DIR")
    synth.add_argument("--multi-hot", action="store_true", help="MLPerf DLRMv2 multi-hot sizes")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--eval-fraction", type=float, metavar="F", help="parquet: last fraction of rows -> eval (0.1)")
    synth.add_argument(
        "--valid-fraction", type=float, default=0.0, help="fraction of rows -> valid/, between train and eval in time"
    )
    synth.add_argument(
        "--labels",
        choices=["planted", "testbed"],
        default="planted",
        help="planted logistic model, or testbed: a random teacher at interaction orders 1-6 whose eval "
        "Bayes logloss/AUC go into schema.json",
    )
    synth.add_argument("--overwrite", action="store_true", help="replace DIR: build beside it, swap in when complete")
    synth.add_argument(
        "--format",
        choices=["parquet", "tsv"],
        default="parquet",
        help="parquet: a prepared dataset; tsv: raw Criteo-1TB day files day_0..day_{N-1} for `prepare criteo`",
    )
    synth.add_argument("--days", type=int, metavar="N", help="--format tsv: number of day files (default 24)")
    synth.add_argument("--gzip", action="store_true", help="--format tsv: day_N.gz, as Criteo publishes them")
    synth.set_defaults(handler=_synth)


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


def _add_on_change(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--on-change",
        choices=["stop", "rerun"],
        default="stop",
        help=f"a finished {what} made with another config or dataset: stop and list them (default), or move "
        f"it aside (NAME.stale-<time>) and run it again",
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
        "--predict",
        metavar="FLAVOR_OR_FLOPS",
        help="train nothing: the finished sweep's law at a flavor of its model or a training compute in FLOPs",
    )
    sweep.add_argument(
        "--predict-samples", type=int, metavar="N", help="samples the --predict flavor trains on (default: the sweep's)"
    )
    sweep.add_argument("overrides", nargs="*", metavar="key=value")
    sweep.set_defaults(handler=_sweep)


def _add_models_compare_launch(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser(
        "models",
        help="list registered models and flavors",
        description="List every model flavor with dense/sparse params and forward FLOPs per example.",
    )
    models.add_argument("--json", action="store_true")
    models.add_argument("--markdown", action="store_true", help="a markdown table (docs/models.md is this output)")
    models.set_defaults(handler=_models)
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
        default=10_000_000,
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


def build_parser() -> argparse.ArgumentParser:
    parser = UserArgumentParser(prog="terarec", description="Distributed training of CTR/ranking models on TorchRec.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(sub)
    _add_synth(sub)
    _add_train_eval(sub)
    _add_predict_export_score(sub)
    _add_sweep(sub)
    _add_models_compare_launch(sub)
    return parser


def _prepare_criteo(args: argparse.Namespace) -> int:
    from terarec.data_pipeline.criteo import prepare_criteo

    schema = prepare_criteo(
        args.input,
        args.output,
        args.eval_fraction,
        args.eval_files,
        args.on_error,
        args.workers,
        progress=sys.stderr.isatty(),
        command=_command_line(),
        overwrite=args.overwrite,
        valid_fraction=args.valid_fraction,
    )
    print(f"prepared {args.output}: rows {schema.split_rows}, rejects {schema.rejects}")
    return 0


def _prepare_multihot(args: argparse.Namespace) -> int:
    from terarec.data_pipeline.multihot import MultiHotSpec, prepare_multihot

    spec = MultiHotSpec.preset(args.preset, args.max_embeddings, args.distribution)
    schema = prepare_multihot(
        args.input, args.output, spec, args.workers, sys.stderr.isatty(), _command_line(), args.overwrite
    )
    print(f"prepared {args.output}: rows {schema.split_rows}, multi-hot sizes {list(spec.sizes)}")
    return 0


def _prepare_sequences(args: argparse.Namespace) -> int:
    from terarec.data_pipeline.sequence_sources import prepare_movielens, prepare_taobao
    from terarec.data_pipeline.sequences import SequenceOptions

    prepare = prepare_movielens if args.source == "movielens" else prepare_taobao
    options = SequenceOptions(
        args.max_history, args.eval_fraction, _command_line(), sys.stderr.isatty(), args.overwrite, args.valid_fraction
    )
    schema = prepare(args.input, args.output, options)
    print(
        f"prepared {args.output}: rows {schema.split_rows}, "
        f"positives {schema.extra['positives']} ({schema.extra['label']})"
    )
    return 0


def _synth(args: argparse.Namespace) -> int:
    from terarec.data_pipeline.synth import SynthSpec, write_synthetic

    if args.format == "tsv":
        return _synth_tsv(args)
    if args.days is not None or args.gzip:
        raise UserError("--days and --gzip are for --format tsv")
    eval_fraction = 0.1 if args.eval_fraction is None else args.eval_fraction
    spec = SynthSpec(args.preset, args.rows, args.multi_hot, args.seed, eval_fraction, args.valid_fraction, args.labels)
    schema = write_synthetic(
        spec, args.output, progress=sys.stderr.isatty(), command=_command_line(), overwrite=args.overwrite
    )
    print(f"wrote {args.output}: rows {schema.split_rows}")
    return 0


def _synth_tsv(args: argparse.Namespace) -> int:
    from terarec.data_pipeline.synth import SynthSpec
    from terarec.data_pipeline.synth_tsv import write_tsv_days

    if args.eval_fraction is not None or args.valid_fraction or args.overwrite:
        raise UserError(
            "--format tsv writes raw day files: splits are chosen by `prepare criteo` (no --eval-fraction, "
            "--valid-fraction or --overwrite)"
        )
    spec = SynthSpec(args.preset, args.rows, args.multi_hot, args.seed, labels=args.labels)
    days = 24 if args.days is None else args.days
    record = write_tsv_days(spec, args.output, days, args.gzip, sys.stderr.isatty(), _command_line())
    print(f"wrote {args.output}: {days} day files, rows {[f['rows'] for f in record['files']]}")
    return 0


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


def _command_line() -> str:
    import shlex

    return shlex.join(["terarec", *sys.argv[1:]])


def _train(args: argparse.Namespace) -> int:
    from terarec.configs.arguments import train_config

    cfg = train_config(args)  # validates before any process group starts
    from terarec.trainer.main import run_training

    run_training(cfg)
    return 0


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
        spec, output, args.launcher, scheduler, args.on_change
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
