"""``terarec synth --format tsv``: synthetic rows as raw Criteo-1TB day files (``day_0`` .. ``day_{N-1}``).

The rows are exactly those ``synth`` writes as parquet for the same preset and seed (``make_chunk``), in
the raw format ``prepare criteo`` reads: label, 13 integers, 26 ids as 8 lowercase hex digits, tab-separated,
one row per line. Missing values are empty fields, as in the real logs: the dense nulls synth draws, and
id 0 (the most frequent Zipf id), written empty because ``prepare`` maps an empty categorical back to 0 (as
torchrec does), so a round trip returns the generated ids. Rows are split across the days in time order
(day ``d`` holds rows ``[d * rows // days, (d + 1) * rows // days)``); eval/valid splits are chosen later,
at ``prepare`` (MLPerf: ``--eval-files day_23``). Generation is chunked (``CHUNK_ROWS``), so memory is
bounded whatever the size. ``synth_tsv.json`` records what made the files and is written last: a directory
without it holds an unfinished set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES
from terarec.data_pipeline.schema import DatasetError
from terarec.data_pipeline.synth import CHUNK_ROWS, SynthSpec, calibrate_bias, label_model, make_chunk, pilot_sample

RECORD_FILE = "synth_tsv.json"
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_TSV = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


def day_file_names(days: int, gzip: bool) -> list[str]:
    """``day_0`` .. ``day_{days-1}`` (``.gz`` with ``gzip``): the Criteo 1TB names."""
    return [f"day_{d}{'.gz' if gzip else ''}" for d in range(days)]


def hex_ids(ids: np.ndarray) -> pa.Array:
    """uint32 ids (shape (n,)) -> 8 lowercase hex digits each; id 0 -> null (an empty field)."""
    shifts = np.arange(28, -4, -4, dtype=np.uint32)
    digits = _HEX_DIGITS[(ids.astype(np.uint32)[:, None] >> shifts) & np.uint32(15)]  # (n, 8) ascii
    data = pa.py_buffer(np.ascontiguousarray(digits).tobytes())
    offsets = pa.py_buffer(np.arange(0, 8 * len(ids) + 1, 8, dtype=np.int32).tobytes())
    strings = pa.Array.from_buffers(pa.string(), len(ids), [None, offsets, data])
    return pc.if_else(pa.array(ids == 0), pa.scalar(None, pa.string()), strings)


def tsv_table(table: pa.Table) -> pa.Table:
    """A synth chunk (label, dense with nulls, one-hot uint32 ids) as the raw TSV's columns."""
    sparse = [hex_ids(table[name].to_numpy()) for name in SPARSE_NAMES]
    return pa.table([table[LABEL], *(table[n] for n in DENSE_NAMES), *sparse], names=table.column_names)


def write_tsv_days(
    spec: SynthSpec, output: str | Path, days: int, gzip: bool = False, progress: bool = True, command: str = ""
) -> dict[str, Any]:
    """Write ``spec.rows`` rows as ``days`` day files under ``output``; returns the record (also saved as
    ``synth_tsv.json``). The same request into a finished directory does nothing."""
    out = Path(output)
    _check_request(spec, days)
    options = {"--preset": spec.preset, "--rows": spec.rows, "--seed": spec.seed, "--days": days, "--gzip": gzip}
    options |= {"--labels": spec.labels} if spec.labels != "planted" else {}
    previous = _load_record(out)
    if previous is not None and previous["options"] == options and previous.get("complete"):
        print(f"synth: {out} already holds these day files; nothing to do")
        return previous
    if out.exists() and any(out.iterdir()) and previous is None:
        raise DatasetError(f"{out} is not empty and has no {RECORD_FILE}: choose an empty directory")
    if previous is not None and previous["options"] != options:
        raise DatasetError(f"{out} holds day files made with {previous['options']}; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    files = _write_days(spec, out, day_file_names(days, gzip), progress)
    record = {"kind": "synth-tsv", "options": options, "files": files, "command": command, "complete": True}
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _check_request(spec: SynthSpec, days: int) -> None:
    if spec.rows <= 0:
        raise DatasetError(f"--rows must be positive, got {spec.rows}")
    if days <= 0:
        raise DatasetError(f"--days must be positive, got {days}")
    if spec.multi_hot:
        raise DatasetError("--format tsv writes the raw one-hot logs; make multi-hot with `terarec prepare multihot`")


def _load_record(out: Path) -> dict[str, Any] | None:
    path = out / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        record["options"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: not a synth record ({err})") from None
    return record


def _write_days(spec: SynthSpec, out: Path, names: list[str], progress: bool) -> list[dict[str, Any]]:
    """Stream the rows chunk by chunk into the day files (each written under ``.tmp``, renamed when full)."""
    pilot = pilot_sample(spec)
    model = label_model(spec, pilot)
    bias = calibrate_bias(spec, model, pilot)
    ends = [(d + 1) * spec.rows // len(names) for d in range(len(names))]
    files: list[dict[str, Any]] = []
    day, done, sink = 0, 0, _open_day(out / names[0])
    with tqdm(total=spec.rows, unit="rows", unit_scale=True, disable=not progress, desc="synth tsv") as bar:
        for chunk in range((spec.rows + CHUNK_ROWS - 1) // CHUNK_ROWS):
            rows = min(CHUNK_ROWS, spec.rows - done)
            table = tsv_table(make_chunk(spec, chunk, rows, bias, model)[0])
            start = 0
            while start < rows:
                take = min(rows - start, ends[day] - done - start)
                if take > 0:
                    pacsv.write_csv(table.slice(start, take), sink, _TSV)
                    start += take
                if done + start == ends[day] and day < len(names) - 1:  # the day is full: the next one
                    files.append(_close_day(sink, out / names[day], ends[day] - (ends[day - 1] if day else 0)))
                    day += 1
                    sink = _open_day(out / names[day])
            done += rows
            bar.update(rows)
    files.append(_close_day(sink, out / names[day], ends[day] - (ends[day - 1] if day else 0)))
    for name in names[day + 1 :]:  # more days than rows: the rest are empty files
        files.append(_close_day(_open_day(out / name), out / name, 0))
    return files


def _open_day(path: Path) -> pa.NativeFile:
    tmp = path.with_name(path.name + ".tmp")
    raw = pa.OSFile(str(tmp), "wb")
    return pa.CompressedOutputStream(raw, "gzip") if path.suffix == ".gz" else raw


def _close_day(sink: pa.NativeFile, path: Path, rows: int) -> dict[str, Any]:
    sink.close()
    shutil.move(path.with_name(path.name + ".tmp"), path)
    return {"name": path.name, "rows": rows, "bytes": path.stat().st_size}
