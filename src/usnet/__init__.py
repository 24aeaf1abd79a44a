"""usnet: universally slimmable networks (Yu & Huang, ICCV 2019) in PyTorch."""

from .models import create_model, list_models, register_model
from .nn import channel_groups, get_width, set_width, width

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "channel_groups",
    "create_model",
    "get_width",
    "list_models",
    "register_model",
    "set_width",
    "width",
]
