"""One training step for every task: the sandwich rule with inplace distillation (design.md).

The task says how a width's outputs are scored (a :class:`SandwichLoss`); the step owns the rest:
the widths in order, the teacher, the backward passes and DDP's gradient synchronisation.

The teacher rule, one for every task: with inplace distillation on, the teacher is the model's
largest width, trained first in the step (``sample_widths`` puts it first whenever it samples it).
It learns from the labels, and its detached outputs are the target of every other width of the
step. A step that does not train the largest width (``random`` sampling, a ``fixed`` narrow width,
switches without it) has no teacher: every width learns from the labels. No extra teacher pass is
ever made, so a step costs one forward and one backward per trained width.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

from torch import Tensor, nn

from ..errors import UsageError
from ..nn import WidthConfig, width_space
from ..nn.shared_grad import shared_gradients
from .sampling import is_largest, is_smallest

#: A loss value: a scalar tensor, or named parts with the minimised total under ``"loss"``.
LossParts = Tensor | Mapping[str, Tensor]


class SandwichLoss(Protocol):
    """How a task scores one width's outputs (classification, super-resolution, RL)."""

    def loss(self, outputs: Any, target: Any) -> LossParts:
        """The label loss: the teacher's, and every width's when there is no teacher."""
        ...

    def distill_loss(self, outputs: Any, teacher: Any, target: Any) -> LossParts:
        """Inplace distillation: ``teacher`` is the largest width's detached ``outputs``."""
        ...


def detach(outputs: Any) -> Any:
    """``outputs`` (a tensor or a tuple/list/dict of tensors) cut from the graph."""
    if isinstance(outputs, Tensor):
        return outputs.detach()
    if isinstance(outputs, Mapping):
        return {k: detach(v) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(detach(v) for v in outputs)
    return outputs


def _parts(value: LossParts) -> Mapping[str, Tensor]:
    if isinstance(value, Tensor):
        return {"loss": value}
    if "loss" not in value:
        raise UsageError(f"a loss given as parts needs a 'loss' entry, got {sorted(value)}")
    return value


def sandwich_step(
    model: nn.Module,
    inputs: Any,
    target: Any,
    widths: Sequence[WidthConfig],
    loss_fn: SandwichLoss,
    inplace_distillation: bool = True,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    backward: Callable[[Tensor], None] = Tensor.backward,
    smallest_weight: float = 1.0,
) -> list[dict[str, Tensor]]:
    """Forward and backward ``inputs`` at each width in turn; gradients accumulate (the caller
    makes one optimizer step).

    ``model(inputs)`` runs under ``autocast``; the losses are computed outside it. Under DDP
    (``model`` wrapped in DistributedDataParallel) all but the last backward run in
    ``no_sync()``, so gradients are all-reduced once per step. ``backward`` lets a GradScaler
    scale the loss. ``smallest_weight`` multiplies the loss of the range's narrowest width when
    the step trains more than one width (what is returned stays unweighted). Returns each
    width's detached loss parts (``"loss"`` and any others the task
    reports), in the order of ``widths``. Each width holds for its own passes only
    (``WidthSpace.at``): the model's default width is never changed. Sliced parameters
    accumulate one gradient buffer each over the step (:mod:`usnet.nn.shared_grad`), handed to
    autograd on the last width's backward.
    """
    space = width_space(model)
    teacher: Any = None
    results = []
    with shared_gradients() as shared:
        for i, w in enumerate(widths):
            last = i == len(widths) - 1
            shared.begin(last)
            sync = (
                contextlib.nullcontext()
                if last or not hasattr(model, "no_sync")
                else cast(Any, model).no_sync()
            )
            with sync, space.at(w):
                with autocast():
                    outputs = model(inputs)
                if teacher is None:
                    parts = _parts(loss_fn.loss(outputs, target))
                    if i == 0 and inplace_distillation and is_largest(w, space.width_max):
                        teacher = detach(outputs)
                else:
                    parts = _parts(loss_fn.distill_loss(outputs, teacher, target))
                weighted = (
                    smallest_weight != 1.0 and len(widths) > 1 and is_smallest(w, space.width_min)
                )
                backward(parts["loss"] * smallest_weight if weighted else parts["loss"])
            results.append({k: v.detach() for k, v in parts.items()})
    return results
