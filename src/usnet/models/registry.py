"""Model registry: ``create_model(name, **kwargs)`` and ``list_models()``, as in timm.

Besides the registered US models, ``create_model`` accepts *sources* (:mod:`.sources`):
``torchvision:NAME``, ``timm:NAME`` and ``package.module:factory`` build an ordinary network
and convert it (``usnet.convert``); :func:`is_known_model` accepts both kinds of names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import UsageError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name."""
    if fn.__name__ in _MODELS:
        raise UsageError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered models (sources such as ``torchvision:NAME`` come on top)."""
    return sorted(_MODELS)


def is_known_model(name: str) -> bool:
    """Whether :func:`create_model` can build ``name`` (a registered model or a source)."""
    return model_name_error(name) is None


def model_name_error(name: str) -> str | None:
    """Why ``name`` names no model (``None``: it does)."""
    from .sources import check_source_name, is_source_name

    if name in _MODELS:
        return None
    if not is_source_name(name):
        return (
            f"unknown model {name!r}; available: {list_models()}, or a source: torchvision:NAME, "
            "timm:NAME, package.module:factory"
        )
    try:
        check_source_name(name)
    except ValueError as e:
        return str(e)
    return None


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model or convert a source; the name and arguments are kept for
    checkpoints (a source's ``weights`` file is left out: the checkpoint has the weights)."""
    from .sources import build_source

    error = model_name_error(name)
    if error is not None:
        raise UsageError(error)
    model: Any  # a module that gets plain attributes
    try:
        if name in _MODELS:
            model = _MODELS[name](**kwargs)
        else:
            model = build_source(name, dict(kwargs))
    except TypeError as e:
        raise UsageError(f"bad arguments for model {name!r}: {e}") from None
    model.arch = name
    model.arch_kwargs = {k: v for k, v in kwargs.items() if name in _MODELS or k != "weights"}
    return model
