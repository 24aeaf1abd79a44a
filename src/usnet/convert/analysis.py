"""Graph analysis: walk the traced graphs and turn every operation into channel constraints.

Each module that makes new channels (conv, linear) gets a channel variable named after it; the
rules of :mod:`.modules` and :mod:`.ops` carry each tensor's :class:`~.groups.Layout` through the
modules and functional ops (adds tie, concatenations compose, flattening multiplies, shuffles
refuse); the graph outputs never slim. What a rule cannot prove exact becomes a "must not slim"
on the channels involved, so :meth:`Solver.solve` reports only what would really slim. The
MACs of every operation are kept with the channels it touches, so a conversion can say how
much of the network slims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, fx, nn

from . import modules, ops
from .errors import ConvertError
from .groups import Layout, MakeError, Solver
from .trace import Trace, module_path


@dataclass
class Use:
    """How a converted module is called: its kind and the layouts of its input and output."""

    kind: str
    inp: Layout | None
    out: Layout | None
    #: whether eval-mode forwards reach it (an auxiliary head's runs in training only)
    in_eval: bool = True
    #: channels inside the module (an attention's heads), neither its input nor its output
    mid: Layout | None = None


@dataclass(frozen=True)
class Cost:
    """The MACs of one operation of the eval graph and the channel variables it touches."""

    module: str
    op: str
    macs: int
    vars: tuple[int, ...]


class Analysis:
    """The channel constraints of one model, gathered over its traced graphs."""

    def __init__(self, model: nn.Module, keep: frozenset[str]) -> None:
        self.model, self.keep = model, keep
        self.solver = Solver()
        self.uses: dict[str, Use] = {}
        #: per-channel parameters and buffers read by a forward: target -> (variable, dim)
        self.params: dict[str, tuple[int, int]] = {}
        self.costs: list[Cost] = []
        #: where a forward computes over the active channels (layer norm, a mean over channels)
        self.over_channels: list[tuple[str, tuple[int, ...]]] = []
        #: channel variables an operation touches beyond its inputs and output (heads)
        self.touches: dict[fx.Node, tuple[int, ...]] = {}
        self._vars: dict[str, int] = {}
        self.values: dict[fx.Node, Any] = {}
        self._flow: dict[fx.Node, Any] = {}
        #: nodes whose channels are fixed only because an operation before them was refused
        self._tainted: dict[fx.Node, MakeError] = {}
        self._refused: dict[fx.Node, MakeError] = {}
        self._refused_vars: dict[fx.Node, set[int]] = {}
        self.training = False  # the mode of the graph being walked

    # -- helpers used by the rules --------------------------------------------------------
    def flow(self, a: Any) -> Any:
        return self._flow.get(a) if isinstance(a, fx.Node) else None

    def value(self, a: Any) -> Any:
        return self.values.get(a) if isinstance(a, fx.Node) else a

    def error(self, node: fx.Node, op: str, problem: str, hint: str = "") -> MakeError:
        path = module_path(node)
        return lambda names: ConvertError(path, op, problem, names, hint)

    def error_at(self, path: str, op: str, problem: str) -> MakeError:
        return lambda names: ConvertError(path, op, problem, names)

    def refuse(self, node: fx.Node, layout: Any, op: str, problem: str, hint: str = "") -> None:
        """The channels of ``layout`` (any nesting) must not slim."""
        vars = [v for lay in _layouts(layout) for v in lay.vars]
        if vars:
            error = self.error(node, op, problem, hint)
            self.solver.forbid(vars, error)
            self._refused.setdefault(node, error)
            self._refused_vars.setdefault(node, set()).update(vars)

    def refused_vars(self, node: fx.Node) -> set[int]:
        """The channel variables a rule refused at ``node``."""
        return self._refused_vars.get(node, set())

    def refusal(self, node: Any) -> MakeError | None:
        """The error of a refusal at ``node``, or of one its channels are whole because of."""
        if not isinstance(node, fx.Node):
            return None
        return self._refused.get(node) or self._tainted.get(node)

    def meets_fixed(self, layout: Layout, operand: Any, reason: str) -> None:
        """``layout``'s channels meet ``operand``'s, which do not slim: they are fixed, unless
        ``operand``'s are whole only because an operation before it was refused: then that
        refusal applies to them too (a refused shuffle must not pass for a fixed size)."""
        error = self._tainted.get(operand) if isinstance(operand, fx.Node) else None
        if error is not None:
            self.solver.forbid(layout.vars, error)
        else:
            self.solver.fix(layout.vars, reason)

    def fixed(self, channels: int) -> int:
        return self.solver.new(channels, fixed=True, reason="a tensor of fixed size")

    def output(self, path: str, full: int, dim: int) -> Layout:
        """The new channels module ``path`` makes (one variable however often it is called)."""
        if path not in self._vars:
            self._vars[path] = self.solver.new(full, path)
        return Layout(dim, ((self._vars[path], 1),))

    def heads(self, path: str, full: int) -> Layout:
        """The heads of attention module ``path``: a group of their own, named after it."""
        key = f"{path}\0heads"
        if key not in self._vars:
            self._vars[key] = self.solver.new(full, path, heads=True)
        return Layout(1, ((self._vars[key], 1),))

    def at(self, node: fx.Node, lin: Any, dim: int, op: str) -> Layout | None:
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

    def use(
        self,
        path: str,
        kind: str,
        inp: Layout | None,
        out: Layout | None,
        mid: Layout | None = None,
    ) -> None:
        prev = self.uses.get(path)
        if prev is None:
            self.uses[path] = Use(kind, inp, out, not self.training, mid)
            return
        prev.in_eval = prev.in_eval or not self.training
        mismatch = ConvertError(path, kind, "it is called on tensors of different channel layouts")
        reason = f"'{path}' is also called on channels that never slim"
        self.solver.tie(prev.inp, inp, lambda names: mismatch, reason)
        self.solver.tie(prev.out, out, lambda names: mismatch, reason)
        self.solver.tie(prev.mid, mid, lambda names: mismatch, reason)

    # -- the walk -------------------------------------------------------------------------
    def run(self, trace: Trace) -> None:
        self.values, self._flow, self.training = trace.values, {}, trace.training
        self._tainted, self._refused, self._refused_vars = {}, {}, {}
        for node in trace.graph.nodes:
            self._flow[node] = self._visit(node)
            if not _layouts(self._flow[node]):
                self._taint(node)
            macs = 0 if trace.training else trace.macs.get(node, 0)
            if macs:
                touched = [self.flow(a) for a in node.all_input_nodes] + [self._flow[node]]
                vars = tuple(v for lay in _layouts(touched) for v in lay.vars)
                vars += self.touches.get(node, ())
                self.costs.append(Cost(module_path(node), ops.op_name(node), macs, vars))

    def finish(self) -> None:
        """After every graph: each use's layouts over root variables (derived groups folded
        into the factors, as the spans of :mod:`.replace` read them)."""
        solver = self.solver
        for use in self.uses.values():
            for name in ("inp", "out", "mid"):
                lay = getattr(use, name)
                if lay is not None:
                    setattr(use, name, Layout(lay.dim, solver.segments(lay)))
        for target, (var, _) in self.params.items():
            if solver.resolve(var)[1] != 1:  # sliced by a derived group: not emitted yet
                solver.forbid([var], self.error_at(target, "slicing", _DERIVED_PARAM))

    def _taint(self, node: fx.Node) -> None:
        """A refused operation taints its result, and so does everything computed from a
        tainted tensor without new channels (norms, activations, grouped convs, adds)."""
        error = self._refused.get(node)
        if error is None and not _makes_channels(self.model, node):
            error = next(
                (self._tainted[a] for a in node.all_input_nodes if a in self._tainted), None
            )
        if error is not None:
            self._tainted[node] = error

    def _visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return None
        if node.op == "get_attr":
            return self._get_attr(node)
        if node.op == "call_module":
            return modules.visit(self, node)
        if node.op in ("call_function", "call_method"):
            return ops.visit(self, node)
        for layout in _layouts([self.flow(a) for a in node.all_input_nodes]):
            self.solver.fix(layout.vars, OUTPUT)  # outputs never slim
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


OUTPUT = "an output of the network"
_DERIVED_PARAM = (
    "a per-channel parameter of a channel group derived from another (k channels per channel) "
    "cannot be sliced yet"
)


def _makes_channels(model: nn.Module, node: fx.Node) -> bool:
    """A dense conv or linear: its output channels are its own, whatever its input."""
    if node.op != "call_module":
        return False
    m = model.get_submodule(str(node.target))
    return isinstance(m, nn.Linear) or getattr(m, "groups", 0) == 1


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


def _layouts(flow: Any) -> list[Layout]:
    if isinstance(flow, Layout):
        return [flow]
    if isinstance(flow, (tuple, list)):
        return [lay for f in flow for lay in _layouts(f)]
    return []
