"""Model sources: ordinary networks named ``SOURCE:NAME``, built and converted into US-Nets.

- ``torchvision:resnet18``: ``torchvision.models.get_model`` (random init; ``num_classes`` and
  the model's own arguments pass through; ``in_chans`` other than 3 replaces the first conv);
- ``timm:resnet26d``: ``timm.create_model(name, pretrained=False, num_classes=, in_chans=)``;
- ``package.module:factory``: your own network. ``factory`` is an ``nn.Module`` subclass or a
  function marked with :func:`model_source`; it gets ``num_classes``/``in_chans`` when its
  signature takes them, and your other arguments.

usnet's own arguments are taken out first: ``width_min`` (0.25), ``width_max`` (1.0),
``divisor`` (8), ``keep`` (module names that do not slim), ``input_size`` (an image side or
``[C, H, W]``: the example input of the conversion and the model's ``input_size``) and
``weights`` (a local ``.safetensors`` or ``.pth`` state dict of the *original* network, loaded
before the conversion; a classifier of another size is skipped, an RGB first conv is adapted to
``in_chans`` as timm does). A checkpoint records the name and arguments (``weights`` left out:
the checkpoint holds the weights), so ``usnet.load`` rebuilds the same network.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UsageError

SOURCES = ("torchvision", "timm")
#: Arguments usnet consumes; everything else goes to the network's constructor.
USNET_KWARGS = ("width_min", "width_max", "divisor", "keep", "input_size", "weights")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def model_source(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Mark ``fn`` as a network factory that ``create_model("module:fn")`` may call by name.

    Only marked functions (and ``nn.Module`` classes) are called, so a checkpoint's name can
    never make usnet call an arbitrary function.
    """
    fn.__usnet_source__ = True  # type: ignore[attr-defined]
    return fn


def is_source_name(name: str) -> bool:
    return ":" in name


def check_source_name(name: str) -> None:
    """Raise a ``ValueError`` that says why ``name`` is no model source, else nothing."""
    source, _, model = name.partition(":")
    if source == "torchvision":
        known = _torchvision_models()
        if model not in known:
            raise UsageError(
                f"unknown torchvision classification model {model!r}{_close(model, known)}"
            )
    elif source == "timm":
        timm = _import("timm", name)
        if not timm.is_model(model):
            raise UsageError(f"unknown timm model {model!r}{_close(model, timm.list_models())}")
    elif not _IMPORT_PATH.match(name):
        raise UsageError(
            f"model {name!r} is neither a registered name nor a source: use torchvision:NAME, "
            "timm:NAME or package.module:factory"
        )
    else:
        try:
            found = importlib.util.find_spec(source) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            raise UsageError(
                f"model {name!r}: module {source!r} cannot be imported (not installed?)"
            )


def build_source(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """The plain network ``name`` names, with its weights, converted into a US-Net."""
    from ..convert import convert, rebuild, recorded_conversion

    check_source_name(name)
    own = {k: kwargs.pop(k) for k in USNET_KWARGS if k in kwargs}
    widths = (float(own.get("width_min", 0.25)), float(own.get("width_max", 1.0)))
    divisor = int(own.get("divisor", 8))
    model: Any = None
    if recorded_conversion() is not None:  # a checkpoint being loaded: it holds the weights
        with _NoRandomInit():
            net, shape = _plain(name, dict(kwargs), own)
        model = rebuild(net, recorded_conversion(), widths, divisor, shape)  # no tracing
    if model is None:
        net, shape = _plain(name, kwargs, own)
        _check_example_memory(name, net, shape)
        example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
        model = convert(net, example, widths, divisor, own.get("keep", ()))
    model.task = "classification"
    return model


def _plain(name: str, kwargs: dict[str, Any], own: dict[str, Any]) -> tuple[nn.Module, tuple]:
    """The network ``name`` names (its weights loaded) and its input shape."""
    source, _, model_name = name.partition(":")
    in_chans = int(kwargs.get("in_chans", 3))
    if source == "torchvision":
        net, side = _torchvision(model_name, kwargs)
    elif source == "timm":
        net, side = _timm(model_name, kwargs)
    else:
        net, side = _factory(name, kwargs), 224
    if own.get("weights") is not None:
        load_weights(net, own["weights"])
    size = own.get("input_size", side)
    shape = (in_chans, size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if not shape or min(shape) < 1:
        raise UsageError(f"input_size {size!r} must be positive sizes, e.g. 224 or [3, 224, 224]")
    return net, shape


class _NoRandomInit(TorchFunctionMode):
    """No random initialisation: a network whose every weight a checkpoint replaces is built
    without drawing millions of random numbers (most of the time of building it). Only for a
    recorded conversion: a network that must be converted again is built anew, initialised."""

    _RANDOM = frozenset(
        [getattr(torch.Tensor, n) for n in ("uniform_", "normal_", "random_", "exponential_")]
        + [getattr(nn.init, n) for n in ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_",
                                          "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
                                          "orthogonal_", "sparse_")]  # fmt: skip
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202
        kwargs = kwargs or {}
        tensor = args[0] if args else kwargs.get("tensor")
        if func in self._RANDOM and isinstance(tensor, torch.Tensor):
            return tensor  # as allocated: the checkpoint's weights come next
        return func(*args, **kwargs)


#: The most memory the conversion's example forward may keep (it keeps every intermediate
#: tensor): far more than any network needs at its usual input size (a ResNet-50 at 224 px
#: keeps about 0.2 GiB), far less than a machine, so an absurd input size is refused at once.
EXAMPLE_MEMORY = 4 * 2**30


def _check_example_memory(name: str, net: nn.Module, shape: tuple[int, ...]) -> None:
    """Refuse an ``input_size`` whose example forward would keep more than
    :data:`EXAMPLE_MEMORY` (or half this machine's memory), before it runs: measured on meta
    tensors, which take no memory."""
    from ..devices import physical_memory
    from ..shapes import activation_bytes

    need = activation_bytes(net, shape, 2)
    limit = min(EXAMPLE_MEMORY, physical_memory() // 2)
    if need > limit:
        raise UsageError(
            f"model {name!r} at input_size {list(shape)}: converting it runs an example forward "
            f"that keeps {need / 2**30:.3g} GiB, more than the {limit / 2**30:.3g} GiB usnet "
            "allows; convert at a smaller input_size (the channel groups do not depend on it; "
            "usnet profile --input-size N counts MACs at any size)"
        )


def _torchvision(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, int]:
    import torchvision

    in_chans = int(kwargs.pop("in_chans", 3))
    with warnings.catch_warnings():  # GoogLeNet/Inception announce a future init change
        warnings.simplefilter("ignore", FutureWarning)
        net = torchvision.models.get_model(name, weights=None, **kwargs)
    if in_chans != 3:
        first = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)
        if first is None or first[1].in_channels != 3:
            raise UsageError(f"torchvision:{name}: cannot find its RGB input conv for in_chans")
        path, conv = first
        new = nn.Conv2d(
            in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
            conv.dilation, conv.groups, conv.bias is not None,  # type: ignore[arg-type]
        )  # fmt: skip
        owner, _, attr = path.rpartition(".")
        setattr(net.get_submodule(owner), attr, new)
    return net, 299 if name == "inception_v3" else 224


def _timm(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, int]:
    timm = _import("timm", f"timm:{name}")
    net = timm.create_model(name, pretrained=False, **kwargs)
    side = (getattr(net, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1]
    return net, int(side)


def _factory(name: str, kwargs: dict[str, Any]) -> nn.Module:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"model {name!r}: cannot import {module_name!r} ({e})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise UsageError(f"model {name!r}: module {module_name!r} has no {attr!r}")
    is_class = isinstance(fn, type) and issubclass(fn, nn.Module)
    if not is_class and not getattr(fn, "__usnet_source__", False):
        raise UsageError(
            f"model {name!r}: {attr!r} is neither an nn.Module class nor a function marked with "
            "@usnet.model_source, so usnet does not call it"
        )
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in ("num_classes", "in_chans"):
        if key in kwargs and not (takes_any or key in params):
            value = kwargs.pop(key)
            if key == "num_classes" or value != 3:
                raise UsageError(
                    f"model {name!r} takes no {key!r} argument, so it cannot be built with "
                    f"{key}={value}"
                )
    net = fn(**kwargs)
    if not isinstance(net, nn.Module):
        raise UsageError(f"model {name!r} returned a {type(net).__name__}, not an nn.Module")
    return net


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load a state dict file of the original network into ``net`` (before the conversion).

    ``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True`` (a ``state_dict`` or
    ``model`` entry is unwrapped, a DDP ``module.`` prefix dropped). Tensors of another shape
    are skipped with a warning (a classifier for other classes), except an input conv's
    channels, which are adapted (``timm.models.adapt_input_conv``).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights {str(path)!r}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"weights {str(path)!r}: not a readable state dict ({e})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(
            f"weights {str(path)!r}: expected a state dict, got {type(state).__name__}"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    skipped = []
    for key, value in list(state.items()):
        want = own.get(key)
        if want is None or want.shape == value.shape:
            continue
        if value.dim() == 4 and want.dim() == 4 and value.shape[0] == want.shape[0]:
            from timm.models import adapt_input_conv

            state[key] = adapt_input_conv(want.shape[1], value)
        else:
            skipped.append(key)
            del state[key]
    if skipped:
        warnings.warn(
            f"weights {path.name}: skipped {sorted(skipped)} (another shape)", stacklevel=3
        )
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        raise UsageError(
            f"weights {str(path)!r} do not match the network: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _torchvision_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _import(module: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"model {name!r} needs {module!r}, which is not installed") from None


def _close(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""
