"""LightGBM and logistic-regression baselines on a prepared terarec dataset.

    python -m terarec.baselines.tabular --kind lightgbm --data DIR --output OUT [--seed S] [--max-train-rows N]
        [--valid-fraction F] [--params JSON]

Both read the same ``train``/``eval`` splits the models train and evaluate on, and are scored by
``terarec.trainer.metrics.BinaryMetrics`` (the code that scores the models), streamed over the whole
eval split. Features: the dense columns and every single-id sparse column; sequence and
multi-hot columns are not used, and ``metrics.json`` lists exactly what was.

- LightGBM: categoricals as LightGBM categories (codes of the train split's ids by frequency, at
  most ``max_categories`` per feature; an id not among them is missing), dense values raw (trees
  do not care about monotone transforms), nulls missing.
- Logistic regression (scikit-learn; whether it converged is in ``metrics.json``): one-hot
  categoricals (same codes, plus one "other" column per feature) and ``log1p`` dense, standardised.

Their settings (trees, leaves, C, iterations, ...) are ``terarec.configs.baselines``'s, which
``terarec compare`` also reports.

With ``--valid-fraction F`` (``compare --tune``) a baseline selects on validation rows: the last F of
the train split (the rows the trainer's ``data.valid_fraction`` carves, not trained on) or, with 0,
the dataset's ``valid`` split. LightGBM then grows up to ``LIGHTGBM_MAX_TREES`` trees and keeps the
number with the best valid logloss, and ``metrics.json`` records the valid metrics under ``valid``;
``--params JSON`` overrides its parameters (leaves, learning rate, min data in leaf, ...).

Training reads at most ``max_train_rows`` rows of the train split, in file (time) order, in memory;
how many were used is written to ``metrics.json`` and logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from terarec.configs.baselines import (
    LIGHTGBM_EARLY_STOP,
    LIGHTGBM_MAX_TREES,
    MAX_TRAIN_ROWS,
    LightGBMSettings,
    LogisticSettings,
)
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetError, DatasetSchema, dataset_files
from terarec.errors import UserArgumentParser, UserError, run_entry
from terarec.trainer.metrics import CALIBRATION_KEYS, BinaryMetrics

log = logging.getLogger("terarec")
KINDS = ("lightgbm", "logreg")
READ_BATCH = 262_144


@dataclass
class Columns:
    """One block of rows: ``dense`` ``B x D`` float64 (NaN = null), ``sparse`` ``B x F`` uint32 ids,
    ``labels`` ``B``."""

    dense: np.ndarray
    sparse: np.ndarray
    labels: np.ndarray


def feature_names(schema: DatasetSchema) -> tuple[list[str], list[str]]:
    return list(schema.dense), [s.name for s in schema.sparse if not s.multi_hot]


def read_blocks(directory: str, split: str, schema: DatasetSchema, max_rows: int = 0) -> Iterator[Columns]:
    """The split in blocks of up to ``READ_BATCH`` rows, in file order; ``max_rows`` > 0 stops there."""
    dense_names, sparse_names = feature_names(schema)
    remaining = max_rows if max_rows > 0 else None
    for path in dataset_files(directory, split):
        for batch in pq.ParquetFile(path).iter_batches(READ_BATCH, columns=[schema.label, *dense_names, *sparse_names]):
            if remaining is not None:
                if remaining <= 0:
                    return
                batch = batch.slice(0, remaining)
                remaining -= batch.num_rows
            dense = (
                np.stack([batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in dense_names], 1)
                if dense_names
                else np.zeros((batch.num_rows, 0))
            )
            sparse = (
                np.stack([batch.column(n).to_numpy().astype(np.uint32) for n in sparse_names], 1)
                if sparse_names
                else np.zeros((batch.num_rows, 0), np.uint32)
            )
            yield Columns(dense, sparse, batch.column(schema.label).to_numpy().astype(np.float64))


class CategoryCodes:
    """Per feature: the ``max_categories`` most frequent train ids -> codes 0..k-1 (0 = most
    frequent); any other id -> -1."""

    def __init__(self, sparse: np.ndarray, max_categories: int) -> None:
        self.ids: list[np.ndarray] = []  # kept ids, sorted (for searchsorted)
        self.codes: list[np.ndarray] = []  # the code of each sorted id
        for column in sparse.T:
            ids, counts = np.unique(column, return_counts=True)  # ids sorted
            order = np.argsort(-counts, kind="stable")[:max_categories]
            keep = np.sort(order)
            rank = np.empty(len(ids), dtype=np.int64)
            rank[order] = np.arange(len(order))
            self.ids.append(ids[keep])
            self.codes.append(rank[keep])
        self.sizes = [len(ids) for ids in self.ids]

    def encode(self, sparse: np.ndarray) -> np.ndarray:
        """``B x F`` ids -> ``B x F`` int64 codes (-1: not a kept id)."""
        out = np.full(sparse.shape, -1, dtype=np.int64)
        for j, column in enumerate(sparse.T):
            ids = self.ids[j]
            if len(ids) == 0:
                continue
            pos = np.clip(np.searchsorted(ids, column), 0, len(ids) - 1)
            hit = ids[pos] == column
            out[hit, j] = self.codes[j][pos[hit]]
        return out


def _concat(blocks: list[Columns]) -> Columns:
    return Columns(*(np.concatenate([getattr(b, f) for b in blocks]) for f in ("dense", "sparse", "labels")))


class LightGBMBaseline:
    """LightGBM on dense values (NaN = null) and category codes (NaN = unseen/rare).

    ``params`` (from ``compare --tune``) override the settings' leaves and learning rate and may add
    ``min_data_in_leaf`` / ``feature_fraction``; with a validation block, :meth:`fit` grows up to
    ``LIGHTGBM_MAX_TREES`` trees and keeps the number that scored best on it (early stopping)."""

    def __init__(
        self,
        seed: int,
        settings: LightGBMSettings | None = None,
        threads: int = 0,
        params: dict[str, Any] | None = None,
    ) -> None:
        settings = settings or LightGBMSettings()
        self.seed, self.num_trees, self.max_categories = seed, settings.num_trees, settings.max_categories
        self.params = {
            "objective": "binary",
            "learning_rate": settings.learning_rate,
            "num_leaves": settings.num_leaves,
            "seed": seed,
            "deterministic": True,
            "num_threads": threads,
            "verbose": -1,
            **(params or {}),
        }
        self.rounds_trained = 0  # boosting rounds run (each reads every train row once)

    def _matrix(self, block: Columns) -> np.ndarray:
        codes = self.codes.encode(block.sparse).astype(np.float64)
        codes[codes < 0] = np.nan  # LightGBM: missing category
        return np.hstack([block.dense, codes])

    def fit(self, train: Columns, valid: Columns | None = None) -> None:
        """Boost on ``train`` (categories coded by their frequency in ``train``); with ``valid``, stop
        early on its logloss, so the number of trees is chosen on validation rows, never on eval's."""
        import lightgbm

        self.codes = CategoryCodes(train.sparse, self.max_categories)
        categorical = list(range(train.dense.shape[1], train.dense.shape[1] + train.sparse.shape[1]))
        data = lightgbm.Dataset(self._matrix(train), train.labels, categorical_feature=categorical, free_raw_data=True)
        if valid is None:
            self.booster = lightgbm.train(self.params, data, num_boost_round=self.num_trees)
            self.rounds_trained = self.num_trees
            return
        held_out = lightgbm.Dataset(self._matrix(valid), valid.labels, reference=data)
        self.booster = lightgbm.train(
            {**self.params, "metric": "binary_logloss"},
            data,
            num_boost_round=LIGHTGBM_MAX_TREES,
            valid_sets=[held_out],
            callbacks=[lightgbm.early_stopping(LIGHTGBM_EARLY_STOP, verbose=False)],
        )
        self.rounds_trained = self.booster.current_iteration()

    def predict_logits(self, block: Columns) -> np.ndarray:
        best = self.booster.best_iteration or None  # early stopping: the best number of trees, else all
        logits: np.ndarray = np.asarray(self.booster.predict(self._matrix(block), raw_score=True, num_iteration=best))
        return logits

    def size(self) -> dict[str, int]:
        """Tree nodes as parameters; FLOPs/example as the comparisons of the deepest path of every tree."""
        trees = self.booster.dump_model(num_iteration=self.booster.best_iteration or None)["tree_info"]
        nodes = sum(2 * t["num_leaves"] - 1 for t in trees)
        return {
            "params_dense": nodes,
            "params_sparse": 0,
            "flops_per_example": sum(_depth(t["tree_structure"]) for t in trees),
            "trees": len(trees),
            "rounds_trained": self.rounds_trained,
        }


def _depth(node: dict[str, Any]) -> int:
    if "left_child" not in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


def _log1p_dense(dense: np.ndarray) -> np.ndarray:
    """The models' dense transform: nulls -> 0, then ``log(1 + max(x, 0))``."""
    return np.log1p(np.clip(np.nan_to_num(dense, nan=0.0), 0, None))


class LogisticBaseline:
    """L2 logistic regression (scikit-learn) on one-hot categories and standardised ``log1p`` dense."""

    def __init__(self, seed: int, settings: LogisticSettings | None = None) -> None:
        self.seed, self.settings = seed, settings or LogisticSettings()
        self.max_categories, self.max_iter = self.settings.max_categories, self.settings.max_iter

    def _matrix(self, block: Columns):  # -> scipy.sparse.csr_matrix
        import scipy.sparse as sp

        dense = (_log1p_dense(block.dense) - self.mean) / self.std
        codes = self.codes.encode(block.sparse)
        codes = (
            np.where(codes < 0, np.array(self.codes.sizes), codes) + self.offsets[:-1]
        )  # -1 -> the feature's "other" column
        rows = np.repeat(np.arange(len(codes)), codes.shape[1])
        onehot = sp.csr_matrix((np.ones(codes.size), (rows, codes.ravel())), shape=(len(codes), int(self.offsets[-1])))
        return sp.hstack([sp.csr_matrix(dense), onehot], format="csr")

    def fit(self, train: Columns) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        self.codes = CategoryCodes(train.sparse, self.max_categories)
        self.offsets = np.concatenate([[0], np.cumsum(np.array(self.codes.sizes) + 1)])
        dense = _log1p_dense(train.dense)
        self.mean, self.std = dense.mean(0), dense.std(0) + 1e-6
        self.model = LogisticRegression(
            C=self.settings.c, solver=self.settings.solver, max_iter=self.max_iter, random_state=self.seed
        )
        # not converging is reported in metrics.json (converged, n_iter), not as a warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(self._matrix(train), train.labels)
        self.n_iter = int(self.model.n_iter_[0])

    def predict_logits(self, block: Columns) -> np.ndarray:
        return self.model.decision_function(self._matrix(block))

    def size(self) -> dict[str, Any]:
        features = self.model.coef_.shape[1]
        nonzero_inputs = len(self.mean) + len(self.codes.sizes)  # dense values + one active column per feature
        return {
            "params_dense": features + 1,
            "params_sparse": 0,
            "flops_per_example": 2 * nonzero_inputs,
            "n_iter": self.n_iter,
            "converged": self.n_iter < self.max_iter,
        }


def _rows(block: Columns, first: int, end: int) -> Columns:
    return Columns(block.dense[first:end], block.sparse[first:end], block.labels[first:end])


def read_train_valid(
    data: str, schema: DatasetSchema, max_train_rows: int, valid_fraction: float | None
) -> tuple[Columns, Columns | None, int]:
    """(train rows, validation rows or None, train rows available). ``valid_fraction`` None: no
    validation (every train row trains); > 0: the last fraction of the train split, the rows the
    trainer's ``data.valid_fraction`` carves (``round(N * (1 - f))`` on), so the deep models and the
    baseline select on the same rows; 0: the dataset's ``valid`` split."""
    available = schema.split_rows.get("train", 0)
    if valid_fraction is None:
        return _concat(list(read_blocks(data, "train", schema, max_train_rows))), None, available
    if valid_fraction > 0:
        return _carve(data, schema, max_train_rows, valid_fraction)
    if schema.split_rows.get("valid", 0) <= 0:
        raise DatasetError(f"{data} has no valid split: prepare it with --valid-fraction or pass a valid fraction")
    train = _concat(list(read_blocks(data, "train", schema, max_train_rows)))
    return train, _concat(list(read_blocks(data, "valid", schema))), available


def _carve(
    data: str, schema: DatasetSchema, max_train_rows: int, valid_fraction: float
) -> tuple[Columns, Columns, int]:
    """The train split streamed once: rows ``[0, min(keep, max_train_rows))`` train and ``[keep, N)``
    validate, ``keep = round(N * (1 - valid_fraction))``; the rows in between are never held in memory
    (``max_train_rows`` bounds the memory of the train part, as without a validation carve)."""
    total = schema.split_rows.get("train", 0)
    if total <= 0:  # schema.json without a count: count the rows (parquet metadata, no data read)
        total = sum(pq.ParquetFile(path).metadata.num_rows for path in dataset_files(data, "train"))
    keep = round(total * (1.0 - valid_fraction))
    train_end = min(keep, max_train_rows) if max_train_rows > 0 else keep
    train, valid, first, empty = [], [], 0, None
    for block in read_blocks(data, "train", schema):
        end, empty = first + len(block.labels), _rows(block, 0, 0)
        if first < train_end:
            train.append(_rows(block, 0, train_end - first))
        if end > keep:
            valid.append(_rows(block, max(keep - first, 0), len(block.labels)))
        first = end
    if empty is None:
        raise DatasetError(f"{data}/train has no rows")
    return _concat(train or [empty]), _concat(valid or [empty]), keep


def _score(
    model: LightGBMBaseline | LogisticBaseline, blocks: Iterator[Columns]
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The metrics of ``model`` on ``blocks`` and their reliability bins."""
    import torch

    metrics = BinaryMetrics()
    for block in blocks:
        metrics.update(torch.from_numpy(model.predict_logits(block)), torch.from_numpy(block.labels))
    return metrics.compute(), metrics.reliability()


def run_baseline(
    kind: str,
    data: str,
    seed: int = 0,
    max_train_rows: int = MAX_TRAIN_ROWS,
    valid_fraction: float | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``kind`` on the train split, score the whole eval split; the metrics dict. With
    ``valid_fraction`` (see :func:`read_train_valid`) LightGBM stops early on the validation rows,
    whose metrics are recorded under ``valid`` (model selection reads those, never eval's)."""
    if kind not in KINDS:
        raise DatasetError(f"unknown baseline '{kind}' (choose from {', '.join(KINDS)})")
    schema = DatasetSchema.load(data)
    dense_names, sparse_names = feature_names(schema)
    start = time.perf_counter()
    train, valid, available = read_train_valid(data, schema, max_train_rows, valid_fraction)
    if len(train.labels) == 0:
        raise DatasetError(f"{data}/train has no rows")
    if len(train.labels) < available:
        log.warning(
            "%s: trained on the first %d of %d train rows (--max-train-rows)", kind, len(train.labels), available
        )
    model = LightGBMBaseline(seed, params=params) if kind == "lightgbm" else LogisticBaseline(seed)
    fit_start = time.perf_counter()
    model.fit(train, valid) if isinstance(model, LightGBMBaseline) else model.fit(train)
    fit_s = time.perf_counter() - fit_start
    selection = {} if valid is None else {"valid": _selected(_score(model, iter([valid]))[0])}
    scores, reliability = _score(model, read_blocks(data, "eval", schema))  # the whole eval split, streamed
    unused = [s.name for s in schema.sparse if s.multi_hot] + [s.name for s in schema.sequence]
    return {
        **{k: scores[k] for k in ("auc", "logloss", "ne", "calibration", *CALIBRATION_KEYS)},
        "reliability": reliability,  # as the models' metrics.json: compare plots both alike
        "eval_rows": scores["count"],
        "eval_positives": scores["positives"],
        **model.size(),
        **selection,
        "samples": len(train.labels),
        "train_rows_available": available,
        "samples_per_s": len(train.labels) / max(fit_s, 1e-9),
        "wall_s": time.perf_counter() - start,
        "features": {"dense": dense_names, "categorical": sparse_names, "unused": unused},
        "seed": seed,
        "kind": kind,
        "data": str(Path(data).resolve()),
        "dataset_fingerprint": dataset_fingerprint(data),  # compare reuses results of this data only
        "max_train_rows": max_train_rows,
        **({} if valid_fraction is None else {"valid_fraction": valid_fraction}),
        **({} if params is None else {"params": params}),
    }


def _selected(scores: dict[str, float]) -> dict[str, float]:
    return {k: float(scores[k]) for k in ("auc", "logloss", "ne", "calibration", "count")}


def main(argv: list[str] | None = None) -> int:
    """``python -m terarec.baselines.tabular`` (what ``terarec compare`` runs), inside the one error boundary."""
    return run_entry(_baseline_entry, argv)


def _fraction(text: str) -> float:
    """``--valid-fraction``: a float in [0, 1) (1 or more would validate on the rows it trains on)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _json_object(text: str) -> dict[str, Any]:
    """``--params``: a JSON object (LightGBM's parameters by name)."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object of LightGBM parameters")
    return value


def _baseline_entry(argv: list[str] | None) -> None:
    parser = UserArgumentParser(prog="python -m terarec.baselines.tabular", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--data", required=True, metavar="DIR")
    parser.add_argument("--output", required=True, metavar="DIR", help="writes DIR/metrics.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-rows", type=int, default=MAX_TRAIN_ROWS)
    parser.add_argument(
        "--valid-fraction",
        type=_fraction,
        metavar="F",
        help="select on validation rows: the last F of train (> 0) or the dataset's valid split (0)",
    )
    parser.add_argument(
        "--params", type=_json_object, metavar="JSON", help="LightGBM parameters, e.g. from compare --tune"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        result = run_baseline(args.kind, args.data, args.seed, args.max_train_rows, args.valid_fraction, args.params)
    except (UserError, ImportError) as err:  # a missing optional library is the user's to install
        raise UserError(f"{args.kind}: {err}") from err
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info(
        "%s: auc %.4f logloss %.4f on %d eval rows", args.kind, result["auc"], result["logloss"], result["eval_rows"]
    )


if __name__ == "__main__":
    sys.exit(main())
