"""The data flow of a model: ``torch.fx`` graphs in eval and train mode, with every node's value.

``torch.fx`` symbolic tracing (not ``torch.export``) because the converter keeps the model's own
Python ``forward`` and swaps modules in place: fx records ``call_module`` nodes by module path,
which is exactly what is swapped, while ``torch.export`` inlines modules into aten ops. fx bakes
Python control flow on ``self.training`` into the graph, so both modes are traced (a GoogLeNet's
auxiliary heads run only in training) and every constraint of either graph holds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn

from .errors import ConvertError


@dataclass
class Trace:
    """One mode's graph and the value each node took on the example input."""

    graph: fx.Graph
    values: dict[fx.Node, Any]
    training: bool
    output: Any


def timm_notrace() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    """timm's own leaf modules and opaque functions (only when timm is already imported)."""
    if "timm" not in sys.modules:
        return (), ()
    try:
        from timm.layers import _fx
    except ImportError:  # pragma: no cover - other timm layouts
        return (), ()
    return tuple(_fx.get_notrace_modules()), tuple(_fx.get_notrace_functions())


class _Tracer(fx.Tracer):
    def __init__(self, leaf: Callable[[nn.Module, str], bool], autowrap: tuple[Callable, ...]):
        super().__init__(autowrap_functions=autowrap)
        self._leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return self._leaf(m, module_qualified_name) or super().is_leaf_module(
            m, module_qualified_name
        )


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
) -> list[Trace]:
    """Trace ``model`` in eval and in train mode and run each graph on ``example``.

    The model's modes, buffers (batch-norm running statistics move in a training pass) and
    attributes are restored afterwards. ``opaque`` module paths are not traced into.
    """
    leaves, autowrap = timm_notrace()

    def is_leaf(m: nn.Module, path: str) -> bool:
        return path in opaque or isinstance(m, leaves) or leaf(m, path)

    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    attrs = set(vars(model))
    traces = []
    try:
        for training in (False, True):
            model.train(training)
            tracer = _Tracer(is_leaf, autowrap)
            try:
                graph = tracer.trace(model)
            except ConvertError:
                raise
            except Exception as e:
                stack = list(tracer.module_stack.values())
                path = stack[-1][0] if stack else ""
                raise ConvertError(
                    path,
                    "tracing",
                    f"torch.fx cannot trace its forward ({type(e).__name__}: {_first_line(e)}); "
                    "data-dependent control flow or Python on tensor values cannot be converted",
                    [path] if path else [],
                    "keep treats the module as one block that does not slim; its inputs must "
                    "not slim either",
                ) from None
            x = example
            if training and x.shape[0] < 2:  # batch statistics need two samples
                x = torch.cat([x, x.flip(0) + 0.5])
            traces.append(_run(model, graph, x, training))
    finally:
        for m, mode in modes.items():
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for name in set(vars(model)) - attrs:  # tensor constants fx attached to the root
            delattr(model, name)
    return traces


def _run(model: nn.Module, graph: fx.Graph, x: Tensor, training: bool) -> Trace:
    gm = fx.GraphModule(model, graph)  # shares the model's modules and parameters
    interp = fx.Interpreter(gm, garbage_collect_values=False)
    try:
        with torch.no_grad():
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
    return Trace(graph, dict(interp.env), training, output)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""
