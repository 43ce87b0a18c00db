"""The export directory: an unsharded single-process model, its feature transform and a manifest.

    DIR/model.pt        the whole model module (``torch.save``), embedding tables quantized per dtype
    DIR/manifest.json   format, model, flavor, dtype, source checkpoint, dataset schema, table sizes,
                        the feature transform (written last: a directory without it is incomplete),
                        with ``terarec export --calibrated`` the run's calibrator (``calibration``:
                        ``calibrator``, ``fitted_step``, ``data``, ``dataset_fingerprint``)

Format, after trying both candidates on this stack (torch 2.13, torchrec 1.8, fbgemm-gpu-cpu 1.8):

- ``torch.export.export`` of a whole model (float or quantized) fails: an fbgemm script object
  (``fbgemm::AtomicCounter``) inside torchrec's embedding modules has no fake class to trace with.
- TorchScript (``torch.jit.script``) fails on torchrec's float and quantized embedding collections
  ("Can't redefine method: __device_getter"); only the plain MLP arches script.

Splitting every model into a scripted dense part and eager embeddings would need a per-model cut
(BST's interaction reads a dict of jagged tensors), so the export saves the whole module with
``torch.save`` and :func:`load` reads it back with ``weights_only=False``: an export is code, load
only exports you trust. The dense part stays float32; fp16/int8 apply to the embedding tables
(``torchrec.inference.modules.quantize_inference_model``: EmbeddingBagCollection ->
QuantEmbeddingBagCollection, EmbeddingCollection -> QuantEmbeddingCollection, for BST).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from torchrec.inference.modules import quantize_inference_model

from terarec.configs.arguments import EXPORT_DTYPES
from terarec.data_pipeline.schema import DatasetSchema, dataset_files
from terarec.errors import UserError
from terarec.serving.calibrated import calibrate_logits, check_calibrator
from terarec.serving.transform import FeatureTransform, Rows

FORMAT = "terarec-export/1"
# a calibrated export's scores mean calibrated probabilities: a reader of /1 only (which knows no calibration)
# refuses it instead of serving its model's raw scores
CALIBRATED_FORMAT = "terarec-export/2"
MANIFEST = "manifest.json"
MODEL_FILE = "model.pt"
DTYPES = dict(zip(EXPORT_DTYPES, (None, torch.float16, torch.qint8)))  # name -> torchrec quantization dtype


class ExportError(UserError):
    """A missing, incomplete or mismatching export directory: one line naming it (exit 2)."""


class ServingModel(nn.Module):
    """Raw rows -> probabilities ``B`` (float64), through the training transform, the model and (in a
    calibrated export) the run's calibrator."""

    def __init__(self, model: nn.Module, transform: FeatureTransform, manifest: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.transform, self.manifest = model, transform, manifest
        self.calibrator: dict[str, Any] | None = (manifest.get("calibration") or {}).get("calibrator")

    def logits(self, rows: Rows) -> torch.Tensor:
        """``B`` logits of the rows (a pyarrow table or a dict of columns), float64 either way (calibrated
        ones in a calibrated export, as ``predict --calibrated`` computes them): one dtype for a caller."""
        dense, sparse = self.transform(rows)
        with torch.no_grad():
            logits = self.model(dense, sparse).squeeze(-1).float()
        return logits.double() if self.calibrator is None else calibrate_logits(self.calibrator, logits)

    def forward(self, rows: Rows) -> torch.Tensor:
        return torch.sigmoid(self.logits(rows))


def write_export(model: nn.Module, transform: FeatureTransform, manifest: dict[str, Any], directory: str) -> None:
    """Quantize ``model`` (a float CPU model holding the trained weights) to ``manifest["dtype"]`` and
    write the export into ``directory`` (built beside it, renamed when complete)."""
    dtype = manifest["dtype"]
    if dtype not in DTYPES:
        raise ExportError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    model = model.eval()
    if DTYPES[dtype] is not None:
        model = quantize_inference_model(model, quantization_dtype=DTYPES[dtype])
    target = Path(directory)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model, tmp / MODEL_FILE)
    full = {"format": export_format(manifest), **manifest, "transform": transform.to_dict()}
    (tmp / MANIFEST).write_text(json.dumps(full, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.replace(target)


def export_format(manifest: dict[str, Any]) -> str:
    """The format an export with ``manifest`` is written in: :data:`CALIBRATED_FORMAT` when it carries a calibrator."""
    return CALIBRATED_FORMAT if "calibration" in manifest else FORMAT


def read_manifest(directory: str) -> dict[str, Any]:
    """The export's manifest; :class:`ExportError` when it is missing, unreadable or of another format."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path} not found: not a terarec export (make one with terarec export)")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{path} is unreadable ({err})") from None
    if manifest.get("format") not in (FORMAT, CALIBRATED_FORMAT):
        raise ExportError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r} or {CALIBRATED_FORMAT!r}")
    if manifest["format"] != export_format(manifest):
        has = "has a" if "calibration" in manifest else "has no"
        raise ExportError(f"{path}: format {manifest['format']!r} {has} calibration: the export is inconsistent")
    missing = [k for k in ("model", "dtype", "transform", "table_sizes") if k not in manifest]
    if missing:
        raise ExportError(f"{path} has no '{missing[0]}'")
    if "calibration" in manifest:
        wrong = check_calibrator((manifest["calibration"] or {}).get("calibrator"))
        if wrong is not None:
            raise ExportError(f"{path}: {wrong}")
    return manifest


def load(directory: str) -> ServingModel:
    """The export in ``directory`` as a module scoring raw rows; checks the model against its manifest."""
    manifest = read_manifest(directory)
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise ExportError(f"{path} not found: the export is incomplete")
    model = torch.load(path, weights_only=False, map_location="cpu")
    transform = FeatureTransform.from_dict(manifest["transform"])
    sizes = _table_rows(model)
    expected = {str(k): int(v) for k, v in manifest["table_sizes"].items()}
    wrong = sorted(k for k in expected if sizes.get(k) != expected[k])  # histories share their target's table
    if wrong:
        raise ExportError(
            f"{path} does not match {Path(directory) / MANIFEST}: table '{wrong[0]}' has "
            f"{sizes.get(wrong[0])} rows in the model, {expected.get(wrong[0])} in the manifest"
        )
    return ServingModel(model.eval(), transform, manifest)


def _table_rows(model: nn.Module) -> dict[str, int]:
    """Feature -> rows of its table, from the (float or quantized) embedding modules' configs."""
    sizes: dict[str, int] = {}
    for module in model.modules():
        configs = getattr(module, "embedding_bag_configs", None) or getattr(module, "embedding_configs", None)
        if callable(configs) and type(module).__module__.startswith("torchrec."):
            for config in configs():
                sizes.update({name: int(config.num_embeddings) for name in config.feature_names})
    return sizes


def score_dataset(model: ServingModel, data: str, split: str, output: str, batch_rows: int = 65536) -> int:
    """Score every row of ``data``'s ``split`` into ``output`` (``row``, ``label`` when present,
    ``probability``), in input order, one record batch at a time; written atomically. Rows scored."""
    if not output.endswith(".parquet"):
        raise UserError(f"--output {output}: must name a .parquet file")
    schema = DatasetSchema.load(data)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fields = [pa.field("row", pa.int64()), pa.field("label", pa.float32()), pa.field("probability", pa.float64())]
    row = 0
    with pq.ParquetWriter(tmp, pa.schema(fields)) as writer:
        for path in dataset_files(data, split):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch])
                logits = model.logits(table).double()
                labels = (
                    table.column(schema.label).to_numpy(zero_copy_only=False).astype(np.float32)
                    if schema.label in table.column_names
                    else np.full(table.num_rows, np.nan, np.float32)
                )
                rows = np.arange(row, row + table.num_rows, dtype=np.int64)
                writer.write_table(pa.table([rows, labels, torch.sigmoid(logits).numpy()], schema=pa.schema(fields)))
                row += table.num_rows
    tmp.replace(target)
    return row
