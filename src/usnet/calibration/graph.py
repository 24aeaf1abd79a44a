"""Calibration's runs of a module as a ``torch.fx`` graph, node by node.

A BN's exact statistics need every calibration sample to have passed the BNs before it with their
final statistics. Run *layer-major* (each node over all batches before the next node), a stage
computes each layer once, and a BN's statistics are pooled from all batches' inputs before any
batch goes past it. The activations of all batches are kept on the model's device within a byte
budget; over it, the caller falls back to passes that recompute (a :class:`Feed` chain, truncated
passes), so memory stays bounded. ``single_pass`` runs each batch so, in chunks, with the batch's
own statistics. A BN whose input no other node reads normalises it in place (no allocation: on a
CPU about three times as fast as ``F.batch_norm``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, cast

import torch
from torch import Tensor, fx, nn

from ..nn import USBatchNorm2d

#: ``norm(bn, inputs, in_place)``: the BN's outputs for a list of inputs (one per batch).
Norm = Callable[[USBatchNorm2d, list[Tensor], bool], list[Tensor]]


def _nbytes(value: object) -> int:
    return value.untyped_storage().nbytes() if isinstance(value, Tensor) else 0


def _storage(value: object) -> int | None:
    return value.untyped_storage().data_ptr() if isinstance(value, Tensor) else None


class Feed:
    """The per-batch inputs of the next stage: kept tensors on the device, or the CPU batches moved
    to the device one at a time and run through ``chain`` (recomputed on every pass)."""

    def __init__(
        self,
        base: list[Tensor],
        device: torch.device,
        chain: tuple[nn.Module, ...] = (),
        kept: bool = False,
    ) -> None:
        self.base, self.device, self.chain, self.kept = base, device, chain, kept
        self.samples = sum(len(x) for x in base)

    def __iter__(self) -> Iterator[Tensor]:
        for x in self.base:
            x = x.to(self.device, non_blocking=True)
            for stage in self.chain:
                x = stage(x)
            yield x

    @property
    def kept_bytes(self) -> int:
        return sum(_nbytes(x) for x in self.base) if self.kept else 0

    def collect(self, limit: float) -> list[Tensor] | None:
        """Every batch's input, or None if all of them would take more than ``limit`` bytes."""
        if self.kept and not self.chain:
            return self.base
        return _collect(iter(self), self.samples, limit)

    def then(self, stage: nn.Module, outputs: list[Tensor] | None, budget: float) -> Feed:
        """The feed of the stage after ``stage``: its ``outputs`` (computed here if None) kept if
        they fit ``budget`` with what is kept now, else ``stage`` recomputed after this feed."""
        if outputs is None:
            outputs = _collect((stage(x) for x in self), self.samples, budget - self.kept_bytes)
        if outputs is not None:
            return Feed(outputs, self.device, (), kept=True)
        return Feed(self.base, self.device, self.chain + (stage,), self.kept)


def _collect(values: Iterator[Tensor], samples: int, limit: float) -> list[Tensor] | None:
    """All of ``values`` (batches covering ``samples``), or None if the first one says that all
    of them would take more than ``limit`` bytes (then only the first one was computed)."""
    first = next(values)
    if _nbytes(first) * samples / max(len(first), 1) > limit:
        return None
    return [first, *values]


class _Tracer(fx.Tracer):
    """Traces into modules that hold BNs; everything else (US layers too) stays one call."""

    def __init__(self) -> None:
        # no autowrapping of math functions (~1/3 of a trace's time); torch types it a 1-tuple
        super().__init__(autowrap_modules=cast("tuple[ModuleType]", ()))

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, USBatchNorm2d) or not any(
            isinstance(s, USBatchNorm2d) for s in m.modules()
        )


class Program:
    """``root``'s forward as a list of fx nodes, with where each value is last read."""

    def __init__(self, root: nn.Module, graph: fx.Graph) -> None:
        self.root, self.nodes = root, list(graph.nodes)
        self.last_use = {a: i for i, node in enumerate(self.nodes) for a in node.all_input_nodes}
        self.modules = {
            n: root.get_submodule(str(n.target)) for n in self.nodes if n.op == "call_module"
        }
        self.bns = {n: m for n, m in self.modules.items() if isinstance(m, USBatchNorm2d)}
        self.bn_input = {n: n.args[0] for n in self.bns if isinstance(n.args[0], fx.Node)}

    @classmethod
    def trace(cls, root: nn.Module) -> Program | None:
        """None if fx cannot trace ``root``, it takes more than one input, or a BN is not called
        as ``bn(x)``."""
        try:
            program = cls(root, _Tracer().trace(root))
        except Exception:  # noqa: BLE001 - fx raises many types for untraceable code: fall back
            return None
        inputs = [n for n in program.nodes if n.op == "placeholder"]
        ok = all(len(n.args) == 1 and not n.kwargs and n in program.bn_input for n in program.bns)
        return program if ok and len(inputs) == 1 else None

    @classmethod
    def of(cls, root: nn.Module, key: str, cache: dict[tuple[int, str], object]) -> Program | None:
        """:meth:`trace` of ``root`` at network ``key``, kept in ``cache`` (tracing all stages of
        US-MobileNet v2 takes ~60 ms: a tenth of calibrating 64 images at width 0.35) and used
        again while ``root`` still holds the same modules."""
        program = cache.get((id(root), key))
        if isinstance(program, Program) and program.root is root and program.current():
            return program
        program = cls.trace(root)
        if program is not None:
            if len(cache) >= 256:
                cache.clear()
            cache[(id(root), key)] = program
        return program

    def current(self) -> bool:
        """Whether every module of the graph is still where it was traced."""
        return all(self.root.get_submodule(str(n.target)) is m for n, m in self.modules.items())

    def call(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "call_module":
            return self.modules[node](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        if node.op == "get_attr":
            return operator.attrgetter(str(node.target))(self.root)
        assert node.op == "call_function" and callable(node.target)
        return node.target(*args, **kwargs)

    def owns(self, i: int, env: dict[fx.Node, Any], protected: set[int | None]) -> bool:
        """Whether BN node ``i`` may overwrite its input: no later node reads it, and it shares
        storage with no other live value nor with the run's inputs."""
        node = self.nodes[i]
        arg = self.bn_input[node]
        if self.last_use[arg] != i or arg.op in ("placeholder", "get_attr"):
            return False
        mine = _storage(env[arg])
        others = {_storage(v) for n, v in env.items() if n is not arg}
        return mine not in protected and mine not in others

    def run_layer_major(self, feed: Feed, budget: float, norm: Norm) -> list[Tensor] | None:
        """All batches of ``feed`` through the graph node by node; every BN node calls ``norm``
        with all batches' inputs. Returns the output per batch, or None if the activations would
        exceed ``budget`` bytes (with what ``feed`` keeps) or the output is not one tensor."""
        envs: list[dict[fx.Node, Any]] = [{} for _ in feed.base]
        size: dict[fx.Node, int] = {}
        live = feed.kept_bytes
        scale = feed.samples / max(len(feed.base[0]), 1)  # all batches' bytes per first batch's
        protected: set[int | None] = set()
        for i, node in enumerate(self.nodes):
            if node.op == "output":
                out = node.args[0]
                return [env[out] for env in envs] if isinstance(out, fx.Node) else None
            if node.op == "placeholder":
                values = feed.collect(budget - live)
                if values is None:
                    return None
                protected = {_storage(v) for v in values}
                size[node] = 0 if values is feed.base else sum(map(_nbytes, values))
            elif node in self.bns:
                arg = self.bn_input[node]
                owned = all(self.owns(i, env, protected) for env in envs)
                if not owned and live + size[arg] > budget:  # the outputs take what inputs do
                    return None
                values = norm(self.bns[node], [env[arg] for env in envs], owned)
                size[node] = size[arg] if owned else sum(map(_nbytes, values))
            else:
                values, size[node] = [], 0
                for env in envs:
                    values.append(self.call(node, env))
                    if len(values) == 1 and live + _nbytes(values[0]) * scale > budget:
                        return None
                    size[node] += _nbytes(values[-1])
            for env, value in zip(envs, values, strict=True):
                env[node] = value
            live += size[node]
            for arg in node.all_input_nodes:
                if self.last_use[arg] == i:
                    for env in envs:
                        del env[arg]
                    live -= size.pop(arg)
        return None
