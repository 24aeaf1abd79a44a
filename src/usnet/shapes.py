"""The shape of one model input and what a forward of it needs: a leaf module, so profiling
and export can both use it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import UsageError


def input_shape(model: nn.Module, input_size: int | tuple[int, ...] | None = None) -> tuple:
    """The shape of one input (no batch axis): ``input_size`` or the model's own ``input_size``.

    An int is an image side: it replaces the height and width of the model's ``(C, H, W)``.
    """
    own = getattr(model, "input_size", None)
    if input_size is None:
        if own is None:
            raise UsageError(
                f"{type(model).__name__} has no input_size attribute; pass input_size=(C, H, W)"
            )
        own = tuple(own)
        if not own or not all(isinstance(s, int) and s >= 1 for s in own):
            raise UsageError(
                f"{type(model).__name__}'s input_size {own} must be positive sizes (a bad "
                "input_size in its usnet.json?); pass the input size explicitly"
            )
        return own
    if isinstance(input_size, int):
        if input_size < 1 or own is None or len(own) < 3:
            raise UsageError(
                f"input_size {input_size!r} must be a positive image side for a model with a "
                f"(C, H, W) input_size, or a full shape tuple"
            )
        return (*tuple(own)[:-2], input_size, input_size)
    shape = tuple(int(s) for s in input_size)
    if not shape or min(shape) < 1:
        raise UsageError(f"input_size {input_size!r} must be positive sizes, e.g. (3, 224, 224)")
    return shape


def input_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's inputs where they are not floats (token ids, recorded by
    :func:`usnet.convert` as ``input_dtype``); ``None``: floats of the parameters' dtype."""
    dtype = getattr(model, "input_dtype", None)
    if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
        return dtype
    return None


def example_input(
    model: nn.Module,
    batch: int,
    shape: tuple,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    random: bool = False,
) -> torch.Tensor:
    """A batch of inputs of ``shape`` for ``model``: zeros or (``random``) normal values of its
    parameters' dtype, or for a model of integer inputs token ids (zeros, or uniform below the
    smallest embedding's number of rows, so that every embedding can look them up)."""
    p = next(iter(model.parameters()), torch.empty(0))
    device = p.device if device is None else device
    size = (batch, *shape)
    tokens = input_dtype(model)
    if tokens is not None:
        if not random:
            return torch.zeros(size, dtype=tokens, device=device)
        rows = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
        ids = torch.randint(0, min(rows, default=1), size, generator=generator, dtype=tokens)
        return ids.to(device)
    dtype = p.dtype if p.is_floating_point() else None
    if not random:
        return torch.zeros(size, dtype=dtype, device=device)
    return torch.randn(size, generator=generator, dtype=dtype).to(device)


def two_samples(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a second, different sample after it (batch statistics need two): shifted by
    0.5, or for token ids the same ids rolled by one position (ids stay valid ids)."""
    other = x.flip(0) + 0.5 if x.is_floating_point() else x.flip(0).roll(1, -1)
    return torch.cat([x, other])


def activation_bytes(model: nn.Module, shape: tuple, batch: int) -> int:
    """Bytes of every module output of one forward of ``batch`` inputs of ``shape``: an upper
    bound of the memory a forward needs, computed on meta tensors (no memory, microseconds per
    layer), so that an absurd input size can be refused before it allocates. 0 if the model's
    forward does not run on meta tensors."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    state = {k: t.to("meta") for k, t in (*model.named_parameters(), *model.named_buffers())}
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        x = example_input(model, batch, shape, "meta")
        with torch.no_grad():
            torch.func.functional_call(model, state, (x,), strict=True)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return 0
    finally:
        for h in hooks:
            h.remove()
    return total
