"""Which widths a training step trains (the sandwich rule and its ablations)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import UsageError

STRATEGIES = ("sandwich", "random", "switches", "fixed")


def sample_widths(
    strategy: str,
    width_min: float,
    width_max: float,
    n: int = 4,
    widths: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> list[float]:
    """The widths one step trains, largest first when it is among them.

    - ``sandwich``: ``[w_max, w_min]`` + ``n - 2`` widths uniform in the range (paper default n=4).
    - ``random``: ``n`` widths uniform in the range (the ablation without the sandwich rule).
    - ``switches``: every width of the fixed list ``widths`` (the 4-switch baseline).
    - ``fixed``: the single width ``widths[0]`` (an individually trained baseline).

    Every rank of a distributed run passes an identically seeded ``generator``, so all ranks
    train the same widths in the same order.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"width sampling {strategy!r} is unknown; allowed: {list(STRATEGIES)}")
    if strategy in ("sandwich", "random"):
        least = 2 if strategy == "sandwich" else 1
        if n < least:
            raise UsageError(f"num_widths must be >= {least} for {strategy!r} sampling, got {n}")
        k = n - 2 if strategy == "sandwich" else n
        u = torch.rand(k, generator=generator, dtype=torch.float64).tolist()
        rand = [width_min + (width_max - width_min) * x for x in u]
        return [width_max, width_min, *rand] if strategy == "sandwich" else rand
    if not widths:
        raise UsageError(f"width sampling {strategy!r} needs a list of widths")
    if strategy == "fixed":
        if len(widths) != 1:
            raise UsageError(f"width sampling 'fixed' takes exactly one width, got {list(widths)}")
        return [float(widths[0])]
    return sorted((float(w) for w in widths), reverse=True)
