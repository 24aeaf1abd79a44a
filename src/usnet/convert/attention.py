"""How attention carries channels: whole heads are a channel group of their own.

A transformer block has three kinds of channel group: the embedding (the residual stream that
attention reads and writes), the MLP's hidden units, and the attention's heads. Heads slim whole
(the first ``k`` of ``H``, head_dim kept, so the softmax scale stays), counted in heads and
rounded to whole ones.

- timm's ``Attention``, ``nn.MultiheadAttention`` and torchvision's Swin ``ShiftedWindowAttention``
  (v1, v2) are one layer each (their forwards hard-code the number of heads): embedding in,
  heads inside (a group named after the module), the output projection's channels out. Keeping
  the module (``keep=[path]``) keeps its heads; keeping its projection, its output.
- Attention written with tensor ops (``F.scaled_dot_product_attention`` or ``q @ k.T``) works
  when the channels are split into heads of a fixed size (``x.view(B, N, -1, head_dim)``, see
  :func:`~.shapes.reshape`): the heads then sit on a batch dimension of the products.
- ``nn.Embedding`` makes new channels (its columns), like a linear; a parameter or buffer added
  to tokens elementwise (a position embedding) holds one entry per channel and joins their group.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, fx, nn

from ..nn.attention import unsupported
from .groups import Layout
from .shapes import Analysis, arg, none_like

_CROSS = (
    "its keys and values are other tensors than its queries (cross-attention): usnet slims "
    "nn.MultiheadAttention as self-attention only"
)
_SUMS = (
    "the attention sums over these channels (they are the tokens or the head size); split the "
    "channels into heads of a fixed size, e.g. x.view(B, N, -1, head_dim), so whole heads slim"
)


def visit(an: Analysis, node: fx.Node, m: Any, kind: str, inputs: list[fx.Node]) -> Any:
    """An attention module or an embedding (see the module docstring)."""
    path, op = str(node.target), type(m).__name__
    out_v: Any = an.values.get(node)
    flows = [an.flow(a) for a in inputs]
    if kind == "embedding":
        return _embedding(an, node, m, path, flows, out_v)
    if kind == "mha":
        q, k, v = arg(node, 0, "query"), arg(node, 1, "key"), arg(node, 2, "value")
        if not (q is k and k is v):
            an.refuse(node, flows, op, _CROSS)
            return none_like(out_v)
        x, out_t, proj = q, out_v[0], m.out_proj
        proj_path = f"{path}.out_proj"
    else:
        x, out_t, proj = arg(node, 0, "x"), out_v, m.proj
        proj_path = f"{path}.proj"
    why = unsupported(m) if kind != "swin" else ""
    xv = an.value(x)
    if why or not isinstance(xv, Tensor) or not isinstance(out_t, Tensor):
        an.refuse(node, flows, op, why or "it is called without a tensor input")
        return none_like(out_v)
    an.refuse(node, [an.flow(a) for a in inputs if a is not x], op, "its mask has slimmable channels")
    lin = an.at(node, an.flow(x), xv.dim() - 1, op)
    heads = an.heads(path, m.num_heads)
    out = an.output(proj_path, proj.out_features, out_t.dim() - 1)
    if path in an.keep:
        an.solver.fix(heads.vars, f"'{path}' is kept")
    if proj_path in an.keep:
        an.solver.fix(out.vars, f"'{proj_path}' is kept")
    an.touches[node] = heads.vars
    an.use(path, kind, lin, out, heads)
    return (out, None) if kind == "mha" else out


def _embedding(an: Analysis, node: fx.Node, m: Any, path: str, flows: list, out_v: Any) -> Any:
    an.refuse(node, flows, "Embedding", "its input holds indices (token ids), not channels")
    if not isinstance(out_v, Tensor):
        return None
    out = an.output(path, m.embedding_dim, out_v.dim() - 1)
    if m.max_norm is not None:
        an.refuse(
            node, out, "Embedding", "max_norm renormalises every row over all its channels"
        )
    if path in an.keep:
        an.solver.fix(out.vars, f"'{path}' is kept")
    an.use(path, "embedding", None, out)
    return out


def scaled_dot_product_attention(an: Analysis, node: fx.Node, out: Any, op: str) -> Any:
    """``F.scaled_dot_product_attention(q, k, v)``: channels on a batch dimension of q, k and v
    (the heads) carry through; channels it sums over (tokens, head size) must not slim."""
    if not isinstance(out, Tensor):
        return none_like(out)
    parts = [arg(node, 0, "query"), arg(node, 1, "key"), arg(node, 2, "value")]
    mask = arg(node, 3, "attn_mask")
    rank = out.dim()
    found: list[Layout] = []
    for t in parts:
        f, v = an.flow(t), an.value(t)
        if not isinstance(f, Layout) or not isinstance(v, Tensor):
            continue
        if f.dim >= v.dim() - 2:
            an.refuse(node, f, op, _SUMS)
            return none_like(out)
        found.append(Layout(f.dim + rank - v.dim(), f.segs))
    if isinstance(an.flow(mask), Layout):
        an.refuse(node, an.flow(mask), op, "its mask has slimmable channels")
    if not found:
        return None
    first = found[0]
    for other in found[1:]:
        an.solver.tie(first, other, an.error(node, op, "its q, k and v hold different heads"))
    for t in parts:
        v = an.value(t)
        d = first.dim - (rank - v.dim()) if isinstance(v, Tensor) else -1
        if d >= 0 and v.shape[d] > 1 and not isinstance(an.flow(t), Layout):
            an.meets_fixed(first, t, f"{op} meets a tensor of fixed heads")
    return first


def per_channel_state(
    an: Analysis, node: fx.Node, a: Any, d: int, channels: Layout, op: str
) -> bool:
    """A parameter or buffer of the model meeting channels on its dimension ``d`` elementwise
    (a position embedding ``1 x N x C`` added to tokens) holds one entry per channel there: it
    joins their group and is sliced with it. ``False`` for anything else (a constant)."""
    if not isinstance(a, fx.Node) or a.op != "get_attr" or not _is_state(an.model, str(a.target)):
        return False
    target = str(a.target)
    if target not in an.params:
        an.params[target] = (an.solver.new(an.value(a).shape[d]), d)
    var, dim = an.params[target]
    if dim != d:
        return False
    problem = "a parameter of one entry per channel meets channels of several groups"
    an.solver.tie(channels, Layout(d, ((var, 1),)), an.error(node, op, problem))
    return True


def _is_state(model: nn.Module, target: str) -> bool:
    for get in (model.get_parameter, model.get_buffer):
        try:
            get(target)
            return True
        except AttributeError:
            pass
    return False
