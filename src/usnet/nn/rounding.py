"""Channel rounding, exactly as the authors' released code does it (design.md, "Channel rounding")."""

from __future__ import annotations


def make_divisible(v: float, divisor: int = 8, min_value: int = 1) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going more than 10% below ``v``.

    Same rule as the authors' ``make_divisible`` (and torchvision's ``_make_divisible`` with
    ``min_value=1``), so our networks have exactly their channel counts and MACs.
    """
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def active_channels(
    full: int, width: float, ratio: int = 1, width_max: float = 1.0, divisor: int = 8
) -> int:
    """Active channels of a group of ``full`` channels (built at ``width_max``) at ``width``.

    ``ratio`` keeps the count a multiple of e.g. a MobileNet v2 expansion factor. The result never
    exceeds ``full``: the prefix of a full tensor is all a width can select, and ``width_max``
    selects all of it (the full sizes of a converted network need not be multiples of
    ``divisor * ratio``; the authors' full sizes are fixed points of the rule anyway).
    ``divisor`` is the authors' 8 except for converted networks built with another one.
    """
    if width >= width_max:
        return full
    k = make_divisible(full * (width / width_max) / ratio, divisor) * ratio
    return min(k, full)
