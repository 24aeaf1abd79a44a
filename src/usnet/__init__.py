"""usnet: universally slimmable networks (Yu & Huang, ICCV 2019) in PyTorch.

One set of weights runs at any width in a range::

    model = usnet.create_model("us_mobilenet_v2")
    usnet.set_width(model, 0.5)                 # or: with usnet.width(model, 0.5): ...
    usnet.calibrate(model, train_loader, widths=[0.5])   # post-statistics BN
    usnet.save(model, "ckpt")                   # model.safetensors + usnet.json

Any ordinary CNN (torchvision, timm, your own) becomes one with ``usnet.convert(model, x)`` or
``usnet.create_model("torchvision:resnet18")``.
"""

from . import checkpoint, export, profile
from .calibration import attach_calibration_data, calibrate, is_calibrated
from .checkpoint import load, save
from .convert import ConvertError, convert
from .errors import UsageError
from .models import create_model, is_known_model, list_models, model_source, register_model
from .nn import channel_groups, compile, frozen, get_width, set_width, width
from .profile import macs, params
from .version import __version__

__all__ = [
    "ConvertError",
    "UsageError",
    "__version__",
    "attach_calibration_data",
    "calibrate",
    "channel_groups",
    "checkpoint",
    "compile",
    "convert",
    "create_model",
    "export",
    "frozen",
    "get_width",
    "is_calibrated",
    "is_known_model",
    "list_models",
    "load",
    "macs",
    "model_source",
    "params",
    "profile",
    "register_model",
    "save",
    "set_width",
    "width",
]
