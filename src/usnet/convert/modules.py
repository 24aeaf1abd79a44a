"""How each module carries channels (the module rules of :mod:`.analysis`).

A conv or linear makes new channels (a variable named after it) from the channels it reads; a
grouped conv keeps its group width, so its outputs follow its inputs' groups (several, over a
concatenation); norms and per-channel layers pass their input's layout through, their
per-channel parameters joining its group; a user's :func:`~.rules.register_rule` says what
their own module does.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, fx, nn

from . import attention, ops
from .groups import Layout
from .rules import ATTENTION_KINDS, Channelwise, Rule, kind_of, module_rule
from .shapes import Analysis, none_like

_UNKNOWN = {
    "TransformerDecoderLayer": "a decoder's cross-attention reads another tensor's keys and "
    "values (usnet slims self-attention)",
}
_CONV_KINDS = ("conv", "conv_same", "conv1d", "conv3d", "conv_transpose")
_BN_KINDS = ("bn", "bnact", "bn3d")
_NORM_KINDS = ("ln2d", "gn1", "in")  # norms over dim 1 whose groups are free


def visit(an: Analysis, node: fx.Node) -> Any:
    path = str(node.target)
    m: Any = an.model.get_submodule(path)
    inputs = ops.tensor_args(an, (node.args, node.kwargs))
    x = inputs[0] if inputs else None
    lin, xv, out_v = an.flow(x), an.value(x), an.values.get(node)
    op = type(m).__name__
    rule = module_rule(m)
    if rule is not None:
        return _registered(an, node, m, rule, inputs, out_v)
    kind = kind_of(m)
    if kind is None or kind == "prelu":
        if path in an.keep or (kind is None and any(True for _ in m.parameters())):
            problem = (
                "a kept module is one block that does not slim, so its inputs must not slim"
                if path in an.keep
                else _UNKNOWN.get(
                    op,
                    f"usnet does not know how to slim a {op} (a module with parameters); "
                    "usnet.convert.register_rule tells it",
                )
            )
            an.refuse(node, [an.flow(a) for a in inputs], op, problem)
            return none_like(out_v)
        if kind == "prelu":
            return _prelu(an, node, m, lin)
        return ops.param_free_module(an, node, m, lin, xv, out_v)
    if kind in ATTENTION_KINDS or kind == "embedding":
        return attention.visit(an, node, m, kind, inputs)
    if not isinstance(xv, Tensor) or not isinstance(out_v, Tensor):
        an.refuse(node, [an.flow(a) for a in inputs], op, "it is called without a tensor input")
        return none_like(out_v)
    emit = True
    if kind in _CONV_KINDS:
        lin = an.at(node, lin, 1, op)
        if m.groups > 1:
            out = _grouped(an, node, m, lin, op)
            if out is not None and len(out.segs) > 1:
                kind = "conv_cat"
                if m.transposed:  # USConv takes whole groups of inputs as a prefix
                    an.refuse(node, out, op, "a grouped transposed conv over a concatenation")
        else:
            out = an.output(path, m.out_channels, 1)
    elif kind == "linear":
        lin = an.at(node, lin, xv.dim() - 1, op)
        out = an.output(path, m.out_features, out_v.dim() - 1)
    elif kind in _BN_KINDS:
        out = lin = an.at(node, lin, 1, op)
        if not getattr(m, "track_running_stats", True) or m.running_mean is None:  # stays whole
            emit = False
            an.refuse(
                node,
                lin,
                op,
                "track_running_stats=False normalises with batch statistics in eval mode, "
                "which per-width statistics cannot reproduce",
            )
        if kind == "bnact" and any(True for _ in (*m.act.parameters(), *m.drop.parameters())):
            an.refuse(node, lin, op, "its activation has parameters")
    elif kind == "ln":
        if len(m.normalized_shape) != 1:
            an.refuse(node, lin, op, "it normalises over several dimensions")
            lin = None
        out = lin = an.at(node, lin, xv.dim() - 1, op)
    elif kind in _NORM_KINDS or (kind == "gnact" and m.num_groups == 1):
        out = lin = an.at(node, lin, 1, op)
    else:  # group norm: a prefix of whole groups
        out = lin = an.at(node, lin, 1, op)
        if lin is not None:
            if len(lin.segs) != 1:
                an.refuse(node, lin, op, "group norm over a concatenation of channel groups")
            else:
                var, f = lin.segs[0]
                width = m.num_channels // m.num_groups
                an.solver.multiple(var, width // math.gcd(width, f))
    if lin is not None and (
        kind in ("ln", "ln2d", "gn1") or (kind == "gnact" and m.num_groups == 1)
    ):
        an.over_channels.append((path, lin.vars))
    if path in an.keep and out is not None:
        an.solver.fix(out.vars, f"'{path}' is kept")
    if emit:
        an.use(path, kind, lin, out)
    return out


def _grouped(an: Analysis, node: fx.Node, m: Any, lin: Layout | None, op: str) -> Layout | None:
    """A grouped conv keeps its group width: its outputs follow its inputs' groups, segment by
    segment (a depthwise conv over a concatenation), each a whole number of conv groups."""
    gin, gout = m.in_channels // m.groups, m.out_channels // m.groups
    if lin is None:
        return None
    segs = []
    for var, f in lin.segs:
        if (an.solver.full[var] * f) % gin or (f * gout) % gin:
            an.refuse(
                node,
                lin,
                op,
                f"a grouped conv (groups={m.groups}) whose groups straddle the parts of a "
                "concatenation or with a fractional channel multiplier",
            )
            return None
        an.solver.multiple(var, gin // math.gcd(gin, f))
        segs.append((var, f * gout // gin))
    return Layout(1, tuple(segs))


def _prelu(an: Analysis, node: fx.Node, m: nn.PReLU, lin: Any) -> Any:
    """``PReLU``: channel-wise on dimension 1; a per-channel slope joins the channels' group."""
    lin = an.at(node, lin, 1, "PReLU")
    if lin is not None and m.num_parameters > 1:
        _per_channel(an, node, f"{node.target}.weight", m.num_parameters, lin, "PReLU")
    return lin


def _per_channel(an: Analysis, node: fx.Node, target: str, size: int, lin: Layout, op: str) -> None:
    if target not in an.params:
        an.params[target] = (an.solver.new(size), 0)
    var, _ = an.params[target]
    problem = "its per-channel parameters meet a concatenation of channel groups"
    an.solver.tie(Layout(lin.dim, ((var, 1),)), lin, an.error(node, op, problem))


def _registered(
    an: Analysis, node: fx.Node, m: nn.Module, rule: Rule, inputs: list[fx.Node], out: Any
) -> Any:
    op, path = type(m).__name__, str(node.target)
    flows = [an.flow(a) for a in inputs]
    if not isinstance(rule, Channelwise) or path in an.keep:
        for f in flows:
            if isinstance(f, Layout):
                an.solver.fix(f.vars, f"{op} is registered as fixed")
        return none_like(out)
    lin, xv = flows[0] if flows else None, an.value(inputs[0]) if inputs else None
    if not isinstance(xv, Tensor) or not isinstance(out, Tensor):
        an.refuse(node, flows, op, "a channel-wise rule needs one tensor in and one out")
        return none_like(out)
    an.refuse(node, flows[1:], op, "a channel-wise rule follows its first input only")
    lin = an.at(node, lin, rule.dim % xv.dim(), op)
    if lin is None:
        return None
    for name in rule.params:
        value = getattr(m, name, None)
        if not isinstance(value, Tensor) or value.dim() < 1:
            an.refuse(node, lin, op, f"its rule names {name!r}, which is no tensor of it")
            continue
        _per_channel(an, node, f"{path}.{name}", value.shape[0], lin, op)
    return lin
