"""Model registry and architectures (one file each)."""

from . import mlp, mobilenet_v1, mobilenet_v2  # noqa: F401  (registers the models)
from .base import USModel
from .registry import create_model, list_models, register_model

__all__ = ["USModel", "create_model", "list_models", "register_model"]
