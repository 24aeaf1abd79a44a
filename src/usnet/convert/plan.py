"""The result of a conversion's analysis as data: channel groups, and each layer's spans.

A *plan* is what :mod:`.replace` needs to build the slimmable model from the plain network —
the slimmable groups (name, full size, multiple), every analysed layer's kind and the spans of
its input and output (segments of a group name, or a fixed channel count, with their factor),
and the per-channel parameters sliced with a group — and nothing about how it was found. It is
JSON, so a checkpoint can hold it and a load rebuild the model without tracing, and it names
every layer's channels, so an independent check (:mod:`.oracle`) can zero what a width drops.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from .analysis import Analysis, Use
from .errors import ConvertError
from .groups import GroupSpec, Layout
from .rules import kind_of

#: A span as data: segments ``(group name or fixed channel count, factor)`` end to end.
SpanPlan = tuple[tuple[str | int, int], ...]
VERSION = 1


@dataclass(frozen=True)
class LayerPlan:
    kind: str
    inp: SpanPlan | None
    out: SpanPlan | None
    in_eval: bool
    #: channels inside the layer: an attention's heads
    mid: SpanPlan | None = None


@dataclass(frozen=True)
class Plan:
    groups: tuple[GroupSpec, ...]
    layers: Mapping[str, LayerPlan]
    #: per-channel parameters: target -> (span, dimension)
    params: Mapping[str, tuple[SpanPlan, int]]
    #: modules whose forward computes over the active channels (layer norm, a channel mean)
    over_channels: tuple[str, ...] = ()
    #: the groups those computations run over (``None``: not recorded, i.e. any group)
    over_groups: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc = {
            "version": VERSION,
            "groups": [[g.name, g.full, g.ratio, g.divisor, g.kind] for g in self.groups],
            "layers": {
                p: [u.kind, _span_json(u.inp), _span_json(u.out), u.in_eval]
                + ([_span_json(u.mid)] if u.mid is not None else [])
                for p, u in self.layers.items()
            },
            "params": {t: [_span_json(s), d] for t, (s, d) in self.params.items()},
            "over_channels": list(self.over_channels),
        }
        if self.over_groups is not None:
            doc["over_groups"] = list(self.over_groups)
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Plan:
        """The plan of ``doc``; a :class:`ConvertError` if it is not one this usnet wrote."""
        try:
            if doc["version"] != VERSION:
                raise UsageError(f"version {doc['version']!r}, not {VERSION}")
            groups = tuple(_group(g) for g in doc["groups"])
            layers = {str(p): _layer(v) for p, v in doc["layers"].items()}
            params = {str(t): (_span(s) or (), int(d)) for t, (s, d) in doc["params"].items()}
            over = tuple(str(p) for p in doc["over_channels"])
            over_groups = doc.get("over_groups")
            if over_groups is not None:
                over_groups = tuple(str(g) for g in over_groups)
        except (KeyError, TypeError, ValueError) as e:
            raise ConvertError("", "conversion plan", f"it is not a usnet plan ({e})") from None
        return cls(groups, layers, params, over, over_groups)


def _group(data: Any) -> GroupSpec:
    """``[name, full, ratio]``, with the group's own divisor and kind where recorded."""
    name, full, ratio, *rest = data
    if len(rest) > 2:
        raise TypeError(f"a group of {len(data)} fields")
    divisor = int(rest[0]) if rest else 0
    kind = str(rest[1]) if len(rest) > 1 else ""
    return GroupSpec(str(name), int(full), int(ratio), divisor, kind)


def _layer(data: Any) -> LayerPlan:
    """``[kind, inp, out, in_eval]``, with the span inside the layer (heads) where it has one."""
    kind, inp, out, in_eval, *rest = data
    if len(rest) > 1:
        raise TypeError(f"a layer of {len(data)} fields")
    mid = _span(rest[0]) if rest else None
    return LayerPlan(str(kind), _span(inp), _span(out), bool(in_eval), mid)


def _span_json(span: SpanPlan | None) -> list | None:
    return None if span is None else [[g, f] for g, f in span]


def _span(data: Any) -> SpanPlan | None:
    if data is None:
        return None
    return tuple((g if isinstance(g, str) else int(g), int(f)) for g, f in data)


def make_plan(an: Analysis, groups: Mapping[int, GroupSpec]) -> Plan:
    """The plan of a solved analysis (its uses' layouts over root variables)."""
    solver = an.solver

    def span(layout: Layout | None) -> SpanPlan | None:
        if layout is None:
            return None
        parts = solver.segments(layout)
        if not any(root in groups for root, _ in parts):
            return None  # nothing slims: the layer runs as it is
        return tuple((groups[r].name if r in groups else solver.full[r], f) for r, f in parts)

    layers = {
        path: LayerPlan(use.kind, span(use.inp), span(use.out), use.in_eval, span(use.mid))
        for path, use in an.uses.items()
    }
    params = {}
    for target, (var, dim) in an.params.items():
        s = span(Layout(dim, ((var, 1),)))
        if s is not None:
            params[target] = (s, dim)
    over = tuple(
        dict.fromkeys(
            p for p, vars in an.over_channels if any(solver.find(v) in groups for v in vars)
        )
    )
    over_groups = tuple(
        dict.fromkeys(
            groups[solver.find(v)].name
            for _, vars in an.over_channels
            for v in vars
            if solver.find(v) in groups
        )
    )
    kinds = group_kinds(an, groups)
    specs = tuple(replace(spec, kind=kinds[root]) for root, spec in groups.items())
    return Plan(specs, layers, params, over, over_groups)


#: Layer kinds whose inputs and outputs are a transformer's embedding (residual stream).
EMBEDDING_KINDS = ("attn", "mha", "swin", "embedding", "ln")


def group_kinds(an: Analysis, groups: Mapping[int, GroupSpec]) -> dict[int, str]:
    """What each group is: ``"heads"`` (whole attention heads), ``"embedding"`` (what attention
    reads and writes, or a layer norm normalises: the residual stream), ``"mlp"`` (made by a
    linear otherwise: hidden units) or ``"channels"`` (a conv's)."""
    solver = an.solver
    embedding: set[int] = set()
    for use in an.uses.values():
        if use.kind in EMBEDDING_KINDS:
            for lay in (use.inp, use.out):
                if lay is not None:
                    embedding.update(solver.find(v) for v in lay.vars)
    kinds = {}
    for root, spec in groups.items():
        if solver.heads(root):
            kinds[root] = "heads"
        elif root in embedding:
            kinds[root] = "embedding"
        else:
            maker = an.model.get_submodule(spec.name) if spec.name else None
            kinds[root] = "mlp" if isinstance(maker, nn.Linear) else "channels"
    return kinds


def analysis_of(model: nn.Module, plan: Plan) -> tuple[Analysis, dict[int, GroupSpec]]:
    """An analysis that :func:`~.replace.replace_modules` builds ``plan``'s model from."""
    an = Analysis(model, frozenset())
    solver = an.solver
    roots = {g.name: solver.new(g.full, g.name) for g in plan.groups}
    groups = {roots[g.name]: g for g in plan.groups}

    def layout(span: SpanPlan | None, dim: int = 1) -> Layout | None:
        if span is None:
            return None
        segs = []
        for g, f in span:
            if isinstance(g, str) and g not in roots:
                raise ConvertError("", "conversion plan", f"it names no group {g!r}")
            segs.append((roots[g] if isinstance(g, str) else solver.new(g, fixed=True), f))
        return Layout(dim, tuple(segs))

    for path, lp in plan.layers.items():
        an.uses[path] = Use(lp.kind, layout(lp.inp), layout(lp.out), lp.in_eval, layout(lp.mid))
    for target, (span, dim) in plan.params.items():
        lay = layout(span, dim)
        if lay is not None and len(lay.segs) == 1 and lay.segs[0][1] == 1:
            an.params[target] = (lay.segs[0][0], dim)
    return an, groups


def fingerprint(model: nn.Module) -> str:
    """A hash of what decides a model's data flow apart from its arguments: the module tree and
    each module class's ``forward`` source, with torch's and this plan format's versions. A
    recorded plan is used for a model of the same fingerprint only."""
    h = hashlib.sha256(f"{VERSION} {torch.__version__}".encode())
    classes: dict[type, None] = {}
    for path, m in model.named_modules():
        h.update(f"{path}:{type(m).__module__}.{type(m).__qualname__};".encode())
        classes.setdefault(type(m))
    for cls in classes:
        try:
            source = inspect.getsource(getattr(cls, "forward"))  # noqa: B009
        except (OSError, TypeError):
            source = ""
        h.update(source.encode())
    return h.hexdigest()[:32]


def check(plan: Plan, model: nn.Module) -> None:
    """``plan`` fits ``model``: every layer it names is there, of its kind, and its spans hold
    the module's channel counts; a :class:`ConvertError` otherwise (a plan is data from a
    file: it must not make usnet slice a layer it does not describe)."""
    full = {g.name: g.full for g in plan.groups}
    if any(g.full < 1 or g.ratio < 1 for g in plan.groups):
        raise ConvertError("", "conversion plan", "a group of no channels")

    def size(span: SpanPlan | None) -> int | None:
        if span is None:
            return None
        if any(f < 1 or (isinstance(g, str) and g not in full) for g, f in span):
            raise ConvertError("", "conversion plan", f"a span of unknown groups {span}")
        return sum((full[g] if isinstance(g, str) else g) * f for g, f in span)

    for path, layer in plan.layers.items():
        try:
            m: Any = model.get_submodule(path)
        except AttributeError:
            raise ConvertError(path, "conversion plan", "no such module") from None
        kind = kind_of(m)
        if kind != layer.kind and not (layer.kind == "conv_cat" and kind == "conv"):
            raise ConvertError(path, "conversion plan", f"a {kind}, not a {layer.kind}")
        inp, out, mid = size(layer.inp), size(layer.out), size(layer.mid)
        sizes = (*_channels(m), getattr(m, "num_heads", None))
        if any(
            s is not None and s != want
            for s, want in zip((inp, out, mid), sizes, strict=True)
        ):
            raise ConvertError(path, "conversion plan", f"spans of {inp, out, mid}, not {sizes}")
    for target, (span, dim) in plan.params.items():
        t: torch.Tensor
        try:
            t = model.get_parameter(target)
        except AttributeError:
            try:
                t = model.get_buffer(target)
            except AttributeError:
                raise ConvertError(target, "conversion plan", "no such tensor") from None
        if not 0 <= dim < t.dim() or t.shape[dim] != size(span):
            raise ConvertError(target, "conversion plan", f"no {size(span)} channels on {dim}")


def _channels(m: Any) -> tuple[int | None, int]:
    """A layer's input and output channel counts."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.MultiheadAttention):
        return m.embed_dim, m.embed_dim
    if isinstance(m, nn.Embedding):
        return None, m.embedding_dim
    if hasattr(m, "qkv") and hasattr(m, "proj"):  # timm's and torchvision's attention
        return m.qkv.in_features, m.proj.out_features
    if hasattr(m, "in_channels"):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[0], m.normalized_shape[0]
    c = getattr(m, "num_features", 0) or getattr(m, "num_channels", 0)
    c = int(c or m.weight.shape[0])  # FrozenBatchNorm2d keeps no count
    return c, c
