"""Which widths a training step trains (the sandwich rule and its ablations).

A trained width is uniform (one float) or, with non-uniform sampling (the authors' ``nonuniform``
flag, the training AutoSlim searches), a ``{group: width}`` mapping in which every slimmable
channel group has its own width: the network then sees per-group widths during training, so a
search over them stays on the training distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..nn import WidthConfig, channel_groups, width_space

STRATEGIES = ("sandwich", "random", "switches", "fixed")


def sample_widths(
    strategy: str,
    width_min: float,
    width_max: float,
    n: int = 4,
    widths: Sequence[WidthConfig] | None = None,
    generator: torch.Generator | None = None,
    groups: Sequence[str] = (),
) -> list[WidthConfig]:
    """The widths one step trains, largest first when it is among them.

    - ``sandwich``: ``[w_max, w_min]`` + ``n - 2`` widths uniform in the range (paper default n=4).
    - ``random``: ``n`` widths uniform in the range (the ablation without the sandwich rule).
    - ``switches``: every width of the fixed list ``widths`` (the 4-switch baseline).
    - ``fixed``: the single width ``widths[0]`` (an individually trained baseline), a number or
      a per-group ``{group: width}``: every step trains that one network alone.

    With ``groups`` (the slimmable channel groups' names) the random widths are non-uniform:
    each is ``{group: width}`` with every group's width drawn on its own, uniform in the range;
    the sandwich rule's largest and smallest stay uniform. Every rank of a distributed run
    passes an identically seeded ``generator``, so all ranks train the same widths in the same
    order.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"width sampling {strategy!r} is unknown; allowed: {list(STRATEGIES)}")
    if strategy in ("sandwich", "random"):
        least = 2 if strategy == "sandwich" else 1
        if n < least:
            raise UsageError(f"num_widths must be >= {least} for {strategy!r} sampling, got {n}")
        k = n - 2 if strategy == "sandwich" else n
        rand: list[WidthConfig]
        if groups:
            u = torch.rand(k, len(groups), generator=generator, dtype=torch.float64).tolist()
            rand = [
                {
                    g: width_min + (width_max - width_min) * x
                    for g, x in zip(groups, row, strict=True)
                }
                for row in u
            ]
        else:
            flat = torch.rand(k, generator=generator, dtype=torch.float64).tolist()
            rand = [width_min + (width_max - width_min) * x for x in flat]
        return [width_max, width_min, *rand] if strategy == "sandwich" else rand
    if groups:
        raise UsageError(
            f"non-uniform widths need 'sandwich' or 'random' sampling, not {strategy!r}"
        )
    if not widths:
        raise UsageError(f"width sampling {strategy!r} needs a list of widths")
    if strategy == "fixed":
        if len(widths) != 1:
            raise UsageError(f"width sampling 'fixed' takes exactly one width, got {list(widths)}")
        (only,) = widths
        return [only if isinstance(only, (Mapping, tuple)) else float(only)]
    numbers = [float(w) for w in widths if not isinstance(w, (Mapping, tuple))]
    if len(numbers) != len(widths):
        raise UsageError(f"width sampling 'switches' takes numbers, got {list(widths)}")
    return [*sorted(numbers, reverse=True)]


def step_widths(train: Any, model: nn.Module, generator: torch.Generator) -> list[WidthConfig]:
    """The widths of one training step from a task's ``train:`` config section (``sampling``,
    ``num_widths``, ``widths``, ``nonuniform``) and the model's width range and channel groups."""
    space = width_space(model)
    groups = (
        [g.name for g in channel_groups(model) if g.slimmable]
        if getattr(train, "nonuniform", False)
        else []
    )
    return sample_widths(
        train.sampling,
        space.width_min,
        space.width_max,
        train.num_widths,
        train.widths,
        generator,
        groups,
    )


def width_size(width: WidthConfig) -> float:
    """One number that orders the widths of a step: a uniform width itself, a per-group width
    the mean of its groups' widths (so the sandwich rule's smallest width is the least)."""
    if isinstance(width, Mapping):
        values = list(width.values())
    elif isinstance(width, tuple):
        values = [w for _, w in width]
    else:
        return float(width)
    return sum(values) / len(values) if values else 0.0


def is_largest(width: WidthConfig, width_max: float) -> bool:
    """Whether ``width`` is the range's largest network: every group at ``width_max``."""
    values = _values(width)
    return all(w >= width_max - 1e-9 for w in values)


def is_smallest(width: WidthConfig, width_min: float) -> bool:
    """Whether ``width`` is the range's smallest network: every group at ``width_min``."""
    return all(w <= width_min + 1e-9 for w in _values(width))


def _values(width: WidthConfig) -> list[float]:
    if isinstance(width, Mapping):
        return [float(w) for w in width.values()]
    if isinstance(width, tuple):
        return [float(w) for _, w in width]
    return [float(width)]
