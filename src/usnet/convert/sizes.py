"""Sizes read from slimmable channels: ``B, C, H, W = x.shape``, ``x.size(1)``.

In the converted forward such a number is the *active* count, so whatever is built or reshaped
with it follows the width. That is right where the tensor it shapes carries those channels
(``y.view(b, c, 1, 1)`` after a squeeze-and-excitation's linear layer: the two are one group)
or where it makes a new tensor of them (``x.new_zeros(b, c, h, w)``: that tensor's channels are
the group's); anywhere else the number would reshape channels that do not slim with it (a
MaxViT attention output of full width reshaped to ``(B, G, P, C)``) or feed Python arithmetic,
so those channels must not slim.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx

from .groups import Layout
from .shapes import Analysis, arg, bare_name

_FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn}
_NEW = {"new_zeros", "new_ones", "new_empty", "new_full"}
_SHAPING = {"view", "reshape", "expand", "unflatten"}


@dataclass(frozen=True)
class SizeOf:
    """A number that is the size of the slimmable channels of ``layout`` (``exact``) or is
    computed from it (``c // 2``)."""

    layout: Layout
    exact: bool = True


def size_flow(an: Analysis, node: fx.Node) -> Any:
    """The flow of a size node: a tuple (``x.shape``, ``x.size()``) with a :class:`SizeOf` at
    the channel dimension, a :class:`SizeOf` (``x.size(1)``, arithmetic on one), or
    ``NotImplemented`` for nodes that are not sizes."""
    target = node.target
    if node.op == "call_method" and target == "size":
        f, v = an.flow(node.args[0]), an.value(node.args[0])
        if not isinstance(f, Layout) or not isinstance(v, Tensor):
            return None
        dims = tuple(SizeOf(f) if d == f.dim else None for d in range(v.dim()))
        d = arg(node, 1, "dim")
        return dims if d is None else dims[d]
    if node.op == "call_function" and target is getattr and node.args[1] == "shape":
        f, v = an.flow(node.args[0]), an.value(node.args[0])
        if not isinstance(f, Layout) or not isinstance(v, Tensor):
            return None
        return tuple(SizeOf(f) if d == f.dim else None for d in range(v.dim()))
    if node.op == "call_function" and getattr(target, "__module__", "") in ("_operator", "math"):
        if target is not operator.getitem:
            found = [f for f in map(an.flow, node.all_input_nodes) if isinstance(f, SizeOf)]
            if found:  # arithmetic on a size: follows the width, but not as the channels do
                return SizeOf(found[0].layout, exact=False)
    return NotImplemented


def used_sizes(an: Analysis, node: fx.Node) -> list[tuple[Any, SizeOf]]:
    """The sizes of slimmable channels among ``node``'s arguments: (the argument, its flow)."""
    found = []
    for a in node.all_input_nodes:
        f = an.flow(a)
        if isinstance(f, SizeOf):
            found.append((a, f))
        elif isinstance(f, tuple) and not isinstance(an.value(a), Tensor):
            found += [(a, s) for s in f if isinstance(s, SizeOf)]
    return found


def consume(an: Analysis, node: fx.Node, out: Any, op: str, result: Any) -> Any:
    """``result`` (the flow the rules gave ``node``) checked against the sizes of slimmable
    channels it was built with; a factory's new tensor gets their channels."""
    used = used_sizes(an, node)
    name = bare_name(node) if node.op == "call_method" else ""
    shape = _target_shape(node, name) if isinstance(out, Tensor) else None
    if shape is None:
        for _, size in used:
            an.refuse(node, size.layout, op, _ARITHMETIC)
        return result
    made = node.target in _FACTORIES or name in _NEW
    start = shape[0] % out.dim() if isinstance(shape[0], int) else 0
    for k, entry in enumerate(shape[1]):
        s: Any = an.flow(entry) if isinstance(entry, fx.Node) else None
        if not isinstance(s, SizeOf):
            continue
        dim = start + k
        if made and s.exact and result is None:
            result = Layout(dim, s.layout.segs)
        elif s.exact and isinstance(result, Layout) and result.dim == dim:
            an.solver.tie(result, s.layout, an.error(node, op, _OTHER))
        elif set(s.layout.vars) <= an.refused_vars(node):
            continue  # this operation is refused on these channels already
        else:  # the refusal that left this tensor whole says it already, if there is one
            error = an.refusal(node.args[0] if node.args else None)
            if error is not None:
                an.solver.forbid(s.layout.vars, error)
            else:
                an.refuse(node, s.layout, op, _RESHAPED)
    return result


def _target_shape(node: fx.Node, name: str) -> tuple[Any, list] | None:
    """The first output dimension a shaping call sets and its size arguments."""
    target = node.target
    args: list[Any]
    if target in _FACTORIES or name in _NEW:
        args = list(node.args[1:] if name in _NEW else node.args)
        if target is torch.full or name == "new_full":
            args = args[:1]
        args = list(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        return 0, args
    if name in _SHAPING or bare_name(node) in _SHAPING:
        args = list(node.args[1:])
        if name == "unflatten" or bare_name(node) == "unflatten":
            return (
                (args[0], list(args[1]))
                if len(args) >= 2 and isinstance(args[1], (tuple, list))
                else None
            )
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            args = list(args[0])
        shape: Any = node.kwargs.get("shape") or node.kwargs.get("size")
        return 0, list(shape) if shape is not None else args
    return None


_ARITHMETIC = (
    "it computes with the size of slimmable channels (the active count in a converted forward)"
)
_RESHAPED = (
    "it shapes a tensor with the size of slimmable channels at a dimension that does not hold "
    "them, so a narrower network would reshape channels that do not slim"
)
_OTHER = "it shapes channels with the size of other channels"
