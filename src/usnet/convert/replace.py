"""Module replacement: the solved channel groups become a width space, and every analysed module
becomes its slimmable form over that space, keeping its weights."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import GroupRef, WidthSpace, active_channels
from ..nn.space import Width, as_ref, plan_key
from .analysis import Analysis, Use
from .errors import ConvertError
from .groups import GroupSpec, Layout
from .layers import SlimConv2d, SlimLinear, Span, slice_parameter
from .norms import (
    SlimBatchNorm,
    SlimBatchNormAct,
    SlimGroupNorm,
    SlimLayerNorm,
    SlimTrainBatchNorm,
)


class ConvertedSpace(WidthSpace):
    """The width space of a converted network: the authors' rounding (``make_divisible``,
    ``divisor`` 8, leading channels), with grouped convs kept whole.

    A group that feeds grouped convs has ``ratio`` = their group width: it runs
    ``make_divisible(full * w / ratio, divisor / gcd(divisor, ratio))`` groups, so its channels
    are a multiple of ``lcm(divisor, ratio)`` (a ResNeXt group of 4 channels: multiples of 8;
    RegNet's 24: of 24; depthwise convs: 8, the authors' rule). MobileNet v2's expansion ratio
    instead rounds ``full * w / ratio`` to the divisor, i.e. channels to multiples of ``8 * t``,
    which for group widths of 8 to 64 would leave few or no narrower networks.
    """

    def __init__(self, width_min: float, width_max: float, divisor: int = 8) -> None:
        super().__init__(width_min, width_max)
        self.divisor = int(divisor)

    def _resolve(self, config: Width) -> tuple[tuple[int, ...], str]:
        hit = self._cache.get(config)
        if hit is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            per_group = dict(config) if isinstance(config, tuple) else None
            active = tuple(
                active_channels(
                    g.full,
                    per_group[g.name] if per_group is not None else config,  # type: ignore[arg-type]
                    g.ratio,
                    self.width_max,
                    self.divisor // math.gcd(self.divisor, g.ratio),
                )
                if g.slimmable
                else g.full
                for g in self.groups
            )
            hit = self._cache[config] = (active, plan_key(active))
        return hit


class _Spans:
    """Layouts to spans (one shared span per distinct layout, so index caches are shared)."""

    def __init__(self, an: Analysis, groups: Mapping[int, GroupSpec], space: WidthSpace):
        self.an = an
        self.refs: dict[int, GroupRef] = {
            root: space.group(spec.name, spec.full, spec.ratio) for root, spec in groups.items()
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
                [(self.refs.get(root) or as_ref(solver.full[root]), f) for root, f in parts]
            )
        return span


def replace_modules(
    model: nn.Module, an: Analysis, groups: Mapping[int, GroupSpec], space: WidthSpace
) -> nn.Module:
    """Swap every analysed module for its slimmable form; returns the model (a new object only
    when the model itself was swapped, e.g. a bare ``nn.Conv2d``)."""
    spans = _Spans(an, groups, space)
    space.set(space.width_max)
    new: dict[int, nn.Module] = {}
    norms: list[tuple[SlimBatchNorm, Any, Any]] = []
    for path, use in an.uses.items():
        old = model.get_submodule(path)
        slim = _slim(old, use, spans, space)
        if slim is None:
            continue
        slim.train(old.training)
        if isinstance(slim, SlimBatchNorm):
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


def _slim(m: Any, use: Use, spans: _Spans, space: WidthSpace) -> nn.Module | None:
    inp, out = spans(use.inp), spans(use.out)
    if use.kind in ("bn", "bnact"):
        if not use.in_eval:
            return SlimTrainBatchNorm(m, inp) if inp is not None else None
        cls = SlimBatchNormAct if use.kind == "bnact" else SlimBatchNorm
        return cls(m, inp, space)
    if inp is None and out is None:
        return None
    if use.kind in ("conv", "conv_same"):
        return SlimConv2d(m, inp, out, same=use.kind == "conv_same")
    if use.kind == "linear":
        return SlimLinear(m, inp, out)
    if use.kind in ("ln", "ln2d"):
        return SlimLayerNorm(m, inp, channels_first=use.kind == "ln2d")
    return SlimGroupNorm(m, inp)


@torch.no_grad()
def verify(model: nn.Module, example: Tensor, expected: Any, space: WidthSpace) -> None:
    """The converted model computes the original function at full width, and runs at the
    narrowest width (train mode: batch statistics). A failure is a converter bug, reported."""
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        model.eval()
        got = model(example)
        for a, b in zip(_tensors(got), _tensors(expected), strict=True):
            scale = 1.0 + float(b.abs().max()) if b.numel() else 1.0
            if a.shape != b.shape or float((a - b).abs().max()) > 1e-4 * scale:
                raise ConvertError(
                    "",
                    "self-check",
                    "the converted network differs from the original at "
                    "full width (a usnet bug: please report it with the model)",
                )
        model.train()
        x = example if example.shape[0] > 1 else torch.cat([example, example.flip(0) + 0.5])
        old: Any = space.config
        space.set(space.width_min)
        try:
            model(x)
        except Exception as e:
            raise ConvertError(
                "",
                "self-check",
                f"the converted network fails at width {space.width_min} "
                f"({type(e).__name__}: {e}) (a usnet bug: please report it with the model)",
            ) from None
        finally:
            space.set(old)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for b, saved in buffers:
            b.copy_(saved)


def _tensors(v: Any) -> list[Tensor]:
    if isinstance(v, Tensor):
        return [v]
    if isinstance(v, Mapping):
        v = list(v.values())
    if isinstance(v, (tuple, list)):
        return [t for e in v for t in _tensors(e)]
    return []
