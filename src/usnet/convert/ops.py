"""How each functional operation carries channels (the rules of :mod:`.analysis`).

A rule gets the node, reads its inputs' :class:`Layout` s and recorded values, and returns the
output's layout (``None``: no slimmable channels). Operations without a rule are *measured*:
if running them on the leading half of the channels gives the leading half of their result
(activations, pooling, padding of the spatial dims, ...) they are channel-wise; anything else
on slimmable channels is refused.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from . import attention, matmul
from .groups import Layout
from .measure import commutes, evaluating, method_call
from .optable import (
    BINARY_FUNCS,
    BINARY_METHODS,
    CAT,
    CHANNELWISE_MODULES,
    EINSUM,
    LAYER_FUNCS,
    LIKE,
    MATMUL,
    NEW,
    NORMALIZE,
    NORMALIZE_METHODS,
    PIXEL,
    PIXEL_METHODS,
    SAME,
    SAME_METHODS,
    SAME_NAMES,
)
from .rules import Channelwise, function_rule
from .shapes import (
    PERMUTE,
    REDUCE,
    RESHAPE,
    SPLIT,
    Analysis,
    arg,
    bare_name,
    expand,
    getitem,
    none_like,
    permute,
    pixel_shuffle,
    reduce,
    reshape,
    sizes,
    split,
)
from .sizes import consume, size_flow, used_sizes
from .trace import module_path


def op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"{module.replace('_operator', 'operator')}.{name}".lstrip(".")


def visit(an: Analysis, node: fx.Node) -> Any:
    out: Any = an.values.get(node)
    target = node.target
    if node.op == "call_function" and target is operator.getitem:
        src = an.value(node.args[0])
        if not isinstance(src, Tensor):
            flows = an.flow(node.args[0])
            idx = node.args[1]
            if isinstance(flows, (tuple, list)) and isinstance(idx, int):
                return flows[idx]
            return None
    sized = size_flow(an, node)
    if sized is not NotImplemented:
        return sized
    if not _has_tensor(out):
        return None  # sizes, asserts, Python numbers
    result = _dispatch(an, node, out)
    return consume(an, node, out, op_name(node), result) if used_sizes(an, node) else result


def _dispatch(an: Analysis, node: fx.Node, out: Any) -> Any:
    target, name = node.target, bare_name(node)
    if isinstance(target, type) and issubclass(target, tuple):  # a named tuple of outputs
        fields = getattr(target, "_fields", ())
        named = [node.kwargs[k] for k in fields if k in node.kwargs]
        return tuple(an.flow(a) for a in [*node.args, *named])
    tensor_args_ = tensor_args(an, (node.args, node.kwargs))
    if not any(isinstance(an.flow(a), Layout) for a in tensor_args_) or (
        node.op == "call_method" and target in NEW  # only its dtype and device count
    ):
        return none_like(out)
    op = op_name(node)
    rule = function_rule(target) if node.op == "call_function" else None
    if rule is not None:
        return _registered(an, node, out, tensor_args_, op, rule)
    if target in BINARY_FUNCS or (node.op == "call_method" and target in BINARY_METHODS):
        return _broadcast(an, node, out, tensor_args_, op)
    if target in CAT:
        return _cat(an, node, out, op)
    if target is torch.stack:
        return _stack(an, node, out, op)
    if name in RESHAPE:
        return reshape(an, node, node.args[0], out, op, sizes(node, name))
    if name in ("expand", "expand_as"):
        return expand(an, node, out, op, sizes(node, name))
    if name in PERMUTE:
        return permute(an, node)
    if name in REDUCE:
        if isinstance(an.value(arg(node, 1, "dim")), Tensor):  # torch.max(x, y): elementwise
            return _broadcast(an, node, out, tensor_args_, op)
        return reduce(an, node, out)
    if name in SPLIT:
        return split(an, node, out, op, name)
    if target is operator.getitem:
        return getitem(an, node, op)
    if (
        target in LIKE
        or target in SAME
        or op in SAME_NAMES
        or (node.op == "call_method" and target in SAME_METHODS)
    ):
        return an.flow(node.args[0])
    if target in NORMALIZE or (node.op == "call_method" and target in NORMALIZE_METHODS):
        return _normalize(an, node, out)
    if target in PIXEL or (node.op == "call_method" and target in PIXEL_METHODS):
        factor = arg(node, 1, "upscale_factor", arg(node, 1, "downscale_factor"))
        inverse = PIXEL.get(target, target == "pixel_unshuffle")
        return pixel_shuffle(an, node, node.args[0], op, int(factor), bool(inverse))
    if target in MATMUL or (node.op == "call_method" and target in matmul.FUNCTIONS):
        return matmul.matmul(an, node, out, op, MATMUL.get(target, str(target)))
    if target is F.scaled_dot_product_attention:
        return attention.scaled_dot_product_attention(an, node, out, op)
    if target in EINSUM:
        an.refuse(node, [an.flow(a) for a in tensor_args_], op, matmul.ATTENTION)
        return none_like(out)
    if target is F.prelu and getattr(an.value(arg(node, 1, "weight")), "numel", lambda: 0)() == 1:
        return an.flow(node.args[0])  # one slope for all channels
    if target in LAYER_FUNCS:
        an.refuse(node, [an.flow(a) for a in tensor_args_], op, _functional(an, node))
        return none_like(out)
    return _measured(an, node, out, tensor_args_, op)


def _normalize(an: Analysis, node: fx.Node, out: Any) -> Any:
    """softmax, log_softmax, normalize over a dimension: over the channels, over the active
    ones (as layer norm does); the channels stay where they are."""
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    default = 1 if node.target is F.normalize else None
    dim = arg(node, 2 if node.target is F.normalize else 1, "dim", default)
    if isinstance(f, Layout) and isinstance(v, Tensor) and isinstance(dim, int):
        if dim % v.dim() == f.dim:
            an.over_channels.append((module_path(node), f.vars))
    return f


def _functional(an: Analysis, node: fx.Node) -> str:
    """Why a functional layer stops the channels: whose parameters, and what to do."""
    path = module_path(node)
    owner: Any = an.model.get_submodule(path) if path else an.model
    torch_base = next(
        (c for c in type(owner).__mro__[1:] if c.__module__.startswith("torch.nn.modules")), None
    )
    if torch_base is not None and torch_base is not nn.Module:
        return (
            f"{type(owner).__name__} subclasses nn.{torch_base.__name__} with a forward of its own, "
            "which usnet does not know; usnet.convert.register_rule tells it"
        )
    return (
        "a functional layer on parameters of a module usnet does not know (a custom conv or "
        "norm); usnet.convert.register_rule tells it"
    )


def _registered(
    an: Analysis, node: fx.Node, out: Any, args: list[fx.Node], op: str, rule: object
) -> Any:
    """A registered function: channel-wise on its first input, or fixed."""
    flows = [an.flow(a) for a in args]
    if not isinstance(rule, Channelwise):
        for f in flows:
            if isinstance(f, Layout):
                an.solver.fix(f.vars, f"{op} is registered as fixed")
        return none_like(out)
    first, xv = flows[0], an.value(args[0])
    an.refuse(node, flows[1:], op, "a channel-wise rule follows its first input only")
    if not isinstance(out, Tensor) or not isinstance(first, Layout):
        an.refuse(node, first, op, "a channel-wise rule needs one tensor in and one out")
        return none_like(out)
    if first.dim != rule.dim % xv.dim():
        an.refuse(node, first, op, f"its rule reads channels on dimension {rule.dim}")
        return None
    return first


# -- broadcasting and concatenation -------------------------------------------------------
def _broadcast(an: Analysis, node: fx.Node, out: Any, args: list[fx.Node], op: str) -> Any:
    """Elementwise ops: channels on one output dimension are one group; an operand of fixed
    size there (a position embedding, a constant) fixes them; size 1 broadcasts (SE gates)."""
    if not isinstance(out, Tensor):
        return None
    rank = out.dim()
    found: dict[int, list[Layout]] = {}
    for a in args:
        v, f = an.value(a), an.flow(a)
        if isinstance(f, Layout) and v.shape[f.dim] > 1:
            found.setdefault(f.dim + rank - v.dim(), []).append(f)
    if not found:
        return None
    if len(found) > 1:  # channels meet on different dimensions: none of them slims
        for layouts in found.values():
            for f in layouts:
                an.solver.fix(f.vars, f"{op} meets channels on another dimension")
        return None
    ((dim, layouts),) = found.items()
    first = layouts[0]
    for f in layouts[1:]:
        an.solver.tie(first, f, an.error(node, op, _mismatch(an, first, f)))
    for a in args:
        v, f = an.value(a), an.flow(a)
        d = dim - (rank - v.dim())
        if d >= 0 and v.shape[d] > 1 and not (isinstance(f, Layout) and f.dim == d):
            if isinstance(f, Layout) or not attention.per_channel_state(an, node, a, d, first, op):
                an.meets_fixed(first, a, f"{op} meets a tensor of fixed size")
    return Layout(dim, first.segs)


def _mismatch(an: Analysis, a: Layout, b: Layout) -> str:
    """Why two operands' channels cannot be one group."""
    if len(a.segs) > 1 or len(b.segs) > 1:
        return "it combines tensors whose channels are concatenated differently"
    (va, fa), (vb, fb) = a.segs[0], b.segs[0]
    return (
        f"it combines a tensor of {fa} entries per channel of a group of {an.solver.full[va]} "
        f"with one of {fb} per channel of a group of {an.solver.full[vb]}, at no whole ratio"
    )


def _cat(an: Analysis, node: fx.Node, out: Any, op: str) -> Any:
    parts, dim = arg(node, 0, "tensors"), arg(node, 1, "dim", 0)
    values = [an.value(p) for p in parts]
    flows = [an.flow(p) for p in parts]
    d = dim % out.dim()
    if not any(isinstance(f, Layout) and f.dim == d for f in flows):
        return _broadcast(an, node, out, list(parts), op)  # along another dimension
    segs: list[tuple[int, int]] = []
    for v, f in zip(values, flows, strict=True):
        if isinstance(f, Layout) and f.dim == d:
            segs.extend(f.segs)
            continue
        if isinstance(f, Layout):
            an.refuse(
                node,
                f,
                op,
                "it concatenates along the channels of one part and another dimension of the other",
            )
        if v.shape[d]:
            segs.append((an.fixed(v.shape[d]), 1))
    return Layout(d, tuple(segs))


def _stack(an: Analysis, node: fx.Node, out: Any, op: str) -> Any:
    parts, dim = arg(node, 0, "tensors"), arg(node, 1, "dim", 0)
    d = dim % out.dim()
    moved = [
        Layout(f.dim + (f.dim >= d), f.segs) if isinstance(f, Layout) else None
        for f in (an.flow(p) for p in parts)
    ]
    first = next((f for f in moved if f is not None), None)
    if first is None:
        return None
    for f in moved:
        an.solver.tie(first, f, an.error(node, op, "it stacks tensors of different channels"))
    return first


# -- everything else ----------------------------------------------------------------------
def _measured(an: Analysis, node: fx.Node, out: Any, args: list[fx.Node], op: str) -> Any:
    """An operation without a rule: channel-wise if it commutes with taking leading channels."""
    carrying = [a for a in args if isinstance(an.flow(a), Layout)]
    why = "it combines several tensors of slimmable channels"
    if len(carrying) == 1:
        x = carrying[0]
        f = an.flow(x)
        why = commutes(an.values, method_call(node), node.args, node.kwargs, x, f.dim) or ""
        if not why:
            return f
    an.refuse(
        node,
        [an.flow(a) for a in args],
        op,
        f"usnet cannot tell that this operation treats channels one by one ({why})",
    )
    return none_like(out)


def param_free_module(
    an: Analysis, node: fx.Node, m: nn.Module, lin: Any, xv: Any, out: Any
) -> Any:
    """A leaf module without parameters: flatten, dropout, pixel shuffle, or measured."""
    op = type(m).__name__
    if not isinstance(lin, Layout):
        return none_like(out)
    if isinstance(m, nn.Flatten):
        return reshape(an, node, node.args[0], out, op, None)
    if isinstance(m, nn.Unflatten):
        return reshape(an, node, node.args[0], out, op, (m.dim, list(m.unflattened_size)))
    if isinstance(m, nn.PixelShuffle):
        return pixel_shuffle(an, node, node.args[0], op, m.upscale_factor, False)
    if isinstance(m, nn.PixelUnshuffle):
        return pixel_shuffle(an, node, node.args[0], op, m.downscale_factor, True)
    if isinstance(m, CHANNELWISE_MODULES):
        return lin
    why = "it is called with several arguments"
    if len(node.args) == 1 and not node.kwargs:
        with evaluating(m):
            why = commutes(an.values, m, node.args, {}, arg(node, 0, "input"), lin.dim) or ""
        if not why:
            return lin
    an.refuse(node, lin, op, f"it is not channel-wise on the example input ({why})")
    return none_like(out)


def _has_tensor(v: Any) -> bool:
    if isinstance(v, Tensor):
        return True
    return isinstance(v, (tuple, list)) and any(isinstance(e, Tensor) for e in v)


def tensor_args(an: Analysis, args: Any) -> list[fx.Node]:
    found: list[fx.Node] = []

    def visit(n: fx.Node) -> fx.Node:
        if isinstance(an.value(n), Tensor):
            found.append(n)
        return n

    fx.node.map_arg(args, visit)
    return found
