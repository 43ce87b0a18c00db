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

from terarec.data_pipeline.criteo_fields import HEX_ALPHABET, HEX_DIGITS
from terarec.data_pipeline.criteo_layout import CRITEO_1TB_DAYS, DENSE_NAMES, LABEL, SPARSE_NAMES
from terarec.data_pipeline.schema import DatasetError
from terarec.data_pipeline.synth import CHUNK_ROWS, SynthSpec, calibrate_bias, label_model, make_chunk, pilot_sample

RECORD_FILE = "synth_tsv.json"
DEFAULT_DAYS = CRITEO_1TB_DAYS
_HEX_DIGITS = np.frombuffer(HEX_ALPHABET, np.uint8)
_TSV = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


def day_file_names(days: int, gzip: bool) -> list[str]:
    """``day_0`` .. ``day_{days-1}`` (``.gz`` with ``gzip``): the Criteo 1TB names."""
    return [f"day_{d}{'.gz' if gzip else ''}" for d in range(days)]


def hex_ids(ids: np.ndarray) -> pa.Array:
    """uint32 ids (shape (n,)) -> ``HEX_DIGITS`` (8) lowercase hex digits each; id 0 -> null (an empty field)."""
    shifts = np.arange(4 * (HEX_DIGITS - 1), -4, -4, dtype=np.uint32)  # most significant digit first
    digits = _HEX_DIGITS[(ids.astype(np.uint32)[:, None] >> shifts) & np.uint32(15)]  # (n, HEX_DIGITS) ascii
    data = pa.py_buffer(np.ascontiguousarray(digits).tobytes())
    offsets = pa.py_buffer(np.arange(0, HEX_DIGITS * len(ids) + 1, HEX_DIGITS, dtype=np.int32).tobytes())
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
    ``synth_tsv.json``) and prints what it did. The same request into a finished directory whose recorded
    files are all there with their recorded sizes does nothing; a missing or resized one is an error."""
    out = Path(output)
    _check_request(spec, days)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--output {out} is a file: give a directory for the day files")
    if spec.rows < days:  # an empty day file is not a Criteo log: prepare refuses it
        raise DatasetError(f"--rows {spec.rows} is fewer than --days {days}: every day file needs a row")
    options = {"--preset": spec.preset, "--rows": spec.rows, "--seed": spec.seed, "--days": days, "--gzip": gzip}
    previous = _load_record(out)
    if previous is not None and previous["options"] == options and previous.get("complete"):
        _check_recorded_files(out, previous)
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
    print(f"wrote {out}: {days} day files, rows {[f['rows'] for f in files]}")
    return record


def _check_recorded_files(out: Path, record: dict[str, Any]) -> None:
    """Every file the record lists is there with its recorded size: else one error naming the first that is not."""
    for entry in record.get("files", []):
        path = out / entry["name"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            found = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
            raise DatasetError(
                f"{path} is {found}, {RECORD_FILE} records {entry['bytes']} bytes: remove {out} and run synth again"
            )


def _check_request(spec: SynthSpec, days: int) -> None:
    if spec.rows <= 0:
        raise DatasetError(f"--rows must be positive, got {spec.rows}")
    if days <= 0:
        raise DatasetError(f"--days must be positive, got {days}")
    if spec.multi_hot:
        raise DatasetError("--format tsv writes the raw one-hot logs; make multi-hot with `terarec prepare multihot`")
    if spec.labels != "planted":  # the teacher's Bayes numbers need the eval split, which `prepare` chooses later
        raise DatasetError(f"--labels {spec.labels} needs --format parquet (it records the eval split's Bayes numbers)")


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
    return files  # the loop above opened every day (empty ones too: ends repeat when days > rows)


def _open_day(path: Path) -> pa.NativeFile:
    tmp = path.with_name(path.name + ".tmp")
    raw = pa.OSFile(str(tmp), "wb")
    return pa.CompressedOutputStream(raw, "gzip") if path.suffix == ".gz" else raw


def _close_day(sink: pa.NativeFile, path: Path, rows: int) -> dict[str, Any]:
    sink.close()
    shutil.move(path.with_name(path.name + ".tmp"), path)
    return {"name": path.name, "rows": rows, "bytes": path.stat().st_size}
