"""How each functional operation carries channels (the rules of :mod:`.analysis`).

A rule gets the node, reads its inputs' :class:`Layout` s and recorded values, and returns the
output's layout (``None``: no slimmable channels). Operations without a rule are *measured*:
if running them on the leading half of the channels gives the leading half of their result
(activations, pooling, padding of the spatial dims, ...) they are channel-wise; anything else
on slimmable channels is refused.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .groups import Layout, MakeError, Solver


class Analysis(Protocol):
    """What the rules use of :class:`~usnet.convert.analysis.Analysis`."""

    values: dict[fx.Node, Any]
    solver: Solver

    def flow(self, a: Any) -> Any: ...
    def value(self, a: Any) -> Any: ...
    def error(self, node: fx.Node, op: str, problem: str, hint: str = "") -> MakeError: ...
    def refuse(self, node: fx.Node, layout: Any, op: str, problem: str, hint: str = "") -> None: ...
    def fixed(self, channels: int) -> int: ...


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
_RESHAPE = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "unflatten", "view_as",
            "reshape_as"}  # fmt: skip
_PERMUTE = {"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t"}
#: Reductions with the signature ``(dim, keepdim)``.
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "logsumexp", "nansum", "nanmean"}
_SPLIT = {"chunk", "split", "unbind", "tensor_split", "split_with_sizes"}
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


def _name(node: fx.Node) -> str:
    """The bare function or method name (``torch.flatten`` and ``x.flatten`` alike)."""
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    name = getattr(target, "__name__", "")
    return name if getattr(torch, name, None) is target else ""


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    """Argument ``i`` (or keyword ``name``) of a call, untyped as the rules use it."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def visit(an: Analysis, node: fx.Node) -> Any:
    out: Any = an.values.get(node)
    target, name = node.target, _name(node)
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
        return _none_like(out)
    op = op_name(node)
    if target in _BINARY_FUNCS or (node.op == "call_method" and target in _BINARY_METHODS):
        return _broadcast(an, node, out, tensor_args, op)
    if target in _CAT:
        return _cat(an, node, out, op)
    if target is torch.stack:
        return _stack(an, node, out, op)
    if name in _RESHAPE:
        return reshape(an, node, node.args[0], out, op, _sizes(node, name))
    if name in ("expand", "expand_as"):
        return _expand(an, node, out, op, _sizes(node, name))
    if name in _PERMUTE:
        return _permute(an, node, op)
    if name in _REDUCE:
        return _reduce(an, node, out, op, tensor_args)
    if name in _SPLIT:
        return _split(an, node, out, op, name)
    if target is operator.getitem:
        return _getitem(an, node, op)
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
        return _none_like(out)
    if target in _LAYER_FUNCS:
        an.refuse(
            node,
            [an.flow(a) for a in tensor_args],
            op,
            "a functional layer on "
            "parameters of a module usnet does not know (a custom conv or norm)",
        )
        return _none_like(out)
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
    parts, dim = _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0)
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
    parts, dim = _arg(node, 0, "tensors"), _arg(node, 1, "dim", 0)
    d = dim % out.dim()
    moved = [
        Layout(f.dim + (f.dim >= d), f.segs) if isinstance(f, Layout) else None
        for f in (an.flow(p) for p in parts)
    ]
    first = next(f for f in moved if f is not None)
    for f in moved:
        an.solver.tie(first, f, an.error(node, op, "it stacks tensors of different channels"))
    return first


# -- shapes -------------------------------------------------------------------------------
def _runs(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[range, range]] | None:
    """Pair runs of dimensions of shapes ``a`` and ``b`` with equal products."""
    i = j = 0
    runs = []
    while i < len(a) or j < len(b):
        i0, j0, pa, pb = i, j, 1, 1
        if i < len(a):
            pa, i = a[i], i + 1
        if j < len(b):
            pb, j = b[j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa, i = pa * a[i], i + 1
            elif pb < pa and j < len(b):
                pb, j = pb * b[j], j + 1
            else:
                return None
        runs.append((range(i0, i), range(j0, j)))
    return runs


def map_dim(a: tuple[int, ...], b: tuple[int, ...], c: int) -> tuple[int, int, int] | None:
    """Where channel dimension ``c`` of shape ``a`` goes when reshaped to ``b``.

    Returns ``(dim, inner, trailing)``: the output dimension and the sizes merged after the
    channels (``inner``) and split off after them (``trailing``); a segment's factor becomes
    ``factor * inner / trailing``. ``None`` when the channels do not stay leading in their run
    (merged after another dimension, or split in front: a shuffle).
    """
    runs = _runs(a, b)
    if runs is None:
        return None
    for ins, outs in runs:
        if c not in ins:
            continue
        if any(a[k] != 1 for k in ins if k < c):
            return None
        big = [k for k in outs if b[k] != 1]
        if not big:
            return None
        inner = math.prod(a[k] for k in ins if k > c)
        trailing = math.prod(b[k] for k in outs if k > big[0])
        return big[0], inner, trailing
    return None


def _sizes(node: fx.Node, name: str) -> tuple[Any, list] | None:
    """The literal target sizes of a view/reshape/expand/unflatten and the first dim they set."""
    args: list[Any] = list(node.args[1:])
    if name in ("view", "reshape", "expand"):
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            args = list(args[0])
        shape: Any = node.kwargs.get("shape")
        if shape is not None:
            args = list(shape)
        return 0, args
    if name == "unflatten" and len(args) >= 2:
        return args[0], list(args[1])
    return None


def reshape(
    an: Analysis, node: fx.Node, x: Any, out: Any, op: str, sizes: tuple[Any, list] | None
) -> Any:
    f, v = an.flow(x), an.value(x)
    if not isinstance(f, Layout) or not isinstance(out, Tensor):
        return None
    mapped = map_dim(tuple(v.shape), tuple(out.shape), f.dim)
    if mapped is None or any(fac * mapped[1] % mapped[2] for _, fac in f.segs):
        an.refuse(
            node,
            f,
            op,
            "the reshape splits the channel dimension or merges it behind "
            "another one (e.g. a channel shuffle), so a width's channels are not a "
            "prefix of the result",
        )
        return None
    dim, inner, trailing = mapped
    if sizes is not None:
        start, literal = sizes
        start = start % out.dim() if isinstance(start, int) else 0
        k = dim - start
        if 0 <= k < len(literal) and isinstance(literal[k], int) and literal[k] != -1:
            an.refuse(
                node,
                f,
                op,
                f"it hard-codes the size {literal[k]} of a slimmable "
                "dimension; write -1 or x.flatten(1) instead",
            )
            return None
    return Layout(dim, tuple((var, fac * inner // trailing) for var, fac in f.segs))


def _expand(an: Analysis, node: fx.Node, out: Any, op: str, sizes: Any) -> Any:
    """Broadcasting to a larger shape keeps the channels where they are (size-1 dims grow)."""
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    if not isinstance(f, Layout):
        return None
    dim = f.dim + out.dim() - v.dim()
    literal = sizes[1] if sizes is not None else []
    if out.shape[dim] != v.shape[f.dim] or (
        len(literal) == out.dim() and isinstance(literal[dim], int) and literal[dim] != -1
    ):
        an.refuse(node, f, op, "it expands to a hard-coded channel count")
        return None
    return Layout(dim, f.segs)


def _permute(an: Analysis, node: fx.Node, op: str) -> Any:
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    if not isinstance(f, Layout):
        return None
    rank, name = v.dim(), _name(node)
    args = [an.value(a) for a in node.args[1:]] + list(node.kwargs.values())
    order = list(range(rank))
    if name == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        order = [d % rank for d in dims]
    elif name in ("transpose", "swapaxes", "swapdims", "t"):
        d0, d1 = (args[0] % rank, args[1] % rank) if args else (0, 1)
        order[d0], order[d1] = order[d1], order[d0]
    else:  # movedim
        src = [s % rank for s in (args[0] if isinstance(args[0], (tuple, list)) else [args[0]])]
        dst = [s % rank for s in (args[1] if isinstance(args[1], (tuple, list)) else [args[1]])]
        rest = iter(d for d in range(rank) if d not in src)
        placed = dict(zip(dst, src, strict=True))
        order = [placed[k] if k in placed else next(rest) for k in range(rank)]
    return Layout(order.index(f.dim), f.segs)


def _reduce(an: Analysis, node: fx.Node, out: Any, op: str, args: list[fx.Node]) -> Any:
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    dim = _arg(node, 1, "dim")
    if isinstance(dim, fx.Node) and isinstance(an.value(dim), Tensor):  # torch.max(x, y)
        return _broadcast(an, node, out, args, op)
    keep = _arg(node, 2, "keepdim", False)
    if not isinstance(f, Layout) or dim is None:
        return _none_like(out)  # a reduction over everything (over active channels)
    dims = {d % v.dim() for d in (dim if isinstance(dim, (tuple, list)) else [dim])}
    if f.dim in dims:
        return _none_like(out)  # over the active channels, as layer norm does
    new = Layout(f.dim if keep else f.dim - sum(d < f.dim for d in dims), f.segs)
    return tuple(new for _ in out) if isinstance(out, (tuple, list)) else new


def _split(an: Analysis, node: fx.Node, out: Any, op: str, name: str) -> Any:
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    dim = _arg(node, 1 if name == "unbind" else 2, "dim", 0)
    if not isinstance(f, Layout):
        return _none_like(out)
    d = dim % v.dim()
    if d == f.dim:
        an.refuse(
            node,
            f,
            op,
            "it splits the channel dimension (as ShuffleNet, CSPNet and "
            "Res2Net blocks do), so the parts of a width are not prefixes of the parts",
        )
        return _none_like(out)
    new = Layout(f.dim - (name == "unbind" and d < f.dim), f.segs)
    return tuple(new for _ in out)


def _getitem(an: Analysis, node: fx.Node, op: str) -> Any:
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    if not isinstance(f, Layout):
        return None
    index: Any = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    used = sum(1 for e in index if e is not None and e is not Ellipsis)
    d_in = d_out = 0
    for e in index:
        if e is Ellipsis:
            skip = v.dim() - used
            if d_in <= f.dim < d_in + skip:
                return Layout(d_out + f.dim - d_in, f.segs)
            d_in, d_out = d_in + skip, d_out + skip
        elif e is None:
            d_out += 1
        elif isinstance(e, slice):
            if d_in == f.dim:
                if e in (slice(None), slice(0, None), slice(None, None, 1)):
                    return Layout(d_out, f.segs)
                break
            d_in, d_out = d_in + 1, d_out + 1
        else:  # an int, or an advanced index
            if d_in == f.dim or not isinstance(an.value(e), int):
                break
            d_in += 1
    else:
        return Layout(d_out + f.dim - d_in, f.segs)
    an.refuse(node, f, op, "it indexes or slices the channel dimension with fixed positions")
    return None


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
    return _none_like(out)


def param_free_module(
    an: Analysis, node: fx.Node, m: nn.Module, lin: Any, xv: Any, out: Any
) -> Any:
    """A leaf module without parameters: flatten, dropout, or measured like an op."""
    op = type(m).__name__
    if not isinstance(lin, Layout):
        return _none_like(out)
    if isinstance(m, nn.Flatten):
        return reshape(an, node, node.args[0], out, op, None)
    if isinstance(m, nn.Unflatten):
        return reshape(an, node, node.args[0], out, op, (m.dim, list(m.unflattened_size)))
    if isinstance(m, _CHANNELWISE_MODULES):
        return lin
    single = len(node.args) == 1 and not node.kwargs
    with _eval(m):
        if single and commutes(an, m, node.args, {}, _arg(node, 0, "input"), lin.dim):
            return lin
    an.refuse(node, lin, op, "it is not channel-wise on the example input")
    return _none_like(out)


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


def _none_like(out: Any) -> Any:
    return tuple(None for _ in out) if isinstance(out, (tuple, list)) else None


def _tensor_args(an: Analysis, args: Any) -> list[fx.Node]:
    found: list[fx.Node] = []

    def visit(n: fx.Node) -> fx.Node:
        if isinstance(an.value(n), Tensor):
            found.append(n)
        return n

    fx.node.map_arg(args, visit)
    return found
