"""``terarec predict``: a run's newest checkpoint scores every row of a split into one parquet file.

    terarec predict --run RUN --data DIR [--split eval|valid|train] --output FILE.parquet [--calibrated] [--nproc N]
    torchrun --nproc_per_node N -m terarec.trainer.predict --run-dir RUN --output FILE.parquet [...]

Built on ``terarec eval``'s path (the same config, model, checkpoint load and unshuffled loader), so
its scores are the ones eval's metrics saw. The file has one row per input row, in input order:
``row`` (index in the split), ``label``, ``probability`` (float64, ``sigmoid`` of the logit as
``trainer.metrics`` computes it) and, for datasets with a GAUC group key, that key's id as the model
saw it (after the table modulo). ``--calibrated``: ``probability`` is the calibrated one
(``RUN/calibration.json``, see ``terarec calibrate``).

Order: the eval loader (``shuffle_buffer=0``, one stream per rank) deals each rank its units of the
split in file order (``ParquetBatchStream.stream_units``, the one dealing rule), rows unpermuted,
padding only after its real rows. Each rank writes its real
rows to a part file as they come (memory is one batch); rank 0 then interleaves the parts unit by
unit into ``FILE.parquet.tmp`` and renames it: a reader never sees a partial file. The part files
sit beside the output, so with several nodes it must be on a shared filesystem.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from terarec.batch import real_rows
from terarec.configs.arguments import add_predict_arguments
from terarec.configs.loader import ConfigError
from terarec.data_pipeline.loader import BatchLoader, Unit
from terarec.data_pipeline.schema import DatasetError, DatasetSchema
from terarec.errors import parse_and_run
from terarec.trainer.calibration import calibrate_logits, load_calibration
from terarec.trainer.evaluate import checkpoint_session, eval_config
from terarec.trainer.evaluator import forward_outputs, forward_pipeline
from terarec.trainer.setup import eval_loader, group_key

log = logging.getLogger("terarec")


def prediction_schema(key: str | None) -> pa.Schema:
    """The output file's columns (``key``: the dataset's GAUC group key, or None)."""
    fields = [pa.field("row", pa.int64()), pa.field("label", pa.float32()), pa.field("probability", pa.float64())]
    return pa.schema(fields + ([pa.field(key, pa.int64())] if key else []))


def _row_indices(loader: BatchLoader, rank: int) -> np.ndarray:
    """Split row index of each real row rank ``rank`` yields, in yield order (see the module docstring)."""
    units = loader.stream.units
    starts = np.cumsum([0] + [u.num_rows for u in units[:-1]])
    first = {(u.file, u.row_group, u.start): int(s) for u, s in zip(units, starts)}
    mine = loader.stream.stream_units(rank, 0)
    if not mine:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(u.num_rows, dtype=np.int64) + first[(u.file, u.row_group, u.start)] for u in mine])


def _predicted_batches(
    dmp: Any, loader: BatchLoader, device: torch.device, bf16: bool, key: str | None, calibrator: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    """Per batch, the real rows' labels, probabilities (``calibrator`` applied, if any) and (with ``key``)
    group ids, in loader order: the forward pass evaluation runs (``evaluator.forward_outputs``)."""
    for logits, labels, groups in forward_outputs(dmp, loader, forward_pipeline(dmp, device), bf16, key):
        keep = real_rows(labels).cpu()
        scores = logits.detach().cpu()[keep].double()
        if calibrator is not None:
            scores = calibrate_logits(calibrator, scores)
        out = {"label": labels.cpu()[keep].float().numpy(), "probability": torch.sigmoid(scores).numpy()}
        if key is not None and groups is not None:
            out[key] = groups[keep].numpy()
        yield out


def _write_part(path: Path, parts: Iterator[dict[str, Any]], rows: np.ndarray, schema: pa.Schema) -> int:
    """Stream ``parts`` into ``path``, numbering them with ``rows``; the number of rows written."""
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for part in parts:
            n = len(part["label"])
            if written + n > len(rows):
                raise RuntimeError(f"the loader yielded more real rows than its units hold ({len(rows)})")
            columns = {"row": rows[written : written + n], **part}
            writer.write_table(pa.table({f.name: columns[f.name] for f in schema}, schema=schema))
            written += n
    return written


def _take(readers: list[Iterator[pa.RecordBatch]], pending: list[list[pa.RecordBatch]], rank: int, n: int) -> list:
    """The next ``n`` rows of rank ``rank``'s part, as record batches (reading only what is needed)."""
    out, queue = [], pending[rank]
    while n > 0:
        if not queue:
            queue.append(next(readers[rank]))
        head = queue[0]
        take = min(n, head.num_rows)
        out.append(head.slice(0, take))
        queue[0] = head.slice(take)
        if queue[0].num_rows == 0:
            queue.pop(0)
        n -= take
    return out


def _unit_owners(loader: BatchLoader) -> list[tuple[Unit, int]]:
    """Every unit of the split in file order with the rank that scored it, as the loader dealt them
    (an eval loader has one stream per rank: stream ``r`` is rank ``r``)."""
    owner = {
        (u.file, u.row_group, u.start): r
        for r in range(loader.stream.world_size)
        for u in loader.stream.stream_units(r, 0)
    }
    return [(u, owner[(u.file, u.row_group, u.start)]) for u in loader.stream.units]


def _merge_parts(parts: list[Path], owners: list[tuple[Unit, int]], target: Path, schema: pa.Schema) -> None:
    """Interleave the ranks' parts unit by unit, in file order, into ``target``."""
    readers = [pq.ParquetFile(p).iter_batches(batch_size=65536) for p in parts]
    pending: list[list[pa.RecordBatch]] = [[] for _ in parts]
    with pq.ParquetWriter(target, schema) as writer:
        for unit, rank in owners:
            for batch in _take(readers, pending, rank, unit.num_rows):
                writer.write_batch(batch)


def run_predict(
    run: str,
    output: str,
    data: str | None = None,
    split: str | None = None,
    overrides: list[str] | None = None,
    calibrated: bool = False,
) -> dict[str, Any]:
    """Score ``split`` (default: the run's eval split) with ``run``'s newest checkpoint into ``output``
    (``calibrated``: probabilities through ``RUN/calibration.json``)."""
    if not output.endswith(".parquet"):
        raise ConfigError(f"--output {output}: must name a .parquet file")
    cfg = eval_config(run, data, [*(overrides or []), *([f"data.eval_split={split}"] if split else [])])
    schema = DatasetSchema.load(cfg.data.path)
    target = Path(output)
    parts_dir = target.with_name(target.name + ".parts")
    with checkpoint_session(cfg, schema) as session:
        built, info = session.built, session.info
        loader = eval_loader(cfg, schema, built.table_sizes, info, built.vocabularies)
        if loader is None:
            raise DatasetError(f"{cfg.data.path} has no '{cfg.data.eval_split}' rows to predict")
        dmp, loaded = session.load()
        calibrator = load_calibration(cfg.run.dir, int(loaded["step"]), cfg.data.path) if calibrated else None
        key = group_key(schema, built.table_sizes)
        out_schema = prediction_schema(key)
        if info.is_main:
            target.parent.mkdir(parents=True, exist_ok=True)
            parts_dir.mkdir(exist_ok=True)
        dist.barrier()
        rows = _row_indices(loader, info.rank)
        part = parts_dir / f"rank-{info.rank:05d}.parquet"
        written = _write_part(
            part, _predicted_batches(dmp, loader, info.device, cfg.train.bf16, key, calibrator), rows, out_schema
        )
        if written != len(rows):
            raise RuntimeError(f"rank {info.rank} wrote {written} rows of its {len(rows)}")
        dist.barrier()
        if info.is_main:
            tmp = target.with_name(target.name + ".tmp")
            parts = [parts_dir / f"rank-{r:05d}.parquet" for r in range(info.world_size)]
            if info.world_size == 1:
                part.replace(tmp)
            else:
                _merge_parts(parts, _unit_owners(loader), tmp, out_schema)
            tmp.replace(target)
            shutil.rmtree(parts_dir, ignore_errors=True)
            log.info("predictions of %s on '%s' -> %s", loaded["path"], cfg.data.eval_split, target)
        dist.barrier()
        return {
            "output": str(target),
            "checkpoint": loaded["path"],
            "step": loaded["step"],
            "split": cfg.data.eval_split,
        }


@record
def main(argv: list[str] | None = None) -> int:
    """torchrun's entry for ``terarec predict --nproc N``, inside the one error boundary."""
    return parse_and_run(
        "terarec.trainer.predict",
        "score a split with a run's checkpoint",
        lambda parser: add_predict_arguments(parser, run_flag="--run-dir"),
        lambda args: run_predict(args.run, args.output, args.data, args.split, args.overrides, args.calibrated),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
