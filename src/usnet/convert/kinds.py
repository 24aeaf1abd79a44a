"""Widths by kind of channel group: a transformer's heads, MLP hidden units and embedding.

A converted network records what each of its channel groups is (:func:`.plan.group_kinds`):
``"heads"`` (an attention's whole heads), ``"mlp"`` (hidden units a linear makes),
``"embedding"`` (the residual stream attention reads and writes) or ``"channels"`` (a conv's).
Group names are module paths, one group per block, so a width per kind would otherwise be a
long ``{group: width}`` mapping written out by hand.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UsageError
from .plan import Plan

KINDS = ("heads", "mlp", "embedding", "channels")


def kind_widths(model: nn.Module, rest: float = 1.0, **widths: float) -> dict[str, float]:
    """The width config giving every group of a kind its width, e.g.
    ``kind_widths(model, heads=0.5, mlp=0.75)``; groups of the kinds not named run at ``rest``.
    Use it wherever a width goes (``usnet.width``, ``set_width``, ``macs``, ``calibrate``)."""
    unknown = sorted(set(widths) - set(KINDS))
    if unknown:
        raise UsageError(f"kind_widths: unknown kind(s) {unknown}; allowed: {list(KINDS)}")
    groups = _recorded_groups(model, "kind_widths")
    present = sorted({g.kind for g in groups})
    absent = sorted(set(widths) - set(present))
    if absent:  # its width would silently change nothing
        raise UsageError(
            f"kind_widths: {type(model).__name__} has no channel group of kind(s) {absent}; "
            f"its kinds: {present}"
        )
    numbers = {kind: _width(kind, w) for kind, w in widths.items()}
    config: dict[str, float] = {g.name: numbers[g.kind] for g in groups if g.kind in numbers}
    config["*"] = _width("rest", rest)
    return config


def model_kinds(model: nn.Module) -> list[str]:
    """The kinds of channel group a converted ``model`` has (``UsageError`` if ``usnet.convert``
    did not make it)."""
    return sorted({g.kind for g in _recorded_groups(model, "model_kinds")})


def _recorded_groups(model: nn.Module, caller: str) -> list[Any]:
    """The channel groups ``usnet.convert`` recorded on ``model``, or one line saying it has none."""
    conversion: Any = getattr(model, "conversion", None)
    if not isinstance(conversion, dict) or "plan" not in conversion:
        raise UsageError(
            f"{caller}: {type(model).__name__} was not made by usnet.convert (it records no "
            "kinds of channel group); give a {group: width} config instead"
        )
    return list(Plan.from_json(conversion["plan"]).groups)


def _width(field: str, value: Any) -> float:
    """``value`` as a width, or one line naming ``field`` (the range is the model's, checked
    where the config is used)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise UsageError(f"kind_widths: {field}={value!r} is not a width (a number in (0, 1])")
    return float(value)
