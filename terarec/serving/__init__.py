"""Serving an exported model in one process: no process group, no sharding, no trainer.

``terarec export`` (``trainer/export.py``) writes the directory; :func:`load` returns a module
that scores raw rows (a pyarrow table or a dict of columns) as training saw them.
"""

from terarec.serving.artifact import ExportError, ServingModel, load, read_manifest, score_dataset, write_export
from terarec.serving.transform import FeatureTransform

__all__ = ["ExportError", "FeatureTransform", "ServingModel", "load", "read_manifest", "score_dataset", "write_export"]
