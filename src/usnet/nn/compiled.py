"""``torch.compile`` for US models: any number of widths, never a silent fall-back to eager.

Layers read the call's channel counts as the sizes of per-plan tensors (:meth:`WidthSpace.counts
<usnet.nn.WidthSpace.counts>`), so dynamo's automatic dynamic shapes trace one graph whose
channel counts are symbolic where it can: training (batch statistics) on backends that keep
shapes symbolic (``aot_eager``). Two things specialise a graph to one network, and then a
compiled model holds **one graph per network it ran**:

- eval-mode batch norm reads the statistics calibrated for that network (one buffer each);
- inductor's convolution lowering fixes channel counts (a conv kernel is generated per shape).

Dynamo keeps at most ``torch._dynamo.config.recompile_limit`` (8) graphs per function and runs
eager after that, with only a log warning. :func:`compile` raises that bound to
``max_networks`` for this model's calls alone (the global setting is untouched), so a server at
a dozen widths stays compiled; more networks than ``max_networks`` fall back to eager as torch
does, and the bound is the documented price (each graph holds its compiled code and guards).
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from ..errors import UsageError

#: Graphs a compiled US model keeps before dynamo runs it eagerly (see the module docstring).
MAX_NETWORKS = 64


def compile(model: nn.Module, *, max_networks: int = MAX_NETWORKS, **options: Any) -> nn.Module:
    """``torch.compile(model, **options)`` that keeps up to ``max_networks`` graphs (one per
    network where shapes specialise) instead of dynamo's default 8.

    The result is torch's own ``OptimizedModule`` (``usnet.width``, ``set_width``,
    ``state_dict`` and the other tools see through it); its calls run under
    ``torch._dynamo.config.patch(recompile_limit=max_networks)``.
    """
    if isinstance(max_networks, bool) or not isinstance(max_networks, int) or max_networks < 1:
        raise UsageError(f"max_networks must be an int >= 1, got {max_networks!r}")
    import torch._dynamo  # torch.compile imports it too; not at import time of usnet (slow)

    config: Any = torch._dynamo.config
    compiled: Any = torch.compile(model, **options)
    inner = compiled.forward

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        limit = max(max_networks, config.recompile_limit)
        with config.patch(
            recompile_limit=limit,
            accumulated_recompile_limit=max(config.accumulated_recompile_limit, 4 * limit),
        ):
            return inner(*args, **kwargs)

    compiled.forward = forward
    return compiled
