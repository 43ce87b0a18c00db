"""``terarec prepare criteo``: raw Criteo TSV (plain or .gz) -> parquet dataset + schema.json.

Streaming in blocks of whole lines (``BLOCK_BYTES`` read at a time), so memory is bounded by the block
size whatever the file size. Parallel over input files (one process each); each input file becomes its own
``part-{stem}-NNNNN.parquet`` parts plus a ``.done/{stem}.json`` marker, so a re-run skips the
files already finished (resumable per file): a marker is trusted only when it was made from the
same input (size, mtime, sample hash), split lines and ``--on-error``, and its parts are intact.
The directory is claimed by a manifest (``manifest.py``): a re-run with other inputs or options
stops unless ``--overwrite``. Parsing is columnar: a block whose lines are all good rows is cut into
fields and decoded with numpy on its raw bytes (``criteo_lines.py``, no CSV reader); any other block
goes through pyarrow's CSV reader (``criteo_csv.py``), and its labels, dense integers and hex ids are
checked and decoded on arrow's string buffers (``criteo_fields.py``), which names the bad rows; the same
rows either way. Rows and rejects are numbered by their line in the file, empty lines included.
Rows go out in row groups of ``ROW_GROUP_ROWS`` whatever the block size; distinct ids are counted exactly up to
16384 per feature, by HyperLogLog above (``sketch.py``), once per row group's worth of rows.

Malformed rows (wrong field count, non-integer dense, non-hex categorical) stop the run naming
``file:line`` (``--on-error fail``), or go to ``DIR/rejects/{stem}.tsv`` as ``line<TAB>reason<TAB>row``
and are counted in schema.json (``--on-error skip``). Missing categoricals become id 0 (as
torchrec.datasets.criteo does); missing dense values stay null and the loader fills them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from terarec.data_pipeline.criteo_csv import RAW_COLUMNS, add_csv_block
from terarec.data_pipeline.criteo_fields import OUTPUT_SCHEMA, convert_block, field_text
from terarec.data_pipeline.criteo_layout import DENSE_NAMES, LABEL, SPARSE_NAMES
from terarec.data_pipeline.criteo_lines import convert_lines, line_blocks
from terarec.data_pipeline.manifest import DatasetManifest, InputFile, PartFile, start_build
from terarec.data_pipeline.parquet_io import ROW_GROUP_ROWS, PartWriter
from terarec.data_pipeline.raw_files import check_readable, count_lines, open_raw, unreadable
from terarec.data_pipeline.schema import DatasetError, DatasetSchema, SparseFeature
from terarec.data_pipeline.sketch import DESCRIPTION, DistinctCounts
from terarec.data_pipeline.splits import check_eval_fraction, check_valid_fraction, split_lines

# input read in blocks of whole lines: 2 MB fit the caches (~10% less CPU and ~90 MB less RSS than 4 MB)
BLOCK_BYTES = 2 << 20
ROWS_PER_FILE = 4 << 20
# bump when the output of the same input and options changes (2: ROW_GROUP_ROWS groups, dictionary choice,
# HLL; 3: the parquet encodings of ``writer_options``: the same rows, other bytes)
FORMAT = 3
_PART_NAME = re.compile(r"part-(.+)-\d{5}\.parquet(\.tmp)?")  # -> the input's stem
SKETCH_SUFFIX = ".distinct.npy"  # per input file, beside its done marker (was .kmv.npy: such markers are redone)
# The parts' encodings (``writer_options``; callgrind figures: README, "prepare criteo's floor"). A
# dictionary costs ~85 instructions a value (hash memo + index RLE) whatever it saves: kept where an
# index fits a byte (<= 256 ids: >= 4x fewer bytes than plain uint32), else PLAIN; dense integers as
# DELTA_BINARY_PACKED (fewer instructions and bytes than dictionary or plain).
DICTIONARY_MAX_DISTINCT = 256
DENSE_ENCODING = "DELTA_BINARY_PACKED"
COMPRESSION = "lz4"  # LZ4_RAW: fewer instructions than snappy and, on these pages, fewer bytes


@dataclass(frozen=True)
class FileJob:
    path: str
    stem: str
    train_lines: int  # physical lines [1, train_lines] -> train, the rest -> valid (up to valid_end) or eval
    output: str
    on_error: str
    key: str = ""  # the job's identity (input, split lines, on_error): a done marker must match it
    valid_end: int | None = None  # lines (train_lines, valid_end] -> valid; None: the build has no valid split

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this job writes, in time order."""
        return ("train", "eval") if self.valid_end is None else ("train", "valid", "eval")


_BYTES_DONE: Any | None = None  # a shared mp.Value: input bytes consumed by every worker
_BAR: tqdm | None = None  # in-process runs move the bar directly


def _init_worker(counter: Any, bar: tqdm | None = None) -> None:
    global _BYTES_DONE, _BAR
    _BYTES_DONE, _BAR = counter, bar


def _report_bytes(count: int) -> None:
    if count <= 0:
        return
    if _BAR is not None:
        _BAR.update(count)
    elif _BYTES_DONE is not None:
        with _BYTES_DONE.get_lock():
            _BYTES_DONE.value += count


class _FileConverter:
    """One input file's conversion: its part writers, rejected rows and id sketches."""

    def __init__(self, job: FileJob) -> None:
        self.job, self.out = job, Path(job.output)
        self.skipped: list[tuple[int, str, str]] = []  # (line, reason, text) of rows with the wrong field count
        self.writers = {
            s: PartWriter(self.out / s, OUTPUT_SCHEMA, ROWS_PER_FILE, prefix=f"{job.stem}-") for s in job.splits
        }
        self.pending: dict[str, list[pa.Table]] = {s: [] for s in job.splits}  # rows of an unfinished row group
        self.rejects: list[str] = []
        self.rows_seen = 0  # rows converted so far
        self.distinct = DistinctCounts(len(SPARSE_NAMES))
        self.unsketched: list[np.ndarray] = []  # (26, rows) id blocks not yet in ``distinct``
        self.encoding_chosen = False

    def malformed(self, candidates: list[tuple[int, str]]) -> DatasetError:
        line, reason = min(candidates)
        return DatasetError(f"{self.job.path}:{line}: {reason}")

    def add(self, batch: pa.RecordBatch, lines: np.ndarray) -> None:
        """A block of the CSV reader (all-string columns; ``lines``: each row's line in the file): checked
        by ``convert_block``, bad rows rejected."""
        table, bad, reasons, ids = convert_block(batch)
        # fail mode: the earlier of this batch's first bad value and the first wrong field count (which may lie
        # past this batch, in its block: every row before it is checked by then); a block's wrong field counts
        # without a bad value before them stop the run once the whole block is checked (``add_csv_block``)
        if self.job.on_error == "fail" and bad.any():
            first_bad = [(int(lines[i]), reasons[i]) for i in np.flatnonzero(bad)[:1]]
            raise self.malformed(first_bad + [s[:2] for s in self.skipped[:1]])
        for i in np.flatnonzero(bad):
            text = "\t".join(field_text(batch.column(c), int(i)) for c in range(len(RAW_COLUMNS)))
            self.rejects.append(f"{lines[i]}\t{reasons[i]}\t{text}")
        self._add_rows(table, ids, lines[~bad] if bad.any() else lines)
        self.rows_seen += batch.num_rows

    def add_good(self, table: pa.Table, ids: np.ndarray, first_line: int) -> None:
        """A block of good rows only (``convert_lines``), one a line from line ``first_line``: its typed
        table and (26, rows) ids."""
        self._add_rows(table, ids, np.arange(first_line, first_line + table.num_rows))
        self.rows_seen += table.num_rows

    def _add_rows(self, table: pa.Table, ids: np.ndarray, good_lines: np.ndarray) -> None:
        """A block's good rows (``good_lines``: their lines in the file) -> the splits' row groups and the sketch."""
        ends = [self.job.train_lines] if self.job.valid_end is None else [self.job.train_lines, self.job.valid_end]
        cuts = [0, *(int(np.searchsorted(good_lines, end, side="right")) for end in ends), table.num_rows]
        self.unsketched.append(ids)
        # the first block alone, then a row group's worth at a time: the first block's ids fill the
        # exact sets' lookup tables, so the frequent ids of the rest of the first row group are looked
        # up instead of sorted; here, before _write: the first row group's encoding depends on the counts so far
        if self.rows_seen == 0 or sum(block.shape[1] for block in self.unsketched) >= ROW_GROUP_ROWS:
            self._sketch()
        for split, start, stop in zip(self.job.splits, cuts[:-1], cuts[1:]):  # train | valid | eval, by line
            self._write(split, table.slice(start, stop - start))

    def _write(self, split: str, table: pa.Table, last: bool = False) -> None:
        """Row groups of ``ROW_GROUP_ROWS`` rows (the loader's work unit), not one CSV block's ~8k:
        whole row groups are written as they fill, the rest waits (is written when ``last``)."""
        if table.num_rows:  # an empty slice would keep its whole block's buffers alive
            self.pending[split].append(table)
        rows = sum(t.num_rows for t in self.pending[split])
        ready = rows if last else rows - rows % ROW_GROUP_ROWS
        if ready:
            self._choose_encoding()
            pending = pa.concat_tables(self.pending[split])
            for start in range(0, ready, ROW_GROUP_ROWS):  # one write per row group
                self.writers[split].write(pending.slice(start, min(ROW_GROUP_ROWS, ready - start)))
            self.pending[split] = [pending.slice(ready)] if ready < rows else []

    def _sketch(self) -> None:
        """Count the buffered id blocks: once per row group's worth of rows (and the first block alone,
        see ``add``), not per ~8k-row CSV block: fewer calls per id, and a row group's new ids sorted at once."""
        if self.unsketched:
            ids = self.unsketched[0] if len(self.unsketched) == 1 else np.concatenate(self.unsketched, axis=1)
            self.distinct.update(ids, scratch=len(self.unsketched) > 1)
            self.unsketched = []

    def _choose_encoding(self) -> None:
        """Once per file, before its first row group: ``writer_options`` from the distinct ids so far
        (at least a row group's rows, or the whole file)."""
        if self.encoding_chosen:
            return
        self._sketch()
        for writer in self.writers.values():
            writer.options = writer_options(self.distinct.estimates())
        self.encoding_chosen = True

    def finish(self) -> dict[str, Any]:
        """Close the parts, write the rejects and the done marker; returns the marker."""
        self.rejects += [f"{line}\twrong field count\t{text}" for line, _, text in self.skipped]
        for split in self.job.splits:
            self._write(split, OUTPUT_SCHEMA.empty_table(), last=True)
        counts = {s: w.rows_total for s, w in self.writers.items()}
        self._sketch()
        if not sum(counts.values()):
            malformed = f": all {len(self.rejects)} rows are malformed (is it tab-separated Criteo data?)"
            raise DatasetError(f"{self.job.path} has no valid rows{malformed if self.rejects else ''}")
        for writer in self.writers.values():
            writer.close()
        parts = [asdict(p) for w in self.writers.values() for p in w.parts]
        if self.rejects:
            (self.out / "rejects").mkdir(exist_ok=True)
            (self.out / "rejects" / f"{self.job.stem}.tsv").write_text(
                "line\treason\trow\n" + "\n".join(sorted(self.rejects, key=lambda r: int(r.split("\t")[0]))) + "\n"
            )
        result = {"key": self.job.key, "rows": counts, "rejects": len(self.rejects), "parts": parts}
        marker = self.out / ".done" / f"{self.job.stem}.json"
        marker.parent.mkdir(exist_ok=True)
        np.save(self.out / ".done" / f"{self.job.stem}{SKETCH_SUFFIX}", self.distinct.to_array())
        marker.with_suffix(".tmp").write_text(json.dumps(result))
        marker.with_suffix(".tmp").replace(marker)
        return result


def writer_options(distinct: list[int]) -> dict[str, Any]:
    """``pyarrow.parquet.ParquetWriter`` options of a file's parts, given the distinct ids of each
    categorical (``SPARSE_NAMES`` order): dictionary encoding for the label and for categoricals with
    at most ``DICTIONARY_MAX_DISTINCT`` ids, PLAIN for the other ids, ``DENSE_ENCODING`` for the dense
    columns; no column statistics (no reader of a prepared dataset filters on them)."""
    dictionary = [LABEL] + [name for name, count in zip(SPARSE_NAMES, distinct) if count <= DICTIONARY_MAX_DISTINCT]
    return {
        "compression": COMPRESSION,
        "use_dictionary": dictionary,
        "column_encoding": dict.fromkeys(DENSE_NAMES, DENSE_ENCODING),
        "write_statistics": False,
    }


def prepare_file(job: FileJob) -> dict[str, Any]:
    """Convert one raw file; returns its done marker. Raises DatasetError in fail mode."""
    converter = _FileConverter(job)
    stream, raw = open_raw(job.path)
    reported = lines_before = 0
    try:
        for index, (buffer, size) in enumerate(line_blocks(job.path, stream, BLOCK_BYTES)):
            converted = convert_lines(buffer, size)
            if converted is not None:  # every line a good row: no CSV reader
                converter.add_good(*converted, first_line=lines_before + 1)
                lines_before += converted[0].num_rows
            else:
                lines_before += add_csv_block(converter, buffer[:size], lines_before, first=index == 0)
            _report_bytes(raw.tell() - reported)
            reported = raw.tell()
    except pa.ArrowInvalid as err:
        if job.on_error == "fail" and converter.skipped:  # the reader failed after a wrong field count: name that line
            raise converter.malformed([s[:2] for s in converter.skipped[:1]]) from None
        raise DatasetError(f"{job.path}: {err}") from None
    except (OSError, EOFError) as err:  # a truncated or damaged .gz
        raise unreadable(job.path, err) from None
    _report_bytes(os.path.getsize(job.path) - reported)
    return converter.finish()


def criteo_request(
    inputs: list[str], eval_files: list[str], eval_fraction: float | None, on_error: str, valid_fraction: float = 0.0
) -> DatasetManifest:
    """The manifest request of a build: its inputs (checked readable) and output-changing options."""
    files = [InputFile.of(p) for p in [*inputs, *eval_files]]  # the first missing file fails here
    for path in [*inputs, *eval_files]:
        check_readable(path)
    if eval_fraction is not None:
        check_eval_fraction(eval_fraction)
    check_valid_fraction(valid_fraction, eval_fraction or 0.0)
    stems = [Path(p).name.removesuffix(".gz").replace(".", "_") for p in [*inputs, *eval_files]]
    if len(set(stems)) != len(stems):
        raise DatasetError("two input files share a name; output parts are named after their inputs")
    options = {
        "prepare format": FORMAT,
        "--eval-fraction": None if eval_fraction is None else float(eval_fraction),
        "--eval-files": [Path(p).name for p in eval_files],
        "--on-error": on_error,
        # recorded only when used: datasets built before the option existed keep their identity
        **({"--valid-fraction": float(valid_fraction)} if valid_fraction > 0 else {}),
    }
    return DatasetManifest("criteo", files, options)


def plan_jobs(
    inputs: list[str],
    output: str,
    eval_fraction: float | None,
    eval_files: list[str],
    on_error: str,
    files: list[InputFile],
    valid_fraction: float = 0.0,
) -> list[FileJob]:
    """One job per input file (``files``: their identities) with the lines at which its rows switch
    from train to valid and eval. Counts are global over ``inputs`` in time order: eval gets
    ``round(rows * eval_fraction)`` rows, valid ``round(rows * valid_fraction)`` just before them."""
    paths = [*inputs, *eval_files]
    stems = [Path(p).name.removesuffix(".gz").replace(".", "_") for p in paths]
    everything = 2**62
    train_lines, valid_ends = [everything] * len(inputs), [everything] * len(inputs)
    if eval_fraction or valid_fraction:
        counts = [count_lines(p) for p in inputs]
        rows = sum(counts)
        train_lines, valid_ends = split_lines(
            counts, int(round(rows * (eval_fraction or 0.0))), int(round(rows * valid_fraction))
        )
    lines = train_lines + [0] * len(eval_files)
    ends: list[int | None] = [*valid_ends, *[0] * len(eval_files)] if valid_fraction > 0 else [None] * len(paths)
    keys = [
        json.dumps(
            {
                "input": asdict(f),
                "train_lines": n,
                **({"valid_end": v} if v is not None else {}),  # absent without valid: old markers still match
                "on_error": on_error,
                "format": FORMAT,
            },
            sort_keys=True,
        )
        for f, n, v in zip(files, lines, ends)
    ]
    return [FileJob(str(p), s, n, output, on_error, k, v) for p, s, n, k, v in zip(paths, stems, lines, keys, ends)]


def prepare_criteo(
    inputs: list[str],
    output: str,
    eval_fraction: float | None = None,
    eval_files: list[str] | None = None,
    on_error: str = "fail",
    workers: int = 0,
    progress: bool = True,
    command: str = "",
    overwrite: bool = False,
    valid_fraction: float = 0.0,
) -> DatasetSchema:
    """Prepare every input file (reusing those an earlier run of this build finished), write
    schema.json, then the manifest. ``overwrite``: build beside ``output`` and swap it in.
    ``valid_fraction > 0``: a ``valid/`` split of the rows just before eval in time (train / valid / eval)."""
    if workers < 0:
        raise DatasetError(f"--workers must be >= 0 (0: one per core), got {workers}")
    eval_files = eval_files or []
    request = criteo_request(inputs, eval_files, eval_fraction, on_error, valid_fraction)
    jobs = plan_jobs(inputs, output, eval_fraction, eval_files, on_error, request.inputs, valid_fraction)
    with start_build(output, request, overwrite) as build:
        if build.up_to_date:
            print(f"prepare: {output} is already prepared from these inputs and options; nothing to do")
            return DatasetSchema.load(output)
        out = build.directory
        jobs = [replace(job, output=str(out)) for job in jobs]
        todo = _jobs_to_run(jobs, out)
        total_bytes = _run_jobs(todo, workers, progress)
        schema = _write_schema(jobs, out, command or f"terarec prepare criteo ({total_bytes} bytes this run)")
        build.commit([PartFile(**p) for job in jobs for p in _done_marker(out, job)["parts"]])
    return schema


def _done_marker(out: Path, job: FileJob) -> dict[str, Any]:
    marker: dict[str, Any] = json.loads((out / ".done" / f"{job.stem}.json").read_text())
    return marker


def _jobs_to_run(jobs: list[FileJob], out: Path) -> list[FileJob]:
    """Jobs without a matching done marker and intact parts. Every output named after an input
    (``part-{stem}-NNNNN``, markers, rejects) that no finished job lists is removed: those of the
    jobs to redo, of inputs no longer in the build and strays, so no stale part survives."""
    todo = [job for job in jobs if not _finished(job, out)]
    keep = {
        out / ".done" / f"{job.stem}{suffix}" for job in jobs if job not in todo for suffix in (".json", SKETCH_SUFFIX)
    }
    keep |= {out / "rejects" / f"{job.stem}.tsv" for job in jobs if job not in todo}
    keep |= {out / p["path"] for job in jobs if job not in todo for p in _done_marker(out, job)["parts"]}
    for paths in _outputs_by_stem(out).values():
        for path in paths:
            if path not in keep:
                path.unlink()
    if len(todo) < len(jobs):
        print(f"prepare: {len(jobs) - len(todo)} of {len(jobs)} files already done, resuming")
    return todo


def _finished(job: FileJob, out: Path) -> bool:
    try:
        done = _done_marker(out, job)
    except (OSError, ValueError):
        return False
    files = [out / p["path"] for p in done.get("parts", [])]
    return (
        done.get("key") == job.key
        and (out / ".done" / f"{job.stem}{SKETCH_SUFFIX}").is_file()
        and all(f.is_file() and f.stat().st_size == p["bytes"] for f, p in zip(files, done["parts"]))
    )


def _outputs_by_stem(out: Path) -> dict[str, list[Path]]:
    """Input stem -> its parts (finished or not), done marker, sketch and rejects file."""
    found: dict[str, list[Path]] = defaultdict(list)
    for split in ("train", "valid", "eval"):
        for path in (out / split).glob("part-*"):
            if match := _PART_NAME.fullmatch(path.name):
                found[match.group(1)].append(path)
    for folder in (".done", "rejects"):  # stems have no dots: the name up to the first dot is the stem
        for path in (out / folder).glob("*"):
            found[path.name.split(".")[0]].append(path)
    return found


def _run_jobs(todo: list[FileJob], workers: int, progress: bool) -> int:
    """Run the jobs in this process or a pool, with a progress bar in input bytes; returns the bytes."""
    total_bytes = sum(os.path.getsize(j.path) for j in todo)
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    with tqdm(total=total_bytes, unit="B", unit_scale=True, disable=not progress, desc="prepare criteo") as bar:
        if workers <= 1:
            _init_worker(None, bar)
            try:
                for job in todo:
                    prepare_file(job)
            finally:
                _init_worker(None)
        else:
            counter = mp.get_context("spawn").Value("q", 0)
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
                results = pool.imap_unordered(prepare_file, todo)
                for _ in range(len(todo)):
                    while True:  # wake up twice a second to move the byte bar, even inside a 50 GB file
                        try:
                            results.next(timeout=0.5)
                            break
                        except mp.TimeoutError:
                            bar.update(counter.value - bar.n)
                    bar.update(counter.value - bar.n)
    return total_bytes


def _write_schema(jobs: list[FileJob], out: Path, command: str) -> DatasetSchema:
    rows, rejects = dict.fromkeys(jobs[0].splits if jobs else ("train", "eval"), 0), 0  # same splits in every job
    distinct = DistinctCounts(len(SPARSE_NAMES))
    for job in jobs:
        done = json.loads((out / ".done" / f"{job.stem}.json").read_text())
        rows = {s: rows[s] + done["rows"][s] for s in rows}
        rejects += done["rejects"]
        distinct.merge(DistinctCounts.from_array(np.load(out / ".done" / f"{job.stem}{SKETCH_SUFFIX}")))
    schema = DatasetSchema(
        dense=list(DENSE_NAMES),
        sparse=[SparseFeature(n, max(count, 1)) for n, count in zip(SPARSE_NAMES, distinct.estimates())],
        split_rows=rows,
        rejects=rejects,
        source="criteo tsv: " + ", ".join(j.path for j in jobs),
        command=command,
        extra={"cardinality": DESCRIPTION},
    )
    schema.save(out)
    return schema
