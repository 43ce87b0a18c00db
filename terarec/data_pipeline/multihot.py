"""``terarec prepare multihot``: MLPerf DLRMv2's synthetic multi-hot Criteo 1TB, from a prepared one-hot dataset.

Reproduces ``torchrec_dlrm/scripts/materialize_synthetic_multihot_dataset.py`` with its ``Multihot`` lookup
tables (``torchrec_dlrm/multi_hot.py``), as read at facebookresearch/dlrm commit
0422268b3310321ab42d3e8bbfa007b24c663ac0 (the MLPerf reference, mlcommons/training
``recommendation_v2/torchrec_dlrm``, runs the same script with the sizes of the ``mlperf`` preset):

- one lookup table per sparse feature ``j`` with ``n_j`` rows (``--num_embeddings_per_feature``) and
  ``s_j`` columns (``--multi_hot_sizes``): row ``i`` is ``[i, r_1 .. r_{s_j - 1}]``;
- the ``r`` come from numpy's legacy global generator seeded once with ``np.random.seed(0)``, table after
  table in feature order: ``randint(0, n_j, size=(n_j, s_j - 1))`` (``uniform``), or
  ``pareto(a=0.25, size=(n_j, s_j - 1)).astype(int32) % n_j`` (``pareto``); cast to int32;
- a row's bag for feature ``j`` is table row ``one_hot_id % n_j`` (``nn.functional.embedding``).

Here the tables are drawn in row chunks from ``RandomState(0)`` (the same stream: the legacy generator keeps
no state between calls beyond MT19937's, so chunked draws equal one draw), appended to ``.npy`` files and
read back through mmap, so memory stays bounded (the 26 MLPerf tables hold 5.8e9 int32 draws, 23 GB on
disk, about 5.5 minutes of one core to draw; the reference keeps them in RAM). The ids are then bit-for-bit
the reference's for the same one-hot ids. One difference of input, not algorithm: MLPerf's one-hot ids are
the contiguous ids of torchrec's preprocessing, terarec's are the raw 32-bit Criteo ids; both are reduced
``% n_j`` the same way. A lookup into a table of 40M rows reads pages of the mapped file at random: the page
cache, not the process, holds them.

Parts are converted independently (``--workers`` processes), each input part into the part of the same
name, so the output is identical whatever the worker count. The output is a dataset like any other:
schema.json (``multi_hot`` features of cardinality ``n_j``) and a manifest recording the input dataset's
fingerprint and every option.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from terarec.data_pipeline.criteo_layout import (
    CRITEO_1TB_CARDINALITIES,
    MLPERF_MULTI_HOT_SIZES,
    MULTIHOT_DISTRIBUTIONS,
    MULTIHOT_PRESETS,
    SPARSE_NAMES,
)
from terarec.data_pipeline.manifest import DatasetManifest, PartFile, dataset_fingerprint, start_build
from terarec.data_pipeline.parquet_io import ROW_GROUP_ROWS
from terarec.data_pipeline.schema import DatasetError, DatasetSchema, SparseFeature

DISTRIBUTIONS = MULTIHOT_DISTRIBUTIONS
PARETO_SHAPE = 0.25  # the reference's ``np.random.pareto(a=0.25, ...)``
REFERENCE_SEED = 0  # the reference's ``np.random.seed(0)``
DRAW_VALUES = 1 << 22  # values per chunked draw while building a table (32 MB of int64)
TABLES_DIR = ".multihot_tables"  # inside the build; removed when the dataset is complete
MULTIHOT_FORMAT = 1  # bump when the output of the same options changes
PRESETS = {"mlperf": (tuple(MLPERF_MULTI_HOT_SIZES), tuple(CRITEO_1TB_CARDINALITIES), "uniform")}
assert tuple(PRESETS) == MULTIHOT_PRESETS  # the CLI lists MULTIHOT_PRESETS


@dataclass(frozen=True)
class MultiHotSpec:
    """Bag sizes ``s_j``, table rows ``n_j`` and the distribution of the synthetic ids."""

    sizes: tuple[int, ...]
    num_embeddings: tuple[int, ...]
    distribution: str = "uniform"

    @classmethod
    def preset(cls, name: str, max_embeddings: int | None = None, distribution: str | None = None) -> MultiHotSpec:
        """A preset; ``max_embeddings`` caps every ``n_j`` (small rehearsals of the MLPerf layout)."""
        if name not in PRESETS:
            raise DatasetError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
        if max_embeddings is not None and max_embeddings < 1:
            raise DatasetError(f"--max-embeddings must be >= 1, got {max_embeddings}")
        sizes, rows, default = PRESETS[name]
        capped = tuple(min(n, max_embeddings) if max_embeddings else n for n in rows)
        spec = cls(sizes, capped, distribution or default)
        if spec.distribution not in DISTRIBUTIONS:
            raise DatasetError(f"--distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
        return spec

    def options(self) -> dict[str, Any]:
        """The manifest's record of the spec (a rerun with other options is refused or rebuilt)."""
        return {
            "multihot format": MULTIHOT_FORMAT,
            "bag sizes (--preset)": list(self.sizes),
            "table rows (--preset, --max-embeddings)": list(self.num_embeddings),
            "--distribution": self.distribution,
        }


def draw_table_chunk(rng: np.random.RandomState, rows: int, spec: MultiHotSpec, table: int) -> np.ndarray:
    """The next ``rows`` rows of table ``table``'s synthetic columns (shape (rows, s_j - 1), int32),
    drawn exactly as the reference draws them (its chunks concatenated equal its single draw)."""
    n, width = spec.num_embeddings[table], spec.sizes[table] - 1
    if spec.distribution == "uniform":
        return rng.randint(0, n, size=(rows, width)).astype(np.int32)
    with np.errstate(invalid="ignore"):  # the reference's cast of draws beyond int32 (-> INT32_MIN on x86)
        return (rng.pareto(a=PARETO_SHAPE, size=(rows, width)).astype(np.int32) % n).astype(np.int32)


def build_tables(spec: MultiHotSpec, directory: Path, progress: bool = False) -> None:
    """Write table ``j``'s synthetic columns to ``directory/table_{j}.npy`` (tables of bag size 1 draw
    nothing, in the reference too): one pass over the seeded stream, appended to the files chunk by chunk,
    so memory stays at one chunk (DRAW_VALUES). The stream is sequential: about 57 ns a value on one core
    here, 5.5 minutes for the MLPerf tables."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(REFERENCE_SEED)
    total = sum(n * (size - 1) for n, size in zip(spec.num_embeddings, spec.sizes))
    with tqdm(total=total, unit="ids", unit_scale=True, disable=not progress, desc="multihot tables") as bar:
        for j, (n, size) in enumerate(zip(spec.num_embeddings, spec.sizes)):
            if size == 1:
                continue
            tmp = directory / f"table_{j}.npy.tmp"
            with open(tmp, "wb") as fh:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int32)), "fortran_order": False}
                np.lib.format.write_array_header_1_0(fh, {**header, "shape": (n, size - 1)})
                step = max(1, DRAW_VALUES // (size - 1))
                for start in range(0, n, step):
                    rows = min(step, n - start)
                    fh.write(draw_table_chunk(rng, rows, spec, j).tobytes())
                    bar.update(rows * (size - 1))
            os.replace(tmp, directory / f"table_{j}.npy")


def multi_hot_bags(one_hot: np.ndarray, table: np.ndarray | None, n: int) -> np.ndarray:
    """One-hot ids (shape (rows,)) -> bags (shape (rows, s_j), uint32): ``[id % n, table[id % n]...]``."""
    first = (one_hot.astype(np.int64) % n).astype(np.uint32)
    if table is None:
        return first[:, None]
    return np.concatenate([first[:, None], table[first].astype(np.uint32)], axis=1)


# Per process: (tables directory, spec) -> its mmapped tables. The directory name repeats (every
# --overwrite builds in ``<out>.tmp-<pid>``), so the spec is part of the key and the builder drops the
# entry when it removes the directory (:func:`_release_tables`).
_TABLES: dict[tuple[str, MultiHotSpec], list[np.ndarray | None]] = {}


def _tables(directory: str, spec: MultiHotSpec) -> list[np.ndarray | None]:
    key = (directory, spec)
    if key not in _TABLES:
        _TABLES[key] = [
            np.load(Path(directory) / f"table_{j}.npy", mmap_mode="r") if size > 1 else None
            for j, size in enumerate(spec.sizes)
        ]
    return _TABLES[key]


def _release_tables(directory: Path) -> None:
    """Forget this process's maps of the tables in ``directory`` and remove it."""
    for key in [key for key in _TABLES if key[0] == str(directory)]:
        del _TABLES[key]
    shutil.rmtree(directory, ignore_errors=True)


def convert_batch(batch: pa.RecordBatch, spec: MultiHotSpec, tables: list[np.ndarray | None]) -> pa.Table:
    """A one-hot batch -> the same rows with every sparse column a ``list<uint32>`` bag."""
    columns, names = [], []
    for name in batch.schema.names:
        column = batch.column(name)
        if name in SPARSE_NAMES:
            j = SPARSE_NAMES.index(name)
            bags = multi_hot_bags(column.to_numpy(zero_copy_only=False), tables[j], spec.num_embeddings[j])
            offsets = pa.array(np.arange(0, bags.size + 1, spec.sizes[j], dtype=np.int32))
            column = pa.ListArray.from_arrays(offsets, pa.array(bags.reshape(-1)))
        columns.append(column)
        names.append(name)
    return pa.table(columns, names=names)


def convert_part(job: tuple[str, str, str, MultiHotSpec]) -> tuple[str, int]:
    """Convert one input part into the output part of the same name (``.tmp`` until complete)."""
    source, target, tables_dir, spec = job
    tables = _tables(tables_dir, spec)
    tmp = Path(target + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    rows = 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=ROW_GROUP_ROWS):
        table = convert_batch(batch, spec, tables)
        writer = writer or pq.ParquetWriter(tmp, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        rows += table.num_rows
    if writer is None:
        raise DatasetError(f"{source} holds no rows")
    writer.close()
    os.replace(tmp, target)
    return target, rows


def prepare_multihot(
    source: str | Path,
    output: str | Path,
    spec: MultiHotSpec,
    workers: int = 0,
    progress: bool = True,
    command: str = "",
    overwrite: bool = False,
) -> DatasetSchema:
    """Materialise the multi-hot dataset of the prepared one-hot dataset ``source`` into ``output``."""
    if Path(source).resolve() == Path(output).resolve():
        raise DatasetError(f"--output {output} is the --input dataset: write the multi-hot dataset beside it")
    schema, parts, fingerprint = _one_hot_input(source, spec)
    if workers < 0:
        raise DatasetError(f"--workers must be >= 0, got {workers}")
    options = {"--input-fingerprint": fingerprint, **spec.options()}
    with start_build(output, DatasetManifest("multihot", [], options), overwrite) as build:
        if build.up_to_date:
            print(f"multihot: {output} already holds this dataset; nothing to do")
            return DatasetSchema.load(output)
        build.clear_parts()  # not resumable: an unfinished attempt starts over
        tables = build.directory / TABLES_DIR
        build_tables(spec, tables, progress)
        jobs = [(str(Path(source) / p), str(build.directory / p), str(tables), spec) for p in parts]
        try:
            done = _run(jobs, workers or os.cpu_count() or 1, progress)
        finally:
            _release_tables(tables)
        out_schema = _schema(schema, spec, fingerprint, str(source), command)
        out_schema.save(build.directory)
        build.commit([PartFile.of(Path(path), build.directory, rows) for path, rows in done])
    return out_schema


def _one_hot_input(source: str | Path, spec: MultiHotSpec) -> tuple[DatasetSchema, list[str], str]:
    """The input's schema, part paths and fingerprint; it must be a complete one-hot Criteo dataset."""
    schema = DatasetSchema.load(source)
    fingerprint = dataset_fingerprint(source)
    manifest = DatasetManifest.load(source)
    if fingerprint is None or manifest is None:
        raise DatasetError(f"{source} has no manifest.json: re-prepare it (with --overwrite) so its identity is known")
    if [f.name for f in schema.sparse] != SPARSE_NAMES or any(f.multi_hot for f in schema.sparse):
        raise DatasetError(f"{source} is not a one-hot Criteo dataset (26 one-hot features cat_0..cat_25)")
    if len(spec.sizes) != len(SPARSE_NAMES) or len(spec.num_embeddings) != len(SPARSE_NAMES):
        raise DatasetError(f"a multi-hot spec needs {len(SPARSE_NAMES)} sizes and table sizes")
    return schema, [p.path for p in manifest.parts], fingerprint


def _run(jobs: list[tuple[str, str, str, MultiHotSpec]], workers: int, progress: bool) -> list[tuple[str, int]]:
    """Every part, in one process or a pool (the parts do not depend on each other)."""
    done: list[tuple[str, int]] = []
    with tqdm(total=len(jobs), unit="parts", disable=not progress, desc="multihot") as bar:
        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                done.append(convert_part(job))
                bar.update(1)
            return done
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for result in pool.imap(convert_part, jobs):
                done.append(result)
                bar.update(1)
    return done


def _schema(one_hot: DatasetSchema, spec: MultiHotSpec, fingerprint: str, source: str, command: str) -> DatasetSchema:
    return DatasetSchema(
        dense=list(one_hot.dense),
        sparse=[SparseFeature(name, n, True) for name, n in zip(SPARSE_NAMES, spec.num_embeddings)],
        label=one_hot.label,
        split_rows=dict(one_hot.split_rows),
        source=f"multi-hot ({spec.distribution}, MLPerf DLRMv2 materialisation) of {source}",
        command=command,
        extra={
            "multi_hot_sizes": list(spec.sizes),
            "num_embeddings": list(spec.num_embeddings),
            "distribution": spec.distribution,
            "input_fingerprint": fingerprint,
            "reference": "torchrec_dlrm/scripts/materialize_synthetic_multihot_dataset.py (facebookresearch/dlrm "
            "0422268b3310321ab42d3e8bbfa007b24c663ac0), seed 0",
        },
    )
