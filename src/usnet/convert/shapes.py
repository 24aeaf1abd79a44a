"""The rules of operations that move, merge or drop dimensions: reshapes (flatten into a
classifier: factor ``H * W``), permutes, reductions, splits and indexing (see :mod:`.ops`)."""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor, fx, nn

from .groups import Layout, MakeError, Solver
from .trace import module_path

RESHAPE = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "unflatten", "view_as",
           "reshape_as"}  # fmt: skip
PERMUTE = {"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t"}
#: Reductions with the signature ``(dim, keepdim)``.
REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "logsumexp", "nansum", "nanmean"}
SPLIT = {"chunk", "split", "unbind", "tensor_split", "split_with_sizes"}


class Analysis(Protocol):
    """What the rules use of :class:`~usnet.convert.analysis.Analysis`."""

    model: nn.Module
    keep: frozenset[str]
    values: dict[fx.Node, Any]
    solver: Solver
    #: per-channel parameters and buffers read by a forward: target -> (variable, dim)
    params: dict[str, tuple[int, int]]
    #: where a forward computes over the active channels (layer norm, a mean over channels)
    over_channels: list[tuple[str, tuple[int, ...]]]
    #: channel variables an operation touches beyond its inputs and output (heads)
    touches: dict[fx.Node, tuple[int, ...]]

    def flow(self, a: Any) -> Any: ...
    def value(self, a: Any) -> Any: ...
    def error(self, node: fx.Node, op: str, problem: str, hint: str = "") -> MakeError: ...
    def refuse(self, node: fx.Node, layout: Any, op: str, problem: str, hint: str = "") -> None: ...
    def fixed(self, channels: int) -> int: ...
    def meets_fixed(self, layout: Layout, operand: Any, reason: str) -> None: ...
    def refusal(self, node: Any) -> MakeError | None: ...
    def refused_vars(self, node: fx.Node) -> set[int]: ...
    def output(self, path: str, full: int, dim: int) -> Layout: ...
    def heads(self, path: str, full: int) -> Layout: ...
    def use(
        self,
        path: str,
        kind: str,
        inp: Layout | None,
        out: Layout | None,
        mid: Layout | None = None,
    ) -> None: ...
    def at(self, node: fx.Node, lin: Any, dim: int, op: str) -> Layout | None: ...


def bare_name(node: fx.Node) -> str:
    """The bare function or method name (``torch.flatten`` and ``x.flatten`` alike)."""
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    name = getattr(target, "__name__", "")
    return name if getattr(torch, name, None) is target else ""


def arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    """Argument ``i`` (or keyword ``name``) of a call, untyped as the rules use it."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def none_like(out: Any) -> Any:
    return tuple(None for _ in out) if isinstance(out, (tuple, list)) else None


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


def sizes(node: fx.Node, name: str) -> tuple[Any, list] | None:
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
    literal: list = []
    k = -1
    if mapped is not None and sizes is not None:
        start, literal = sizes
        start = start % v.dim() if isinstance(start, int) else 0
        k = mapped[0] - start
    if mapped is not None and any(fac * mapped[1] % mapped[2] for _, fac in f.segs):
        return _blocks(an, node, f, out, op, mapped, literal, k)
    if mapped is None:
        an.refuse(node, f, op, _SHUFFLE)
        return None
    dim, inner, trailing = mapped
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


_SHUFFLE = (
    "the reshape splits the channel dimension or merges it behind "
    "another one (e.g. a channel shuffle), so a width's channels are not a "
    "prefix of the result"
)


def _blocks(
    an: Analysis,
    node: fx.Node,
    f: Layout,
    out: Tensor,
    op: str,
    mapped: tuple[int, int, int],
    literal: list,
    k: int,
) -> Layout | None:
    """A reshape that splits the channels into blocks of a fixed size (attention heads:
    ``x.view(B, N, -1, head_dim)``): the blocks are a group of their own, whole blocks slim, and
    the channels are ``block`` times it (a derived group). The number of blocks must follow the
    width (``-1`` or computed from a size) and the block size must not (a literal)."""
    dim, inner, trailing = mapped
    (var, fac), *more = f.segs
    block = _trailing_literals(out, dim, trailing, literal, k)
    if more or trailing % (fac * inner) or block is None:
        an.refuse(node, f, op, _SHUFFLE)
        return None
    n = literal[k] if 0 <= k < len(literal) else None
    if isinstance(n, int) and n != -1:
        an.refuse(
            node,
            f,
            op,
            f"the reshape splits the channel dimension into a fixed number ({n}) of blocks of "
            f"{trailing} (a channel shuffle, a fused q/k/v projection or a fixed number of "
            "heads): a narrower width would shrink every block instead of dropping whole ones; "
            "split them into blocks of a fixed size, e.g. x.view(B, N, -1, head_dim), or use "
            "separate q, k and v projections",
        )
        return None
    if not block:
        an.refuse(
            node,
            f,
            op,
            "the reshape splits the channel dimension into a fixed number of blocks whose "
            "size follows the width (a channel shuffle, or heads); split them into heads of a "
            "fixed size, e.g. x.view(B, N, -1, head_dim)",
        )
        return None
    heads = an.solver.new(out.shape[dim], heads=True)
    if not an.solver.relate(var, fac * inner, heads, trailing):
        an.refuse(node, f, op, _SHUFFLE)
        return None
    return Layout(dim, ((heads, 1),))


def _trailing_literals(
    out: Tensor, dim: int, trailing: int, literal: list, k: int
) -> bool | None:
    """Whether the sizes after the channels' new dimension that make ``trailing`` are literal
    ints in the call (``False``: some follow the input's size; ``None``: no sizes given)."""
    if k < 0:
        return None
    product, j = 1, dim + 1
    while product < trailing and j < out.dim():
        size = literal[k + j - dim] if k + j - dim < len(literal) else None
        if not isinstance(size, int) or size == -1:
            return False
        product, j = product * out.shape[j], j + 1
    return product == trailing


def expand(an: Analysis, node: fx.Node, out: Any, op: str, sizes: Any) -> Any:
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


def permute(an: Analysis, node: fx.Node) -> Any:
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    if not isinstance(f, Layout):
        return None
    rank, name = v.dim(), bare_name(node)
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


def reduce(an: Analysis, node: fx.Node, out: Any) -> Any:
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    dim = arg(node, 1, "dim")
    keep = arg(node, 2, "keepdim", False)
    if not isinstance(f, Layout) or dim is None:
        return none_like(out)  # a reduction over everything (over active channels)
    dims = {d % v.dim() for d in (dim if isinstance(dim, (tuple, list)) else [dim])}
    if f.dim in dims:
        an.over_channels.append((module_path(node), f.vars))
        return none_like(out)  # over the active channels, as layer norm does
    new = Layout(f.dim if keep else f.dim - sum(d < f.dim for d in dims), f.segs)
    return tuple(new for _ in out) if isinstance(out, (tuple, list)) else new


def split(an: Analysis, node: fx.Node, out: Any, op: str, name: str) -> Any:
    f, v = an.flow(node.args[0]), an.value(node.args[0])
    dim = arg(node, 1 if name == "unbind" else 2, "dim", 0)
    if not isinstance(f, Layout):
        return none_like(out)
    d = dim % v.dim()
    if d == f.dim:
        an.refuse(
            node,
            f,
            op,
            "it splits the channel dimension (as ShuffleNet, CSPNet and "
            "Res2Net blocks do), so the parts of a width are not prefixes of the parts",
        )
        return none_like(out)
    new = Layout(f.dim - (name == "unbind" and d < f.dim), f.segs)
    return tuple(new for _ in out)


def getitem(an: Analysis, node: fx.Node, op: str) -> Any:
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


def pixel_shuffle(an: Analysis, node: fx.Node, x: Any, op: str, r: int, inverse: bool) -> Any:
    """``pixel_shuffle`` by ``r``: output channel ``c`` is input channels ``c r^2 .. c r^2 + r^2 -
    1`` spread over space, so a prefix of ``k r^2`` input channels is a prefix of ``k`` output
    channels. A segment of ``f`` entries per channel keeps ``f / r^2``; where ``r^2`` does not
    divide ``f`` the output is a group of its own and the input ``r^2`` times it (a derived
    group: the conv before a sub-pixel upsampler runs ``r^2`` times the channels after it).
    ``pixel_unshuffle`` is the inverse: ``r^2`` entries more per channel."""
    f, v = an.flow(x), an.value(x)
    if not isinstance(f, Layout):
        return None
    if f.dim != v.dim() - 3:
        an.refuse(node, f, op, f"its channels are on dimension {v.dim() - 3}, not {f.dim}")
        return None
    rr = r * r
    if inverse:
        return f.moved(f.dim, rr)
    segs = []
    for var, fac in f.segs:
        if fac % rr == 0:
            segs.append((var, fac // rr))
            continue
        entries = an.solver.full[var] * fac
        out = an.solver.new(entries // rr)
        if entries % rr or not an.solver.relate(var, fac, out, rr):
            an.refuse(node, f, op, f"its channels are no whole number of {rr}-channel blocks")
            return None
        segs.append((out, 1))
    return Layout(f.dim, tuple(segs))
