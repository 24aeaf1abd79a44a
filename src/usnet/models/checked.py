"""Building a registered model from arguments a file or a command line gave.

``usnet.json`` and ``usnet profile --set`` may ask for anything: a mistyped argument must be an
error that names where it came from, and an absurd size (``num_classes: 10**12``) must be
refused before it allocates, not end in an allocation failure or the system's OOM killer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..devices import physical_memory
from ..errors import UsageError
from .registry import create_model, model_name_error


def build_model(
    arch: str, kwargs: Mapping[str, Any], max_bytes: int, where: str, limit: str = "allowed"
) -> nn.Module:
    """``create_model(arch, **kwargs)`` for arguments from a file or command line (``where``).

    Every error the arguments can cause is a ``ValueError`` naming ``where``; a model whose
    tensors would take more than ``max_bytes`` in all is refused before they are allocated
    (``limit`` says why that much: e.g. "this machine's memory").
    """
    error = model_name_error(arch)
    if error is not None:
        raise UsageError(f"{where}: {error}")
    try:
        with _MemoryBudget(max_bytes):
            return create_model(arch, **kwargs)
    except _TooBig as e:
        raise UsageError(
            f"{where}: model {arch!r} with arguments {dict(kwargs)} needs a tensor of shape "
            f"{e.shape} ({e.need / 2**30:.3g} GiB), more than the {max_bytes / 2**30:.3g} GiB "
            f"{limit}"
        ) from None
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:  # wrong values or kinds
        what = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise UsageError(
            f"{where}: arguments {dict(kwargs)} do not build model {arch!r} ({what})"
        ) from None


def build_from_config(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """``create_model`` for a training recipe's ``model`` section: like :func:`build_model`,
    within this machine's memory, so ``num_classes: 10**11`` is an error, not an OOM."""
    return build_model(arch, kwargs, physical_memory(), "model.kwargs", "this machine's memory holds")


class _MemoryBudget(TorchFunctionMode):
    """Refuses tensor factory calls beyond ``limit`` bytes in all, before they allocate."""

    _FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.left = limit

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202
        kwargs = kwargs or {}
        if func in self._FACTORIES and str(kwargs.get("device")) != "meta":  # meta: no memory
            size = kwargs.get("size", args[0] if args and not isinstance(args[0], int) else args)
            try:
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                need = math.prod(max(int(s), 0) for s in size) * dtype.itemsize
            except (TypeError, ValueError):  # not sizes torch accepts: let torch say so
                need = 0
            if need > self.left:
                raise _TooBig(tuple(size), need)
            self.left -= need
        return func(*args, **kwargs)


class _TooBig(Exception):
    def __init__(self, shape: tuple, need: int) -> None:
        super().__init__(shape, need)
        self.shape, self.need = shape, need
