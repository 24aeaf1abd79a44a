"""What a conversion leaves whole, and how much of the network's MACs still slims.

An operation *slims* when one of the channel dimensions it reads or writes belongs to a group
that runs fewer channels at the narrowest width; its MACs (counted as :mod:`usnet.profile`
counts them, with ``FlopCounterMode``) then shrink with the width. Every conversion that leaves
MAC-bearing operations whole (by ``keep``, an unknown layer, a fixed-size operand) warns with
their share and why, so a partial conversion is never silent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..nn.rounding import active_channels
from .analysis import OUTPUT, Analysis

#: ``never_slims(full, ratio, divisor)``: a group that runs all its channels even at the
#: narrowest width (``divisor``: the group's own rounding unit, 0 for the model's).
NeverSlims = Callable[[int, int, int], bool]


def never_slims(width_min: float, divisor: int) -> NeverSlims:
    """Whether a group of ``full`` channels (``ratio``: its multiple) keeps all of them at
    ``width_min`` under the rounding of a converted network (one no wider than the divisor)."""

    def check(full: int, ratio: int, own: int = 0) -> bool:
        d = own or divisor // math.gcd(divisor, ratio)
        return active_channels(full, width_min, ratio, 1.0, d) >= full

    return check


@dataclass
class Coverage:
    """MACs per input of the original network, and what of them stays whole, by module."""

    total: int = 0
    slim: int = 0
    whole: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def share(self) -> float:
        """The fraction of MACs in operations that slim (1.0 for a network without MACs)."""
        return self.slim / self.total if self.total else 1.0


def coverage(an: Analysis, never: NeverSlims) -> Coverage:
    solver = an.solver
    result = Coverage()

    def slims(v: int) -> bool:
        r = solver.find(v)
        return solver.slimmable(r) and not never(
            solver.full[r], solver.ratio(r), solver.divisor(r)
        )

    for cost in an.costs:
        result.total += cost.macs
        if any(slims(v) for v in cost.vars):
            result.slim += cost.macs
            continue
        reasons = [solver.reason(v) or _narrow(an, v) for v in cost.vars]
        reason = next((r for r in reasons if r and r != OUTPUT), "")
        if not reason:
            reason = (
                "it writes the network's outputs from channels that do not slim"
                if OUTPUT in reasons
                else "no slimmable channels reach it"
            )
        macs, first = result.whole.get(cost.module, (0, reason))
        result.whole[cost.module] = (macs + cost.macs, first)
    return result


def _narrow(an: Analysis, v: int) -> str:
    """Why a group that is not fixed still never slims: the channels it follows are too few."""
    root = an.solver.find(v)
    if not an.solver.slimmable(root):
        return ""
    what = f"'{an.solver.name[root]}'" if an.solver.name[root] else "a tensor"
    return f"its channels follow the {an.solver.full[root]} channel(s) of {what}, too few to slim"


def message(name: str, cov: Coverage, kept: Sequence[str], auto: bool, groups: int) -> str | None:
    """The warning of a conversion that leaves part of ``name`` whole (``None``: nothing)."""
    if not cov.whole and not (auto and kept) and groups:
        return None
    share = percent(cov.share)
    if groups == 0:
        text = f"nothing of {name} slims: every channel group is fixed"
    else:
        text = f"{share} of {name}'s MACs slim"
    if auto and kept:
        text += f"; keep='auto' kept {list(kept)} (pass that as keep= to convert the same way)"
    if cov.whole:
        top = sorted(cov.whole.items(), key=lambda kv: -kv[1][0])
        parts = [
            f"{repr(path) if path else 'its own forward'} "
            f"({percent(macs / max(cov.total, 1))}: {reason})"
            for path, (macs, reason) in top[:4]
        ]
        more = f" and {len(top) - 4} more" if len(top) > 4 else ""
        text += f"; whole: {', '.join(parts)}{more}"
    return text


def percent(fraction: float) -> str:
    """``fraction`` as a percentage that never rounds a sliver to 0 or 100."""
    pct = 100 * fraction
    if 0 < pct < 0.1:
        return "<0.1 %"
    if 99.9 < pct < 100:
        return ">99.9 %"
    return f"{pct:.1f} %"
