"""``terarec prepare`` and ``terarec synth``: the data commands' arguments and handlers (``terarec.cli``
builds the parser; every handler runs inside its error boundary). Heavy imports stay inside handlers."""

from __future__ import annotations

import argparse
import shlex
import sys

from terarec.data_pipeline.criteo_layout import (
    CRITEO_1TB_DAYS,
    MULTIHOT_DISTRIBUTIONS,
    MULTIHOT_PRESETS,
    PRESETS,
    SYNTH_LABEL_MODES,
)
from terarec.errors import UserError

__all__ = ["add_data_commands"]


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """``prepare criteo|movielens|taobao|multihot`` and ``synth``."""
    _add_prepare(sub)
    _add_synth(sub)


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    """Every dataset-writing command's ``--overwrite`` (the manifest's build-beside-and-swap)."""
    parser.add_argument("--overwrite", action="store_true", help="replace DIR: build beside it, swap in when complete")


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
    _add_overwrite(criteo)
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
        _add_overwrite(seq)
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
    multihot.add_argument(
        "--preset", choices=MULTIHOT_PRESETS, default=MULTIHOT_PRESETS[0], help="bag and table sizes (MLPerf DLRMv2)"
    )
    multihot.add_argument(
        "--distribution", choices=MULTIHOT_DISTRIBUTIONS, help="synthetic ids (default: the preset's, uniform)"
    )
    multihot.add_argument(
        "--max-embeddings", type=int, metavar="N", help="cap every table at N rows (small rehearsals; MLPerf: none)"
    )
    multihot.add_argument("--workers", type=int, default=0, help="parallel part workers (0: one per core)")
    _add_overwrite(multihot)
    multihot.set_defaults(handler=_prepare_multihot)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser(
        "synth",
        help="synthetic Criteo-shaped data",
        description="Write a synthetic dataset with Criteo cardinalities, Zipf ids and a planted label signal.",
    )
    synth.add_argument("--preset", choices=tuple(PRESETS), default="criteo-1tb")
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
        choices=SYNTH_LABEL_MODES,
        default=SYNTH_LABEL_MODES[0],
        help="planted logistic model, or testbed: a random teacher at interaction orders 1-6 whose eval "
        "Bayes logloss/AUC go into schema.json (--format parquet only)",
    )
    _add_overwrite(synth)
    synth.add_argument(
        "--format",
        choices=["parquet", "tsv"],
        default="parquet",
        help="parquet: a prepared dataset; tsv: raw Criteo-1TB day files day_0..day_{N-1} for `prepare criteo`",
    )
    synth.add_argument(
        "--days", type=int, metavar="N", help=f"--format tsv: number of day files (default {CRITEO_1TB_DAYS})"
    )
    synth.add_argument("--gzip", action="store_true", help="--format tsv: day_N.gz, as Criteo publishes them")
    synth.set_defaults(handler=_synth)


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
    days = CRITEO_1TB_DAYS if args.days is None else args.days
    write_tsv_days(spec, args.output, days, args.gzip, sys.stderr.isatty(), _command_line())  # prints what it did
    return 0


def _command_line() -> str:
    return shlex.join(["terarec", *sys.argv[1:]])
