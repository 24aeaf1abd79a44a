"""Model registry: ``create_model(name, **kwargs)`` and ``list_models()``, as in timm."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model; the name and arguments are kept for checkpoints."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    try:
        model = _MODELS[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for model {name!r}: {e}") from None
    model.arch = name
    model.arch_kwargs = dict(kwargs)
    return model
