"""Matrix products (``matmul``, ``@``, ``bmm``, ``baddbmm``): channels that are rows, columns or
batch dimensions of a product carry through; channels it sums over do not.

A global-context block (GCNet) multiplies a ``C x HW`` map by an ``HW x 1`` attention map: the
product sums over space and its rows are the channels, which slim as the map's do. Attention
multiplies queries by keys *over the channels*: the sum of a narrower network would run over
fewer channels against a matrix of full size, so those channels must not slim.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, fx

from .groups import Layout
from .shapes import Analysis, arg, none_like

FUNCTIONS = ("matmul", "bmm", "baddbmm", "__matmul__", "__rmatmul__")
ATTENTION = (
    "a matrix product that sums over the slimmable channels (attention's queries times keys "
    "over the embedding); split the channels into heads of a fixed size, e.g. "
    "x.view(B, N, -1, head_dim), so whole heads slim"
)


def matmul(an: Analysis, node: fx.Node, out: Any, op: str, name: str) -> Any:
    if not isinstance(out, Tensor):
        return none_like(out)
    added = None
    if name == "baddbmm":
        added, a, b = arg(node, 0, "input"), arg(node, 1, "batch1"), arg(node, 2, "batch2")
    elif name == "__rmatmul__":
        b, a = node.args[0], node.args[1]
    else:
        a, b = node.args[0], node.args[1]
    rank = out.dim()
    found: dict[int, list[Layout]] = {}
    for operand, is_left in ((a, True), (b, False)):
        v, f = an.value(operand), an.flow(operand)
        if not isinstance(f, Layout):
            continue
        if not isinstance(v, Tensor) or v.dim() < 2:
            an.refuse(node, f, op, "a matrix product with a vector on slimmable channels")
            continue
        d = f.dim
        if d == v.dim() - (1 if is_left else 2):
            an.refuse(node, f, op, ATTENTION)
            continue
        if d == v.dim() - 2:  # the left operand's rows
            od = rank - 2
        elif d == v.dim() - 1:  # the right operand's columns
            od = rank - 1
        else:  # a batch dimension
            od = d + rank - v.dim()
        found.setdefault(od, []).append(Layout(od, f.segs))
    if added is not None and isinstance(an.flow(added), Layout):
        f, v = an.flow(added), an.value(added)
        found.setdefault(f.dim + rank - v.dim(), []).append(Layout(f.dim + rank - v.dim(), f.segs))
    if not found:
        return None
    if len(found) > 1:
        an.refuse(
            node,
            [lay for lays in found.values() for lay in lays],
            op,
            "its result would have slimmable channels on two dimensions",
        )
        return None
    ((dim, layouts),) = found.items()
    first = layouts[0]
    for other in layouts[1:]:
        an.solver.tie(
            first, other, an.error(node, op, "its batch dimensions hold different channels")
        )
    for operand, limit in ((a, 2), (b, 2), (added, 0)):  # full size where channels are
        v, f = an.value(operand), an.flow(operand)
        if isinstance(v, Tensor) and not isinstance(f, Layout):
            d = dim - (rank - v.dim())
            if 0 <= d < v.dim() - limit and v.shape[d] > 1:
                an.meets_fixed(first, operand, f"{op} meets a tensor of fixed size")
    return first
