"""Synthetic Criteo-shaped data: real cardinalities, Zipf ids, heavy-tailed dense, planted labels.

Labels come from a fixed logistic model with main effects, sparse x sparse crosses and a dense x
sparse cross, so a model that learns embeddings and interactions shows it in AUC. Rows are made in
chunks of ``CHUNK_ROWS`` from a per-chunk seeded generator: the output is the same for a seed, and
memory is bounded whatever ``rows`` is. ``labels="testbed"`` swaps the planted model for a fixed random
teacher with structure at many interaction orders and writes the eval split's Bayes logloss and AUC
(``testbed.py``). The output directory is claimed by a manifest
(``manifest.py``): synth never writes into a directory that holds another dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from terarec.data_pipeline import testbed
from terarec.data_pipeline.criteo_layout import (
    DENSE_NAMES,
    LABEL,
    MLPERF_MULTI_HOT_SIZES,
    PRESETS,
    SPARSE_NAMES,
    SYNTH_LABEL_MODES,
)
from terarec.data_pipeline.hashing import splitmix64
from terarec.data_pipeline.manifest import DatasetManifest, PartFile, start_build
from terarec.data_pipeline.parquet_io import PartWriter
from terarec.data_pipeline.schema import DatasetError, DatasetSchema, SparseFeature
from terarec.data_pipeline.splits import check_eval_fraction, check_valid_fraction

CHUNK_ROWS = 131072
ROWS_PER_FILE = 1 << 20
ZIPF_EXPONENT = 1.1
TARGET_CTR = 0.25
# Planted model: which features carry signal (low-cardinality pairs make crosses learnable).
MAIN_EFFECTS = {0: 0.6, 1: 0.5, 2: 0.5, 3: 0.4, 8: 0.6, 12: 0.5, 16: 0.5, 24: 0.4, 25: 0.5}
CROSSES = [(5, 8, 0.8), (12, 16, 0.8), (18, 25, 0.7)]
DENSE_WEIGHTS = {0: 0.35, 2: -0.3, 5: 0.25, 10: 0.3}
DENSE_X_SPARSE = (1, 5, 0.5)  # z_1 * effect(cat_5): a dense-sparse interaction
LABEL_MODES = SYNTH_LABEL_MODES
PILOT_ROWS = 65536

LabelModel = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]  # (dense log1p, first ids) -> logit


@dataclass(frozen=True)
class SynthSpec:
    preset: str = "criteo-1tb"
    rows: int = 100_000
    multi_hot: bool = False
    seed: int = 0
    eval_fraction: float = 0.1
    valid_fraction: float = 0.0  # of all rows, written to valid/ between train and eval (row = time order)
    labels: str = "planted"  # LABEL_MODES: the planted logistic model, or the testbed teacher

    @property
    def cardinalities(self) -> list[int]:
        return PRESETS[self.preset]

    @property
    def bag_sizes(self) -> list[int]:
        return MLPERF_MULTI_HOT_SIZES if self.multi_hot else [1] * len(SPARSE_NAMES)


def hashed_effect(ids: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random unit-variance effect per id (splitmix64 of ``id ^ salt``)."""
    z = splitmix64(ids, salt)
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    effect: np.ndarray = (uniform * 2.0 - 1.0) * np.sqrt(3.0)
    return effect


def zipf_ids(rng: np.random.Generator, cardinality: int, size: int) -> np.ndarray:
    """Ids in [0, cardinality) with P(id = r - 1) proportional to r^-s (bounded Zipf, inverse CDF)."""
    s = ZIPF_EXPONENT
    u = rng.random(size)
    top = float(cardinality) ** (1.0 - s)
    ranks = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - s))
    ids: np.ndarray = np.minimum(ranks.astype(np.int64) - 1, cardinality - 1).astype(np.uint32)
    return ids


def _dense(rng: np.random.Generator, rows: int) -> tuple[list[pa.Array], np.ndarray]:
    """Heavy-tailed non-negative counts (log-normal), ~10% nulls; returns arrays and log1p values."""
    arrays, transformed = [], np.zeros((rows, len(DENSE_NAMES)))
    for i in range(len(DENSE_NAMES)):
        values = np.floor(np.exp(rng.normal(1.0 + 0.25 * i, 1.2, rows))).astype(np.int64)
        missing = rng.random(rows) < 0.1
        transformed[:, i] = np.where(missing, 0.0, np.log1p(values))
        arrays.append(pa.array(values, mask=missing))
    return arrays, transformed


def _sparse(rng: np.random.Generator, spec: SynthSpec, rows: int) -> tuple[list[pa.Array], list[np.ndarray]]:
    arrays, first_ids = [], []
    for cardinality, bag in zip(spec.cardinalities, spec.bag_sizes):
        ids = zipf_ids(rng, cardinality, rows * bag)
        first_ids.append(ids[::bag])
        if spec.multi_hot:
            offsets = np.arange(0, rows * bag + 1, bag, dtype=np.int32)
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)))
        else:
            arrays.append(pa.array(ids))
    return arrays, first_ids


def planted_logit(dense_z: np.ndarray, first_ids: list[np.ndarray]) -> np.ndarray:
    """The label model (before the bias): what a good CTR model should recover."""
    centred = (dense_z - 2.5) / 1.5
    logit: np.ndarray = np.zeros(len(dense_z))
    logit = logit + sum(w * centred[:, i] for i, w in DENSE_WEIGHTS.items())
    logit = logit + sum(w * hashed_effect(first_ids[f], 100 + f) for f, w in MAIN_EFFECTS.items())
    for a, b, w in CROSSES:
        pair = first_ids[a].astype(np.uint64) * np.uint64(1_000_003) + first_ids[b]
        logit = logit + w * hashed_effect(pair, 200 + a)
    d, f, w = DENSE_X_SPARSE
    planted: np.ndarray = logit + w * centred[:, d] * hashed_effect(first_ids[f], 300 + f)
    return planted


def make_chunk(
    spec: SynthSpec, chunk: int, rows: int, bias: float, model: LabelModel = planted_logit
) -> tuple[pa.Table, list[np.ndarray], np.ndarray]:
    """Rows ``chunk * CHUNK_ROWS ...``: the table, the first id of each sparse column and the true
    logit (bias included, shape (rows,)) the labels were drawn from."""
    rng = np.random.default_rng([spec.seed, chunk])
    dense_arrays, dense_z = _dense(rng, rows)
    sparse_arrays, first_ids = _sparse(rng, spec, rows)
    logit = model(dense_z, first_ids) + bias
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    columns = [pa.array(labels), *dense_arrays, *sparse_arrays]
    return pa.table(columns, names=[LABEL, *DENSE_NAMES, *SPARSE_NAMES]), first_ids, logit


def pilot_sample(spec: SynthSpec) -> tuple[np.ndarray, list[np.ndarray]]:
    """A fixed pilot draw (dense log1p values, first ids) apart from the data's chunks."""
    rng = np.random.default_rng([spec.seed, 2**31])
    _, dense_z = _dense(rng, PILOT_ROWS)
    _, first_ids = _sparse(rng, spec, PILOT_ROWS)
    return dense_z, first_ids


Pilot: TypeAlias = tuple[np.ndarray, list[np.ndarray]]  # what pilot_sample draws


def label_model(spec: SynthSpec, pilot: Pilot | None = None) -> LabelModel:
    """The logit model of ``spec.labels``; the testbed teacher is standardised on the pilot sample
    (``pilot``: :func:`pilot_sample`'s draw, when the caller has it already)."""
    if spec.labels == "planted":
        return planted_logit
    sample = pilot if pilot is not None else pilot_sample(spec)
    return testbed.build_teacher(spec.seed, testbed.sparse_inputs(spec.cardinalities), *sample)


def calibrate_bias(spec: SynthSpec, model: LabelModel = planted_logit, pilot: Pilot | None = None) -> float:
    """Bias that puts the mean predicted CTR at TARGET_CTR, solved on a fixed pilot chunk."""
    logit = model(*(pilot if pilot is not None else pilot_sample(spec)))
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(logit + mid)))) < TARGET_CTR else (lo, mid)
    return (lo + hi) / 2


def write_synthetic(
    spec: SynthSpec, output: str | Path, progress: bool = True, command: str = "", overwrite: bool = False
) -> DatasetSchema:
    """Stream ``spec.rows`` rows to ``output/{train,valid,eval}/part-*.parquet`` (valid only with a
    ``valid_fraction``), write schema.json, then the manifest. A re-run of the same spec into a complete
    dataset does nothing; ``overwrite`` builds beside ``output`` and swaps the new dataset in when it is
    complete."""
    if spec.rows <= 0:
        raise DatasetError(f"--rows must be positive, got {spec.rows}")
    check_eval_fraction(spec.eval_fraction)
    check_valid_fraction(spec.valid_fraction, spec.eval_fraction)
    if spec.labels not in LABEL_MODES:
        raise DatasetError(f"--labels must be one of {', '.join(LABEL_MODES)}, got {spec.labels!r}")
    options = {
        "--preset": spec.preset,
        "--rows": spec.rows,
        "--multi-hot": spec.multi_hot,
        "--seed": spec.seed,
        "--eval-fraction": float(spec.eval_fraction),
        # recorded only when used: datasets built before the option existed keep their identity
        **({"--valid-fraction": float(spec.valid_fraction)} if spec.valid_fraction > 0 else {}),
        **({"--labels": spec.labels} if spec.labels != "planted" else {}),
        # a dataset of another teacher is another dataset (its labels differ)
        **({"teacher_version": testbed.TEACHER_VERSION} if spec.labels == "testbed" else {}),
    }
    with start_build(output, DatasetManifest("synth", [], options), overwrite) as build:
        if build.up_to_date:
            print(f"synth: {output} already holds this dataset; nothing to do")
            return DatasetSchema.load(output)
        build.clear_parts()  # synth is not resumable: an unfinished attempt starts over
        schema, parts = _write_rows(spec, build.directory, progress, command)
        build.commit(parts)
    return schema


def _write_rows(spec: SynthSpec, out: Path, progress: bool, command: str) -> tuple[DatasetSchema, list[PartFile]]:
    pilot = pilot_sample(spec)  # one draw serves the teacher's standardisation and the bias
    model = label_model(spec, pilot)
    bias = calibrate_bias(spec, model, pilot)
    eval_rows = int(round(spec.rows * spec.eval_fraction))
    valid_rows = int(round(spec.rows * spec.valid_fraction))
    train_rows = spec.rows - eval_rows - valid_rows
    split_rows = {"train": train_rows, **({"valid": valid_rows} if valid_rows else {}), "eval": eval_rows}
    table_schema = make_chunk(spec, 0, 1, bias, model)[0].schema
    writers = {s: PartWriter(out / s, table_schema, ROWS_PER_FILE) for s in split_rows}
    observed_max = np.zeros(len(SPARSE_NAMES), dtype=np.int64)
    bayes = testbed.BayesAccumulator()  # every label model's eval-split Bayes numbers
    done = 0
    with tqdm(total=spec.rows, unit="rows", unit_scale=True, disable=not progress, desc="synth") as bar:
        for chunk in range((spec.rows + CHUNK_ROWS - 1) // CHUNK_ROWS):
            rows = min(CHUNK_ROWS, spec.rows - done)
            table, first_ids, logit = make_chunk(spec, chunk, rows, bias, model)
            observed_max = np.maximum(observed_max, [ids.max() for ids in first_ids])
            start = 0
            for split, end in zip(split_rows, np.cumsum(list(split_rows.values()))):  # train | valid | eval
                cut = min(max(int(end) - done, 0), rows)  # this chunk's rows before the split's end
                if cut > start:
                    writers[split].write(table.slice(start, cut - start))
                    if split == "eval":
                        bayes.add(logit[start:cut], table[LABEL].to_numpy()[start:cut])
                    start = cut
            done += rows
            bar.update(rows)
    for writer in writers.values():
        writer.close()
    # what made the labels (a testbed's teacher constants) and the eval split's Bayes numbers
    described = testbed.describe(model, *pilot) if isinstance(model, testbed.Teacher) else {}
    schema = _schema(spec, split_rows, bias, command, observed_max, {**described, **bayes.result()})
    schema.save(out)
    return schema, [p for w in writers.values() for p in w.parts]


def _schema(
    spec: SynthSpec,
    split_rows: dict[str, int],
    bias: float,
    command: str,
    observed_max: np.ndarray,
    labels: dict[str, object],
) -> DatasetSchema:
    """schema.json; it records the label model's bias and the eval split's Bayes numbers (the true
    logits scored against the drawn labels) under ``planted`` or ``testbed`` (with the teacher's
    constants), so a model's share of the learnable gap, (AUC - 0.5) / (Bayes AUC - 0.5), needs no rerun."""
    extra: dict[str, object] = {
        "seed": spec.seed,
        "multi_hot_sizes": spec.bag_sizes,
        "observed_max_id": observed_max.tolist(),
    }
    label_source = "testbed teacher" if spec.labels == "testbed" else "planted logistic model"
    extra[spec.labels] = {**labels, "bias": bias}
    return DatasetSchema(
        dense=list(DENSE_NAMES),
        sparse=[SparseFeature(n, int(c), spec.multi_hot) for n, c in zip(SPARSE_NAMES, spec.cardinalities)],
        split_rows=split_rows,
        source=f"synthetic {spec.preset} (Zipf s={ZIPF_EXPONENT}, {label_source}, bias {bias:.4f})",
        command=command,
        extra=extra,
    )
