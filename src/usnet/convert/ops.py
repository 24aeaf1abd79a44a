"""How each functional operation carries channels (the rules of :mod:`.analysis`).

A rule gets the node, reads its inputs' :class:`Layout` s and recorded values, and returns the
output's layout (``None``: no slimmable channels). Operations without a rule are *measured*:
if running them on the leading half of the channels gives the leading half of their result
(activations, pooling, padding of the spatial dims, ...) they are channel-wise; anything else
on slimmable channels is refused.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .groups import Layout
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
    reduce,
    reshape,
    sizes,
    split,
)

_BINARY_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.pow, operator.iadd, operator.isub, operator.imul, operator.itruediv,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.true_divide, torch.maximum, torch.minimum, torch.where, torch.pow, torch.addcmul,
    torch.lerp, torch.masked_fill,
}  # fmt: skip
_BINARY_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "true_divide", "pow", "pow_",
    "maximum", "minimum", "where", "addcmul", "addcmul_", "lerp", "lerp_", "masked_fill",
    "masked_fill_", "__add__", "__radd__", "__iadd__", "__mul__", "__rmul__", "__imul__",
    "__sub__", "__rsub__", "__truediv__", "__rtruediv__",
}  # fmt: skip
_CAT = {torch.cat, torch.concat, torch.concatenate}
_LIKE = {torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
         torch.randn_like}  # fmt: skip
#: Random per-sample or per-channel masks: not measurable, channel-wise by definition.
_SAME = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
         F.feature_alpha_dropout, torch.dropout}  # fmt: skip
_SAME_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}
_SAME_METHODS = {"contiguous", "clone", "detach", "float", "to", "type", "half", "bfloat16",
                 "double", "requires_grad_"}  # fmt: skip
_LAYER_FUNCS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d, F.batch_norm,
                F.layer_norm, F.group_norm, F.instance_norm, F.embedding, F.prelu,
                F.multi_head_attention_forward}  # fmt: skip
_ATTENTION = {F.scaled_dot_product_attention, torch.matmul, operator.matmul, torch.bmm,
              torch.einsum, torch.baddbmm}  # fmt: skip
_ATTENTION_METHODS = {"matmul", "bmm", "__matmul__", "baddbmm"}
#: Leaf modules that are channel-wise by definition (random ones cannot be measured).
_CHANNELWISE_MODULES = (
    nn.modules.dropout._DropoutNd, nn.Identity, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip


def op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"{module.replace('_operator', 'operator')}.{name}".lstrip(".")


def visit(an: Analysis, node: fx.Node) -> Any:
    out: Any = an.values.get(node)
    target, name = node.target, bare_name(node)
    if node.op == "call_function" and target is operator.getitem:
        src = an.value(node.args[0])
        if not isinstance(src, Tensor):
            flows = an.flow(node.args[0])
            idx = node.args[1]
            if isinstance(flows, (tuple, list)) and isinstance(idx, int):
                return flows[idx]
            return None
    if not _has_tensor(out):
        return None  # sizes, asserts, Python numbers
    if isinstance(target, type) and issubclass(target, tuple):  # a named tuple of outputs
        fields = getattr(target, "_fields", ())
        named = [node.kwargs[k] for k in fields if k in node.kwargs]
        return tuple(an.flow(a) for a in [*node.args, *named])
    tensor_args = _tensor_args(an, (node.args, node.kwargs))
    if not any(isinstance(an.flow(a), Layout) for a in tensor_args):
        return none_like(out)
    op = op_name(node)
    if target in _BINARY_FUNCS or (node.op == "call_method" and target in _BINARY_METHODS):
        return _broadcast(an, node, out, tensor_args, op)
    if target in _CAT:
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
            return _broadcast(an, node, out, tensor_args, op)
        return reduce(an, node, out)
    if name in SPLIT:
        return split(an, node, out, op, name)
    if target is operator.getitem:
        return getitem(an, node, op)
    if (
        target in _LIKE
        or target in _SAME
        or op in _SAME_NAMES
        or (node.op == "call_method" and target in _SAME_METHODS)
    ):
        return an.flow(node.args[0])
    if target in _ATTENTION or (node.op == "call_method" and target in _ATTENTION_METHODS):
        an.refuse(
            node,
            [an.flow(a) for a in tensor_args],
            op,
            "matrix products (attention) do not slim: usnet slims channels of CNNs",
        )
        return none_like(out)
    if target in _LAYER_FUNCS:
        an.refuse(
            node,
            [an.flow(a) for a in tensor_args],
            op,
            "a functional layer on "
            "parameters of a module usnet does not know (a custom conv or norm)",
        )
        return none_like(out)
    return _measured(an, node, out, tensor_args, op)


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
                an.solver.fix(f.vars)
        return None
    ((dim, layouts),) = found.items()
    first = layouts[0]
    for f in layouts[1:]:
        an.solver.tie(
            first,
            f,
            an.error(node, op, "it combines tensors whose channels are concatenated differently"),
        )
    for a in args:
        v, f = an.value(a), an.flow(a)
        d = dim - (rank - v.dim())
        if d >= 0 and v.shape[d] > 1 and not (isinstance(f, Layout) and f.dim == d):
            an.solver.fix(first.vars)
    return Layout(dim, first.segs)


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
    first = next(f for f in moved if f is not None)
    for f in moved:
        an.solver.tie(first, f, an.error(node, op, "it stacks tensors of different channels"))
    return first


# -- everything else ----------------------------------------------------------------------
def _measured(an: Analysis, node: fx.Node, out: Any, args: list[fx.Node], op: str) -> Any:
    """An operation without a rule: channel-wise if it commutes with taking leading channels."""
    carrying = [a for a in args if isinstance(an.flow(a), Layout)]
    if len(carrying) == 1:
        x = carrying[0]
        f = an.flow(x)
        call = _callable(node)
        if commutes(an, call, node.args, node.kwargs, x, f.dim):
            return f
    an.refuse(
        node,
        [an.flow(a) for a in args],
        op,
        "usnet cannot tell that this operation "
        "treats channels one by one (it is not channel-wise on the example input)",
    )
    return none_like(out)


def param_free_module(
    an: Analysis, node: fx.Node, m: nn.Module, lin: Any, xv: Any, out: Any
) -> Any:
    """A leaf module without parameters: flatten, dropout, or measured like an op."""
    op = type(m).__name__
    if not isinstance(lin, Layout):
        return none_like(out)
    if isinstance(m, nn.Flatten):
        return reshape(an, node, node.args[0], out, op, None)
    if isinstance(m, nn.Unflatten):
        return reshape(an, node, node.args[0], out, op, (m.dim, list(m.unflattened_size)))
    if isinstance(m, _CHANNELWISE_MODULES):
        return lin
    single = len(node.args) == 1 and not node.kwargs
    with _eval(m):
        if single and commutes(an, m, node.args, {}, arg(node, 0, "input"), lin.dim):
            return lin
    an.refuse(node, lin, op, "it is not channel-wise on the example input")
    return none_like(out)


def commutes(an: Analysis, call: Callable, args: Any, kwargs: Any, x: fx.Node, dim: int) -> bool:
    """Whether ``call`` on the leading half of ``x``'s channels gives the leading half of its
    result (same random seed for both runs)."""
    full_in = an.values[x]
    channels = full_in.shape[dim]
    if channels < 2:
        return True
    half = channels // 2

    def concrete(narrow: bool) -> tuple[Any, Any]:
        def value(n: fx.Node) -> Any:
            v = an.values[n]
            if n is x and narrow:
                v = v.narrow(dim, 0, half)
            return v.clone() if isinstance(v, Tensor) else v

        return fx.node.map_arg(args, value), fx.node.map_arg(kwargs, value)

    rng = torch.default_generator  # CPU only: torch.manual_seed would queue CUDA seeding too
    state = rng.get_state()
    try:
        with torch.no_grad():
            rng.manual_seed(0)
            a, k = concrete(False)
            full = call(*a, **k)
            rng.manual_seed(0)
            a, k = concrete(True)
            part = call(*a, **k)
    except Exception:
        return False
    finally:
        rng.set_state(state)
    if not (isinstance(full, Tensor) and isinstance(part, Tensor)):
        return False
    if full.dim() != full_in.dim() or full.shape[dim] != channels:
        return False
    want = full.narrow(dim, 0, half)
    return want.shape == part.shape and torch.allclose(
        want, part, rtol=1e-5, atol=1e-6, equal_nan=True
    )


def _callable(node: fx.Node) -> Callable:
    if node.op == "call_function":
        return cast(Callable, node.target)
    name = str(node.target)
    return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)


@contextlib.contextmanager
def _eval(m: nn.Module) -> Iterator[None]:
    modes = [(s, s.training) for s in m.modules()]
    m.eval()
    try:
        yield
    finally:
        for s, mode in modes:
            s.training = mode


def _has_tensor(v: Any) -> bool:
    if isinstance(v, Tensor):
        return True
    return isinstance(v, (tuple, list)) and any(isinstance(e, Tensor) for e in v)


def _tensor_args(an: Analysis, args: Any) -> list[fx.Node]:
    found: list[fx.Node] = []

    def visit(n: fx.Node) -> fx.Node:
        if isinstance(an.value(n), Tensor):
            found.append(n)
        return n

    fx.node.map_arg(args, visit)
    return found
