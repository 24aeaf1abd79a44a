"""Benchmark 6, compiled: ``usnet.compile(model)`` switched to width w against
``torch.compile(extract(model, w))``, the compiled dense network of that width (eval,
``torch.inference_mode``).

Both sides run every width through one compiled object each: the US model through one
``usnet.compile`` (one graph per network, docs/design-notes.md), the dense side through one
compiled module per width. The first call of each (the compilation) is timed separately and
not part of the ratio. Before timing, each width's compiled US output is checked against the
eager US model's, so a graph that silently fell back or specialised wrongly fails here rather
than looking fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch
from measure import Result, calibrate_on_noise, inputs, interleaved
from torch import nn

import usnet
from usnet.export import extract

Clock = Callable[[], float]


def _first_call(f: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = f()
    return out, time.perf_counter() - start


def bench_compiled(
    model: nn.Module,
    widths: list[float],
    plan: list[tuple[int, int]],
    clock: Clock,
    backend: str = "inductor",
) -> list[Result]:
    calibrate_on_noise(model, widths)
    model.eval()
    compiled = usnet.compile(model, backend=backend)
    out = []
    for w in widths:
        dense = torch.compile(extract(model, w), backend=backend)
        for batch, repeats in plan:
            x = inputs(model, batch)

            def us(x: torch.Tensor = x, w: float = w) -> torch.Tensor:
                with usnet.width(compiled, w):
                    return compiled(x)

            with torch.inference_mode():
                got, us_first = _first_call(us)
                _, dense_first = _first_call(partial(dense, x))
                with usnet.width(model, w):
                    want = model(x)
                error = (got - want).abs().max().item() / want.abs().max().clamp_min(1e-12).item()
                if error > 1e-3:
                    raise RuntimeError(f"compiled US model at w={w} differs from eager: {error:.2e}")
                tu, td, pairs = interleaved(us, partial(dense, x), 2, repeats, clock)
            r = Result(
                "compiled",
                f"w={w} batch={batch}",
                "us",
                tu * 1e3,
                "dense",
                td * 1e3,
                "ms",
                "<= 1.05",
                {
                    "repeats": repeats,
                    "backend": backend,
                    "first_call_s": {"us": round(us_first, 2), "dense": round(dense_first, 2)},
                    "relative_error": error,
                },
                pairs,
            )
            print(r.line() + f"  first calls {us_first:.1f} / {dense_first:.1f} s", flush=True)
            out.append(r)
    return out
