"""``terarec export``: a run's newest checkpoint as an unsharded single-process serving artifact.

    terarec export --run RUN --output DIR [--dtype fp32|fp16|int8] [--calibrated]

The checkpoint is read exactly as ``terarec eval`` reads it (``evaluate._load_model``: DCP onto a
one-rank DMP, manifest and checksums verified); the one-rank model's tables are then copied whole
into a plain CPU model, which ``terarec.serving.write_export`` quantizes and saves with the
training feature transform and a manifest. ``--calibrated`` adds the run's ``calibration.json`` (``terarec
calibrate``) to the manifest, checked as ``eval --calibrated`` checks it (fitted on the checkpoint being
exported and on the run's dataset, else one line); the export then scores calibrated probabilities.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor

from terarec.configs.loader import ConfigError
from terarec.data_pipeline.manifest import dataset_fingerprint
from terarec.data_pipeline.schema import DatasetSchema
from terarec.serving import FeatureTransform, write_export
from terarec.serving.artifact import DTYPES, ExportError
from terarec.trainer.calibration import load_calibration
from terarec.trainer.evaluate import checkpoint_session, eval_config
from terarec.trainer.model_factory import build_model


def _whole(value: Any) -> Any:
    """A one-rank state-dict entry as a plain tensor (every shard of a ShardedTensor is local)."""
    if isinstance(value, DTensor):
        return value.full_tensor()
    if not isinstance(value, ShardedTensor):
        return value
    with warnings.catch_warnings():  # the DCP load hands ShardedTensors: its deprecation is not ours to act on
        warnings.simplefilter("ignore", FutureWarning)
        whole = torch.empty(value.size(), dtype=value.dtype)
    for shard in value.local_shards():
        index = tuple(
            slice(o, o + n) for o, n in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes, strict=True)
        )
        whole[index] = shard.tensor
    return whole


def run_export(run: str, output: str, dtype: str = "fp32", calibrated: bool = False) -> dict[str, Any]:
    """Export ``run``'s newest checkpoint to ``output`` (``calibrated``: with the run's calibrator, see the
    module doc); returns the manifest written."""
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: one of {', '.join(DTYPES)}")
    cfg = eval_config(run)
    if cfg.embeddings.min_count > 0:  # the serving transform knows only the modulo id -> row rule
        raise ConfigError(
            f"{run} was trained with embeddings.min_count={cfg.embeddings.min_count}: "
            "export does not carry the frequent-id vocabulary yet"
        )
    schema = DatasetSchema.load(cfg.data.path, check_parts=False)  # the schema only: no rows are read
    with checkpoint_session(cfg, schema) as session:
        if session.info.world_size != 1:
            raise ExportError("terarec export runs in one process (not under torchrun)")
        dmp, loaded = session.load()
        calibrator = load_calibration(cfg.run.dir, int(loaded["step"]), cfg.data.path) if calibrated else None
        state = {k.removeprefix("model."): _whole(v) for k, v in dmp.state_dict().items()}
    built = session.built
    plain = build_model(cfg, schema, "cpu").model
    plain.load_state_dict(state, strict=True)
    transform = FeatureTransform.from_training(
        schema, built.table_sizes, cfg.data.dense_fill, cfg.data.dense_transform, cfg.data.max_history
    )
    manifest = {
        "model": cfg.model.name,
        "flavor": cfg.model.flavor,
        "dtype": dtype,
        "source_checkpoint": str(Path(loaded["path"]).resolve()),
        "step": loaded["step"],
        "schema": {"dense": schema.dense, "sparse": [f.name for f in schema.sparse], "label": schema.label},
        "sequence": [s.name for s in schema.sequence],
        "table_sizes": built.table_sizes,
    }
    if calibrator is not None:  # provenance: the checkpoint step and dataset it was fitted on (checked equal)
        manifest["calibration"] = {
            "calibrator": calibrator,
            "fitted_step": loaded["step"],
            "data": cfg.data.path,
            "dataset_fingerprint": dataset_fingerprint(cfg.data.path),
        }
    write_export(plain, transform, manifest, output)
    return manifest
