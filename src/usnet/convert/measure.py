"""Measuring an operation without a rule: does it treat channels one by one?

It does if running it on the leading half of the channels gives the leading half of its result
(activations, pooling, padding, interpolation); random operations run with the same seed both
times. The answer is a reason *why not* (``None``: it commutes), so a refusal can say whether
the values differ, the narrow run fails (a hard-coded channel count) or the operation cannot
be re-run at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import torch
from torch import Tensor, fx, nn


def commutes(
    values: dict[fx.Node, Any], call: Callable, args: Any, kwargs: Any, x: fx.Node, dim: int
) -> str | None:
    """``None`` if ``call`` on the leading half of ``x``'s channels (dimension ``dim``) gives the
    leading half of its result; otherwise why not."""
    full_in = values[x]
    channels = full_in.shape[dim]
    if channels < 2:
        return None
    half = channels // 2

    def concrete(narrow: bool) -> tuple[Any, Any]:
        def value(n: fx.Node) -> Any:
            v = values[n]
            if n is x and narrow:
                v = v.narrow(dim, 0, half)
            return v.clone() if isinstance(v, Tensor) else v

        return fx.node.map_arg(args, value), fx.node.map_arg(kwargs, value)

    rng = torch.default_generator  # CPU only: torch.manual_seed would queue CUDA seeding too
    state = rng.get_state()
    try:
        with torch.no_grad():
            rng.manual_seed(0)
            try:
                a, k = concrete(False)
                full = call(*a, **k)
            except MemoryError:
                raise
            except Exception as e:
                return f"re-running it on its recorded inputs fails ({_short(e)})"
            rng.manual_seed(0)
            try:
                a, k = concrete(True)
                part = call(*a, **k)
            except MemoryError:
                raise
            except Exception as e:
                return f"on the leading half of its channels it fails ({_short(e)})"
    finally:
        rng.set_state(state)
    if not (isinstance(full, Tensor) and isinstance(part, Tensor)):
        return "it does not return one tensor"
    if full.dim() != full_in.dim() or full.shape[dim] != channels:
        return f"its result does not keep the {channels} channels on dimension {dim}"
    want = full.narrow(dim, 0, half)
    if want.shape != part.shape or not torch.allclose(
        want, part, rtol=1e-5, atol=1e-6, equal_nan=True
    ):
        return (
            "on the leading half of its channels it does not give the leading half of its "
            "result (it mixes channels)"
        )
    return None


def method_call(node: fx.Node) -> Callable:
    """The callable of a ``call_function`` or ``call_method`` node."""
    if node.op == "call_function":
        return cast(Callable, node.target)
    name = str(node.target)
    return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)


@contextlib.contextmanager
def evaluating(m: nn.Module) -> Iterator[None]:
    """``m`` in eval mode (dropout off) for the measurement; its modes restored after."""
    modes = [(s, s.training) for s in m.modules()]
    m.eval()
    try:
        yield
    finally:
        for s, mode in modes:
            s.training = mode


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def tensors_of(v: Any) -> list[Tensor]:
    """The tensors of a forward's output in order: a tensor, or nested tuples, lists and mappings
    of them (a detection backbone's dict of feature maps); anything else contributes none."""
    if isinstance(v, Tensor):
        return [v]
    if isinstance(v, Mapping):
        v = list(v.values())
    if isinstance(v, (tuple, list)):
        return [t for e in v for t in tensors_of(e)]
    return []
