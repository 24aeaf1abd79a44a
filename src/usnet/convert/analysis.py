"""Graph analysis: walk the traced graphs and turn every operation into channel constraints.

Each module that makes new channels (conv, linear) gets a channel variable named after it; the
rules of :mod:`.ops` carry each tensor's :class:`~.groups.Layout` through the functional ops
(adds tie, concatenations compose, flattening multiplies, shuffles refuse); the graph outputs
never slim. What a rule cannot prove exact becomes a "must not slim" on the channels involved,
so :meth:`Solver.solve` refuses only what would really slim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from . import ops
from .errors import ConvertError
from .groups import Layout, MakeError, Solver
from .trace import Trace, module_path

_TIMM_LINEAR = "timm.layers.linear.Linear"
_TIMM_CONV_SAME = "timm.layers.conv2d_same.Conv2dSame"
_TIMM_BN_ACT = "timm.layers.norm_act.BatchNormAct2d"
_LAYER_NORM = "timm.layers.norm.LayerNorm"
_LAYER_NORM_2D = ("timm.layers.norm.LayerNorm2d", "torchvision.models.convnext.LayerNorm2d")


def kind_of(m: nn.Module) -> str | None:
    """Which converted layer replaces ``m`` (``None``: none; the tracer looks inside it)."""
    cls = type(m)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(m, nn.Conv2d) and cls.forward is nn.Conv2d.forward:
        return "conv"
    if name == _TIMM_CONV_SAME:
        return "conv_same"
    if isinstance(m, nn.Linear) and (cls.forward is nn.Linear.forward or name == _TIMM_LINEAR):
        return "linear"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and cls.forward is _BatchNorm.forward:
        return "bn"
    if name == _TIMM_BN_ACT:
        return "bnact"
    if isinstance(m, nn.LayerNorm) and (cls.forward is nn.LayerNorm.forward or name == _LAYER_NORM):
        return "ln"
    if name in _LAYER_NORM_2D:
        return "ln2d"
    if cls is nn.GroupNorm:
        return "gn"
    return None


@dataclass
class Use:
    """How a converted module is called: its kind and the layouts of its input and output."""

    kind: str
    inp: Layout | None
    out: Layout | None
    #: whether eval-mode forwards reach it (an auxiliary head's runs in training only)
    in_eval: bool = True


class Analysis:
    """The channel constraints of one model, gathered over its traced graphs."""

    def __init__(self, model: nn.Module, keep: frozenset[str]) -> None:
        self.model, self.keep = model, keep
        self.solver = Solver()
        self.uses: dict[str, Use] = {}
        #: per-channel parameters read by a forward (layer scale): target -> (variable, dim)
        self.params: dict[str, tuple[int, int]] = {}
        self._vars: dict[str, int] = {}
        self.values: dict[fx.Node, Any] = {}
        self._flow: dict[fx.Node, Any] = {}
        self.training = False  # the mode of the graph being walked

    # -- helpers used by the rules --------------------------------------------------------
    def flow(self, a: Any) -> Any:
        return self._flow.get(a) if isinstance(a, fx.Node) else None

    def value(self, a: Any) -> Any:
        return self.values.get(a) if isinstance(a, fx.Node) else a

    def error(self, node: fx.Node, op: str, problem: str, hint: str = "") -> MakeError:
        path = module_path(node)
        return lambda names: ConvertError(path, op, problem, names, hint)

    def refuse(self, node: fx.Node, layout: Any, op: str, problem: str, hint: str = "") -> None:
        """The channels of ``layout`` (any nesting) must not slim."""
        vars = [v for lay in _layouts(layout) for v in lay.vars]
        if vars:
            self.solver.forbid(vars, self.error(node, op, problem, hint))

    def fixed(self, channels: int) -> int:
        return self.solver.new(channels, fixed=True)

    # -- the walk -------------------------------------------------------------------------
    def run(self, trace: Trace) -> None:
        self.values, self._flow, self.training = trace.values, {}, trace.training
        for node in trace.graph.nodes:
            self._flow[node] = self._visit(node)

    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return None
        if node.op == "get_attr":
            return self._get_attr(node)
        if node.op == "call_module":
            return self._module(node)
        if node.op in ("call_function", "call_method"):
            return ops.visit(self, node)
        for layout in _layouts([self.flow(a) for a in _nodes(node.args)]):
            self.solver.fix(layout.vars)  # the network's outputs never slim
        return None

    def _get_attr(self, node: fx.Node) -> Layout | None:
        """A per-channel parameter or buffer: one dimension of size > 1."""
        value, target = self.values.get(node), str(node.target)
        if not isinstance(value, Tensor) or not _is_state(self.model, target):
            return None
        big = [d for d, s in enumerate(value.shape) if s > 1]
        if len(big) != 1:
            return None
        if target not in self.params:
            self.params[target] = (self.solver.new(value.shape[big[0]]), big[0])
        var, dim = self.params[target]
        return Layout(dim, ((var, 1),))

    def _module(self, node: fx.Node) -> Any:
        path = str(node.target)
        m: Any = self.model.get_submodule(path)
        x = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        lin, xv, out_v = self.flow(x), self.value(x), self.values.get(node)
        assert xv is not None and out_v is not None
        kind = kind_of(m)
        op = type(m).__name__
        if parametrize.is_parametrized(m):
            raise ConvertError(
                path, op, "it has parametrizations (e.g. weight_norm); remove them first"
            )
        if kind is None:
            inputs = [self.flow(a) for a in _nodes((node.args, node.kwargs))]
            if path in self.keep or any(True for _ in m.parameters()):
                problem = (
                    "a kept module is one block that does not slim, so its inputs must not slim"
                    if path in self.keep
                    else _UNKNOWN.get(
                        op, f"usnet does not know how to slim a {op} (a module with parameters)"
                    )
                )
                self.refuse(node, inputs, op, problem)
                return None
            return ops.param_free_module(self, node, m, lin, xv, out_v)
        if kind in ("conv", "conv_same"):
            lin = self._at(node, lin, 1, op)
            out = (
                self._grouped(node, m, lin) if m.groups > 1 else self._out(path, m.out_channels, 1)
            )
        elif kind == "linear":
            lin = self._at(node, lin, xv.dim() - 1, op)
            out = self._out(path, m.out_features, out_v.dim() - 1)
        elif kind in ("bn", "bnact"):
            if not m.track_running_stats or m.running_mean is None:
                raise ConvertError(
                    path,
                    op,
                    "track_running_stats=False normalises with batch statistics in "
                    "eval mode, which per-width statistics cannot reproduce",
                )
            if kind == "bnact" and any(True for _ in (*m.act.parameters(), *m.drop.parameters())):
                self.refuse(node, lin, op, "its activation has parameters")
            out = lin = self._at(node, lin, 1, op)
        elif kind == "ln":
            if len(m.normalized_shape) != 1:
                self.refuse(node, lin, op, "it normalises over several dimensions")
                lin = None
            out = lin = self._at(node, lin, xv.dim() - 1, op)
        elif kind == "ln2d":
            out = lin = self._at(node, lin, 1, op)
        else:  # group norm: a prefix of whole groups
            out = lin = self._at(node, lin, 1, op)
            if lin is not None:
                if len(lin.segs) != 1:
                    self.refuse(node, lin, op, "group norm over a concatenation")
                else:
                    var, f = lin.segs[0]
                    width = m.num_channels // m.num_groups
                    self.solver.multiple(var, width // math.gcd(width, f))
        if path in self.keep and out is not None:
            self.solver.fix(out.vars)
        self._use(path, kind, lin, out)
        return out

    def _at(self, node: fx.Node, lin: Any, dim: int, op: str) -> Layout | None:
        """``lin`` if its channels are on ``dim`` (where the module reads channels)."""
        if not isinstance(lin, Layout) or lin.dim == dim:
            return lin if isinstance(lin, Layout) else None
        self.refuse(
            node,
            lin,
            op,
            f"it reads channels on dimension {dim}, but the slimmable "
            f"channels of its input are on dimension {lin.dim}",
        )
        return None

    def _out(self, path: str, full: int, dim: int) -> Layout:
        if path not in self._vars:
            self._vars[path] = self.solver.new(full, path)
        return Layout(dim, ((self._vars[path], 1),))

    def _grouped(self, node: fx.Node, m: nn.Conv2d, lin: Layout | None) -> Layout | None:
        """A grouped conv keeps its group width: its outputs follow its inputs' group."""
        gin, gout = m.in_channels // m.groups, m.out_channels // m.groups
        if lin is None:
            return None
        if len(lin.segs) != 1 or (lin.segs[0][1] * gout) % gin:
            self.refuse(
                node,
                lin,
                "Conv2d",
                f"a grouped conv (groups={m.groups}) over a "
                "concatenation or with a fractional channel multiplier",
            )
            return None
        var, f = lin.segs[0]
        self.solver.multiple(var, gin // math.gcd(gin, f))
        return Layout(1, ((var, f * gout // gin),))

    def _use(self, path: str, kind: str, inp: Layout | None, out: Layout | None) -> None:
        prev = self.uses.get(path)
        if prev is None:
            self.uses[path] = Use(kind, inp, out, not self.training)
            return
        prev.in_eval = prev.in_eval or not self.training
        mismatch = ConvertError(path, kind, "it is called on tensors of different channel layouts")
        self.solver.tie(prev.inp, inp, lambda names: mismatch)
        self.solver.tie(prev.out, out, lambda names: mismatch)


_UNKNOWN = {
    "MultiheadAttention": "attention heads do not slim (usnet slims channels of CNNs)",
}


def _is_state(model: nn.Module, target: str) -> bool:
    try:
        model.get_parameter(target)
        return True
    except AttributeError:
        pass
    try:
        model.get_buffer(target)
        return True
    except AttributeError:
        return False


def _nodes(args: Any) -> list[fx.Node]:
    found: list[fx.Node] = []

    def visit(n: fx.Node) -> fx.Node:
        found.append(n)
        return n

    fx.node.map_arg(args, visit)
    return found


def _layouts(flow: Any) -> list[Layout]:
    if isinstance(flow, Layout):
        return [flow]
    if isinstance(flow, (tuple, list)):
        return [lay for f in flow for lay in _layouts(f)]
    return []
