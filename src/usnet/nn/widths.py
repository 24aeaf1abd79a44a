"""Width configs as text: parsing grids and lists (``--widths``), formatting a config."""

from __future__ import annotations

import math

from ..errors import UsageError
from .space import DIGITS, Width

#: The most widths :func:`parse_widths` builds (a typo such as step 1e-9 must not hang or OOM).
MAX_WIDTHS = 10_000


def parse_widths(text: str) -> list[float]:
    """Parse ``"0.35:1.0:0.025"`` (start:stop:step, stop included) or ``"0.25,0.5,1.0"``.

    Every number must be finite, and a grid may hold at most :data:`MAX_WIDTHS` widths (a typo
    such as step 1e-9 must not hang building hundreds of millions of them).
    """
    text = text.strip()
    grid = ":" in text
    try:
        values = [float(p) for p in text.split(":" if grid else ",") if grid or p.strip()]
        if grid:
            start, stop, step = values
            if step <= 0 or stop < start:
                raise ValueError
    except ValueError:
        raise UsageError(
            f"widths {text!r} must be 'start:stop:step' with step > 0 and stop >= start (e.g. "
            f"0.35:1.0:0.025) or a comma list (e.g. 0.25,0.5,1.0)"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"widths {text!r}: every number must be finite (no inf or nan)")
    span = (stop - start) / step if grid else len(values) - 1  # may overflow to inf
    if not span + 1 <= MAX_WIDTHS:
        raise UsageError(
            f"widths {text!r} make {f'{span + 1:,.0f}' if span < math.inf else 'too many'} "
            f"widths; at most {MAX_WIDTHS:,} are allowed"
            + (" (use a larger step)" if grid else "")
        )
    if grid:
        count = math.floor(span + 1e-6) + 1
        return [round(start + i * step, DIGITS) for i in range(count)]
    return [round(v, DIGITS) for v in values]


def format_width(config: Width) -> str:
    """A width config as text: ``0.5`` or ``stem=0.5,stage1=0.75``."""
    if isinstance(config, tuple):
        return ",".join(f"{k}={v:g}" for k, v in config)
    return f"{config:g}"


def width_value(config: Width) -> float | dict[str, float]:
    """A canonical width as JSON and the width functions take it: the number, or a per-group
    width as ``{group: width}`` (JSON has no tuples, and a mapping reads as the config it is)."""
    return dict(config) if isinstance(config, tuple) else config
