"""Single-device models (PyTorch + TorchRec modules only) and the model registry."""

from terarec.models.registry import ModelConfigError, ModelEntry, get_model, list_models, register_model

__all__ = ["ModelConfigError", "ModelEntry", "get_model", "list_models", "register_model"]
