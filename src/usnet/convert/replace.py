"""Module replacement: the solved channel groups become a width space, and every analysed module
becomes its slimmable form over that space, keeping its weights."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import (
    GroupRef,
    Span,
    TrainOnlyBatchNorm,
    USAttention,
    USBatchNorm,
    USBatchNormAct,
    USConv,
    USEmbedding,
    USGroupNorm,
    USInstanceNorm,
    USLayerNorm,
    USLinear,
    USMultiheadAttention,
    USWindowAttention,
    WidthSpace,
    slice_parameter,
)
from ..shapes import two_samples
from .analysis import Analysis, Use
from .errors import ConvertError
from .groups import GroupSpec, Layout
from .measure import tensors_of
from .rules import module_rule, registered_functions


def group_divisor(divisor: int, ratio: int) -> int:
    """The divisor of a converted group: the authors' rounding (``make_divisible``, leading
    channels), with grouped convs kept whole.

    A group that feeds grouped convs has ``ratio`` = their group width: it runs
    ``make_divisible(full * w / ratio, divisor / gcd(divisor, ratio))`` groups, so its channels
    are a multiple of ``lcm(divisor, ratio)`` (a ResNeXt group of 4 channels: multiples of 8;
    RegNet's 24: of 24; depthwise convs: 8, the authors' rule). MobileNet v2's expansion ratio
    instead rounds ``full * w / ratio`` to the divisor, i.e. channels to multiples of ``8 * t``,
    which for group widths of 8 to 64 would leave few or no narrower networks.
    """
    return divisor // math.gcd(divisor, ratio)


class _Spans:
    """Layouts to spans (one shared span per distinct layout, so index caches are shared)."""

    def __init__(
        self, an: Analysis, groups: Mapping[int, GroupSpec], space: WidthSpace, divisor: int
    ):
        self.an = an
        self.refs: dict[int, GroupRef] = {
            root: space.group(
                spec.name,
                spec.full,
                spec.ratio,
                divisor=spec.divisor or group_divisor(divisor, spec.ratio),
            )
            for root, spec in groups.items()
        }
        self._spans: dict[tuple, Span] = {}

    def __call__(self, layout: Layout | None) -> Span | None:
        if layout is None:
            return None
        solver = self.an.solver
        parts = tuple((solver.find(v), f) for v, f in layout.segs)
        if not any(root in self.refs for root, _ in parts):
            return None  # nothing slims: the module runs as it is
        span = self._spans.get(parts)
        if span is None:
            span = self._spans[parts] = Span(
                [(self.refs.get(root) or solver.full[root], f) for root, f in parts]
            )
        return span


def replace_modules(
    model: nn.Module,
    an: Analysis,
    groups: Mapping[int, GroupSpec],
    space: WidthSpace,
    divisor: int,
) -> nn.Module:
    """Swap every analysed module for its slimmable form; returns the model (a new object only
    when the model itself was swapped, e.g. a bare ``nn.Conv2d``)."""
    spans = _Spans(an, groups, space, divisor)
    space.set(space.width_max)
    new: dict[int, nn.Module] = {}
    norms: list[tuple[USBatchNorm, Any, Any]] = []
    for path, use in an.uses.items():
        old = model.get_submodule(path)
        slim = _slim(old, use, spans, space)
        if slim is None:
            continue
        slim.train(old.training)
        if isinstance(slim, USBatchNorm):
            norms.append((slim, old.running_mean, old.running_var))
        new[id(old)] = slim
    for m in list(model.modules()):
        for name, child in m._modules.items():
            if child is not None and id(child) in new:
                m._modules[name] = new[id(child)]
    root = new.get(id(model), model)
    for target, (var, dim) in an.params.items():
        span = spans(Layout(dim, ((var, 1),)))
        if span is not None:
            owner, _, name = target.rpartition(".")
            slice_parameter(root.get_submodule(owner), name, span, dim)
    for bn, mean, var in norms:  # the original statistics are those of the full width
        bn.set_stats(space.key, mean.detach(), var.detach())
    if norms:
        space.calibrated[space.config] = space.key
    return root


_CONVS = ("conv", "conv_same", "conv1d", "conv3d", "conv_transpose", "conv_cat")


def _slim(m: Any, use: Use, spans: _Spans, space: WidthSpace) -> nn.Module | None:
    inp, out, mid = spans(use.inp), spans(use.out), spans(use.mid)
    if use.kind in ("bn", "bnact", "bn3d"):  # per-width statistics even where channels are whole
        if not use.in_eval:
            return TrainOnlyBatchNorm(m, inp) if inp is not None else None
        cls = USBatchNormAct if use.kind == "bnact" else USBatchNorm
        return cls.from_module(m, inp, space)
    if inp is None and out is None and mid is None:
        return None
    if use.kind == "attn":
        return USAttention.from_module(m, inp, out, mid)
    if use.kind == "mha":
        return USMultiheadAttention(m, inp, mid, out)
    if use.kind == "swin":
        return USWindowAttention(m, inp, out, mid)
    if use.kind == "embedding" and out is not None:
        return USEmbedding.from_module(m, out)
    if use.kind in _CONVS:
        return USConv.from_module(m, inp, out, same=use.kind == "conv_same")
    if use.kind == "linear":
        return USLinear.from_module(m, inp, out)
    if use.kind in ("ln", "ln2d"):
        return USLayerNorm(m, inp, channels_first=use.kind == "ln2d")
    if use.kind in ("gn", "gn1", "gnact"):
        return USGroupNorm(m, inp)
    if use.kind == "in":
        return USInstanceNorm(m, inp)
    raise ConvertError(
        "", use.kind, "no slimmable layer of this kind (a usnet bug: please report it)"
    )


@torch.no_grad()
def verify(model: nn.Module, example: Tensor, expected: Any, space: WidthSpace) -> None:
    """The converted model computes the original function at full width, and runs at the
    narrowest width (train mode: batch statistics). A failure is a converter bug, reported."""
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        model.eval()
        got = model(example)
        for a, b in zip(tensors_of(got), tensors_of(expected), strict=True):
            scale = 1.0 + float(b.abs().max()) if b.numel() else 1.0
            if a.shape != b.shape or float((a - b).abs().max()) > 1e-4 * scale:
                raise ConvertError(
                    "",
                    "self-check",
                    f"the converted network differs from the original at full width "
                    f"({_whose_fault(model)})",
                )
        model.train()
        x = example if example.shape[0] > 1 else two_samples(example)
        try:
            with space.at(space.width_min):
                model(x)
        except Exception as e:
            raise ConvertError(
                "",
                "self-check",
                f"the converted network fails at width {space.width_min} "
                f"({type(e).__name__}: {e}) ({_whose_fault(model)})",
            ) from None
    finally:
        for m, mode in modes.items():
            m.training = mode
        for b, saved in buffers:
            b.copy_(saved)


def _whose_fault(model: nn.Module) -> str:
    """Who to suspect when the converted network fails its self-check: the rules the user
    registered for modules or functions it uses (a channel-wise rule whose ``params`` miss a
    per-channel tensor fails exactly so), else usnet."""
    ruled = [name for name, m in model.named_modules() if module_rule(m) is not None]
    functions = [f.__name__ for f in registered_functions()]
    if not ruled and not functions:
        return "a usnet bug: please report it with the model"
    suspects = ", ".join(
        [f"module {name!r}" for name in ruled[:5]] + [f"function {f!r}" for f in functions[:5]]
    )
    return (
        f"check the rules registered with usnet.convert.register_rule ({suspects}): a "
        "'channelwise' rule must hold and name every per-channel parameter and buffer in "
        "params; if they do, it is a usnet bug: please report it with the model"
    )
