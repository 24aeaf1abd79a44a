"""Model registry and architectures (one file each)."""

from . import actor_critic, edsr, mlp, mobilenet_v1, mobilenet_v2, wdsr  # noqa: F401  (registers)
from .base import USModel
from .registry import create_model, is_known_model, list_models, register_model
from .sources import model_source

__all__ = [
    "USModel",
    "create_model",
    "is_known_model",
    "list_models",
    "model_source",
    "register_model",
]
