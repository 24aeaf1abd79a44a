"""The data flow of a model: ``torch.fx`` graphs in eval and train mode, with every node's value.

``torch.fx`` symbolic tracing (not ``torch.export``) because the converter keeps the model's own
Python ``forward`` and swaps modules in place: fx records ``call_module`` nodes by module path,
which is exactly what is swapped, while ``torch.export`` inlines modules into aten ops. fx bakes
Python control flow on ``self.training`` into the graph, so both modes are traced (a GoogLeNet's
auxiliary heads run only in training) and every constraint of either graph holds. Buffers read
in a forward are traced as buffers (``proxy_buffer_attributes``), not as anonymous constants, so
the statistics a custom norm reads join the channels they scale. A submodule that fx cannot
trace is made one opaque block and tracing goes on, so that every problem is reported at once.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils.flop_counter import FlopCounterMode

from ..shapes import two_samples
from .errors import ConvertError
from .rules import registered_functions


@dataclass
class Trace:
    """One mode's graph, the value each node took on the example input and its MACs."""

    graph: fx.Graph
    values: dict[fx.Node, Any]
    training: bool
    output: Any
    macs: dict[fx.Node, int] = field(default_factory=dict)


@dataclass
class Traces:
    """Both modes' traces, and the submodules made opaque because fx cannot trace them."""

    traces: list[Trace]
    untraceable: dict[str, ConvertError]


def timm_notrace() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    """timm's own leaf modules and opaque functions (only when timm is already imported)."""
    if "timm" not in sys.modules:
        return (), ()
    try:
        from timm.layers import _fx
    except ImportError:  # pragma: no cover - other timm layouts
        return (), ()
    return tuple(_fx.get_notrace_modules()), tuple(_fx.get_notrace_functions())


class _ShapeFlow(Exception):
    """Python control flow on a tensor's shape (not its values)."""


class _Tracer(fx.Tracer):
    def __init__(self, leaf: Callable[[nn.Module, str], bool], autowrap: tuple[Callable, ...]):
        super().__init__(autowrap_functions=autowrap)
        self.proxy_buffer_attributes = True
        self._leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return self._leaf(m, module_qualified_name) or super().is_leaf_module(
            m, module_qualified_name
        )

    def to_bool(self, obj: fx.Proxy) -> bool:
        if from_shape(obj.node):
            raise _ShapeFlow("a comparison of a tensor's size controls the flow")
        return super().to_bool(obj)


def from_shape(node: fx.Node) -> bool:
    """Whether ``node`` is a number computed from tensor sizes only (``x.size(1) * 0.5``)."""
    if node.op == "call_method" and node.target in ("size", "dim", "numel", "nelement"):
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in ("shape", "ndim")
    if node.op != "call_function":
        return False
    parents = list(node.all_input_nodes)
    return bool(parents) and all(from_shape(p) for p in parents)


def module_path(node: fx.Node) -> str:
    """The innermost module whose forward created ``node`` (``""``: the model's own)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def trace_model(
    model: nn.Module,
    example: Tensor,
    leaf: Callable[[nn.Module, str], bool],
    opaque: Collection[str] = (),
) -> Traces:
    """Trace ``model`` in eval and in train mode and run each graph on ``example``.

    The model's modes, buffers (batch-norm running statistics move in a training pass) and
    attributes are restored afterwards. ``opaque`` module paths are not traced into, nor are the
    submodules fx fails on (each then reported as a :class:`ConvertError` that keeping resolves;
    a failure in the model's own forward is raised).
    """
    leaves, autowrap = timm_notrace()
    autowrap = autowrap + registered_functions()
    blocks = set(opaque)
    untraceable: dict[str, ConvertError] = {}

    def is_leaf(m: nn.Module, path: str) -> bool:
        return path in blocks or isinstance(m, leaves) or leaf(m, path)

    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    attrs = set(vars(model))
    traces = []
    try:
        for training in (False, True):
            model.train(training)
            while True:
                tracer = _Tracer(is_leaf, autowrap)
                try:
                    graph = tracer.trace(model)
                    break
                except ConvertError:
                    raise
                except Exception as e:
                    stack = list(tracer.module_stack.values())
                    path = stack[-1][0] if stack else ""
                    error = _untraceable(path, e, tracer)
                    if not path or path in blocks:
                        raise error from None
                    blocks.add(path)
                    untraceable[path] = error
            x = example
            if training and x.shape[0] < 2:  # batch statistics need two samples
                x = two_samples(x)
            traces.append(_run(model, graph, x, training))
    finally:
        for m, mode in modes.items():
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for name in set(vars(model)) - attrs:  # tensor constants fx attached to the root
            delattr(model, name)
    return Traces(traces, untraceable)


def _untraceable(path: str, e: Exception, tracer: fx.Tracer) -> ConvertError:
    where = _user_line(e)
    graph = getattr(tracer, "graph", None)
    last = next(reversed(graph.nodes), None) if graph is not None else None
    shape = isinstance(e, _ShapeFlow) or (
        isinstance(e, TypeError) and "Proxy" in str(e) and last is not None and from_shape(last)
    )
    if shape:
        problem = (
            f"Python computes with a tensor's size{where} ({type(e).__name__}: {_first_line(e)}), "
            "which torch.fx cannot follow; the channel counts a converted forward sees change "
            "with the width, so take sizes from the module's own attributes or keep it"
        )
    else:
        problem = (
            f"torch.fx cannot trace its forward{where} ({type(e).__name__}: {_first_line(e)}); "
            "data-dependent control flow or Python on tensor values cannot be converted"
        )
    hint = (
        "keep treats the module as one block that does not slim; its inputs must not slim either"
        if path
        else "The model's own forward must be traceable; move that code into a submodule"
    )
    return ConvertError(path, "tracing", problem, [path] if path else [], hint)


def _user_line(e: BaseException) -> str:
    """`` at file.py:12: code`` of the innermost frame outside torch, if any."""
    torch_dir = os.path.dirname(torch.__file__)
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if not frame.filename.startswith(torch_dir) and frame.filename != __file__:
            code = (frame.line or "").strip()
            return f" at {os.path.basename(frame.filename)}:{frame.lineno}: {code}"
    return ""


#: Modules whose no-grad inference runs a fused kernel that ``FlopCounterMode`` cannot count.
_FUSED = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


class _Counting(fx.Interpreter):
    """Runs a graph and records each node's MACs (FLOPs / 2, as :mod:`usnet.profile` counts)."""

    def __init__(self, gm: fx.GraphModule, counter: FlopCounterMode | None) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.counter = counter
        self.macs: dict[fx.Node, int] = {}

    def run_node(self, n: fx.Node) -> Any:
        if self.counter is None:
            return super().run_node(n)
        before = self.counter.get_total_flops()
        if n.op == "call_module" and isinstance(self.module.get_submodule(str(n.target)), _FUSED):
            with torch.enable_grad():  # not the fused inference kernel, which is not counted
                result = fx.node.map_aggregate(
                    super().run_node(n), lambda v: v.detach() if isinstance(v, Tensor) else v
                )
        else:
            result = super().run_node(n)
        spent = self.counter.get_total_flops() - before
        if spent:
            self.macs[n] = spent // 2
        return result


def _run(model: nn.Module, graph: fx.Graph, x: Tensor, training: bool) -> Trace:
    gm = fx.GraphModule(model, graph)  # shares the model's modules and parameters
    counter = None if training else FlopCounterMode(display=False)
    interp = _Counting(gm, counter)
    try:
        with torch.no_grad():
            if counter is None:
                output = interp.run(x)
            else:
                with counter:
                    output = interp.run(x)
    except Exception as e:
        failed = next((n for n in graph.nodes if n not in interp.env), None)  # the failing one
        path = module_path(failed) if failed is not None else ""
        mode = "train" if training else "eval"
        raise ConvertError(
            path,
            "running the example input",
            f"the model fails on an input of shape {tuple(x.shape)} in {mode} mode "
            f"({type(e).__name__}: {_first_line(e)}); pass an example input it accepts",
        ) from None
    macs = {n: m // max(int(x.shape[0]), 1) for n, m in interp.macs.items()}
    return Trace(graph, dict(interp.env), training, output, macs)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""
