"""Single-device models (PyTorch + TorchRec modules only) and the model registry.

Importing this package registers every model (each module calls ``register_model``).
"""

from terarec.models import bst, dcnv2, dlrm, wukong  # noqa: F401  (registration)
from terarec.models.common import RankingModel, TrainWrapper, dense_param_count, sparse_param_count
from terarec.models.registry import ModelConfigError, ModelEntry, get_model, list_models, register_model

__all__ = [
    "ModelConfigError",
    "ModelEntry",
    "RankingModel",
    "TrainWrapper",
    "dense_param_count",
    "get_model",
    "list_models",
    "register_model",
    "sparse_param_count",
]
