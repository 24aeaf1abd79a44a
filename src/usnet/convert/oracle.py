"""An independent check of a converted network at a width: the *masked original*.

The original network with every channel a width drops set to zero (the rows of the convs and
linears that make it, the affine parameters of the norms over it, the per-channel parameters
sliced with it) computes, in train mode (batch norms on batch statistics, dropout off), what the
slimmable network computes at that width: a zero channel adds nothing to the layers reading
it, and every batch-norm statistic is per channel. It shares no slicing code with the converted
layers, so a wrong group, span or gather shows. It does not hold where a forward computes over
the channels (layer norm, a mean or softmax over channels: zeros count there), which the plan
records; :func:`masked_original` refuses those.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UsageError
from ..nn import TrainOnlyBatchNorm, USBatchNorm, WidthConfig, modes_kept, width_space
from ..nn import width as at_width
from .measure import tensors_of
from .plan import Plan, SpanPlan
from .reparam import folded_copy

_MAKERS = ("conv", "conv_same", "conv1d", "conv3d", "conv_cat", "linear")
_NORMS = ("bn", "bnact", "bn3d", "gn", "gn1", "gnact", "in", "ln", "ln2d")


def mask(span: SpanPlan, channels: Mapping[str, int], full: Mapping[str, int]) -> Tensor:
    """Which entries of a dimension of ``span`` a width with ``channels`` keeps."""
    parts = []
    for g, f in span:
        total = full[g] if isinstance(g, str) else g
        active = channels[g] if isinstance(g, str) else g
        parts.append(torch.arange(total * f) < active * f)
    return torch.cat(parts) if parts else torch.ones(0, dtype=torch.bool)


def masked_original(original: nn.Module, plan: Plan, channels: Mapping[str, int]) -> nn.Module:
    """A copy of ``original`` whose channels inactive at ``channels`` (group -> active count,
    as ``width_space(model).channels(w)`` gives) are zero, in train mode with dropout off."""
    if plan.over_channels:
        raise UsageError(
            f"the masked original does not hold for this network: {plan.over_channels[0]!r} "
            "computes over the channels (zeros would count there)"
        )
    net, _ = folded_copy(original)
    full = {g.name: g.full for g in plan.groups}
    with torch.no_grad():
        for path, layer in plan.layers.items():
            m = net.get_submodule(path)
            if layer.kind == "bn" and not isinstance(m, _BatchNorm):  # FrozenBatchNorm2d
                m = _as_batch_norm(m)
                net.set_submodule(path, m)
            if layer.kind in _MAKERS and layer.out is not None:
                _zero(m, ("weight", "bias"), mask(layer.out, channels, full), 0)
            elif layer.kind == "conv_transpose" and layer.out is not None:
                keep = mask(layer.out, channels, full)  # a grouped one's inputs are zero too
                _zero(m, ("weight",) if m.groups == 1 else (), keep, 1)
                _zero(m, ("bias",), keep, 0)
            elif layer.kind in _NORMS and layer.inp is not None:
                _zero(m, ("weight", "bias"), mask(layer.inp, channels, full), 0)
        for target, (span, dim) in plan.params.items():
            owner, _, name = target.rpartition(".")
            _zero(net.get_submodule(owner), (name,), mask(span, channels, full), dim)
    net.eval()
    for m in _batch_norms(net):
        m.train()
    return net


def _as_batch_norm(frozen: Any) -> nn.Module:
    """A frozen batch norm as the batch norm its converted form is (batch statistics in
    training)."""
    w = frozen.weight
    bn = nn.BatchNorm2d(w.shape[0], eps=frozen.eps, device=w.device, dtype=w.dtype)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).data.copy_(getattr(frozen, name))
    return bn


def _zero(m: nn.Module, names: tuple[str, ...], keep: Tensor, dim: int) -> None:
    for name in names:
        t = getattr(m, name, None)
        if isinstance(t, Tensor) and t.dim() > dim and t.shape[dim] == keep.numel():
            shape = [1] * t.dim()
            shape[dim] = -1
            t.mul_(keep.view(shape).to(t.dtype))


def _batch_norms(net: nn.Module) -> Iterator[nn.Module]:
    kinds = (_BatchNorm, USBatchNorm, TrainOnlyBatchNorm)
    return (m for m in net.modules() if isinstance(m, kinds))


@torch.no_grad()
def difference(original: nn.Module, model: nn.Module, x: Tensor, width: WidthConfig) -> float:
    """The largest absolute difference between converted ``model`` at ``width`` and the masked
    ``original`` (batch norms on batch statistics of ``x``, dropout off, on both sides)."""
    plan = Plan.from_json(getattr(model, "conversion", {}).get("plan"))
    reference = masked_original(original, plan, width_space(model).channels(width))
    with modes_kept(model), at_width(model, width):
        model.eval()
        for m in _batch_norms(model):
            m.train()
        buffers = [(b, b.clone()) for b in model.buffers()]
        try:
            got, want = model(x), reference(x)
        finally:
            for b, saved in buffers:
                b.copy_(saved)
    pairs = zip(tensors_of(got), tensors_of(want), strict=True)
    return max((float((a - b).abs().max()) for a, b in pairs), default=0.0)
