"""``usnet.convert``: any ordinary PyTorch CNN as a US-Net, in one call."""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from ..errors import UsageError
from ..nn import WidthSpace
from .analysis import Analysis, kind_of
from .replace import replace_modules, verify
from .trace import trace_model


def convert(
    model: nn.Module,
    example_input: Tensor,
    width_range: tuple[float, float] = (0.25, 1.0),
    divisor: int = 8,
    keep: Iterable[str] | None = (),
    check: bool = True,
) -> nn.Module:
    """A universally slimmable copy of ``model`` that starts from its weights.

    ``example_input`` (e.g. ``torch.randn(2, 3, 224, 224)``) drives the tracing; its shape
    (without the batch) becomes ``input_size``. The result is ``model``'s own class with its
    own ``forward``, whose convs, linears and norms read the active channels of the channel
    groups in ``model.width_space`` (one per set of tensors that must shrink together, named
    after the module producing it): ``usnet.set_width``, ``calibrate``, ``macs``,
    ``export.extract`` and checkpoints work as on the built-in models. At width 1.0 it computes
    ``model``'s function exactly (batch norms keep their running statistics as the full width's
    calibrated statistics); other widths round like the authors' code (``divisor``, leading
    channels). The input's channels and the outputs never slim, nor the outputs of the modules
    named in ``keep`` (a module that cannot be traced or converted is kept as one block).
    ``model`` itself is left as it is. What cannot be slimmed exactly raises
    :class:`~usnet.convert.ConvertError` naming the module, the operation and what to keep.
    ``check`` runs the result once at full width against ``model`` and once at the narrowest.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(getattr(model, "width_space", None), WidthSpace):
        raise UsageError(f"{type(model).__name__} is already a US model (it has a width_space)")
    if not isinstance(example_input, Tensor) or example_input.dim() < 2 or not len(example_input):
        raise UsageError(
            "example_input must be a tensor with a batch dimension holding at least one example, "
            "e.g. torch.randn(2, 3, 224, "
            f"224), got {getattr(example_input, 'shape', example_input)!r}"
        )
    try:
        width_min, width_max = (float(w) for w in width_range)
    except (TypeError, ValueError):
        raise UsageError(f"width_range must be (min, 1.0), got {width_range!r}") from None
    if width_max != 1.0 or not 0 < width_min <= 1.0:
        raise UsageError(
            f"width_range must be (min, 1.0) with 0 < min <= 1 (width 1.0 is the original "
            f"network), got {width_range!r}"
        )
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise UsageError(f"divisor must be a positive int, got {divisor!r}")
    keep = _check_keep(model, keep)
    model = copy.deepcopy(model)  # the caller's model stays as it is
    opaque = {p for p in keep if kind_of(model.get_submodule(p)) is None}
    # copies: a forward may change its input in place; the caller's tensor stays as it is
    traces = trace_model(
        model, example_input.detach().clone(), lambda m, _: kind_of(m) is not None, opaque
    )
    analysis = Analysis(model, keep)
    for trace in traces:
        analysis.run(trace)
    groups = analysis.solver.solve()
    if not groups:
        warnings.warn(
            f"nothing of {type(model).__name__} slims: every channel group is fixed (by the "
            "outputs, keep, or tensors of fixed size they meet)",
            stacklevel=2,
        )
    space = WidthSpace(width_min, width_max)
    model = replace_modules(model, analysis, groups, space, divisor)
    result: Any = model  # gets plain attributes, as a USModel has
    result.width_space = space
    result.input_size = tuple(int(s) for s in example_input.shape[1:])
    if check:
        verify(result, example_input.detach().clone(), traces[0].output, space)
    return result


def _check_keep(model: nn.Module, keep: Iterable[str] | None) -> frozenset[str]:
    if keep is None:
        return frozenset()
    if isinstance(keep, str):
        keep = [keep]
    names = {n for n, _ in model.named_modules() if n}
    keep = frozenset(keep)
    for name in sorted(keep):
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UsageError(f"keep: {name!r} is not a module of {type(model).__name__}{hint}")
    return keep
