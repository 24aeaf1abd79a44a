"""Where networks run and are timed: eager PyTorch, or ONNX Runtime on the dense export.

A backend times two things: one leaf layer on its own (what the lookup table holds), and whole
networks end to end, several widths in interleaved rounds (each round runs every width once in
a fresh seeded order, so load from elsewhere on the machine slows them alike). ``eager`` times
the US model itself, as ``usnet spectrum`` does; ``onnxruntime`` times an ONNX Runtime session
of each width's dense export, as deployed.
"""

from __future__ import annotations

import contextlib
import io
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .. import profile
from ..calibration import is_calibrated
from ..errors import UsageError
from ..nn import WidthConfig
from ..shapes import input_shape
from ..spectrum.compute import placeholder_stats
from .layers import dense_network

BACKENDS = ("eager", "onnxruntime")
#: How the interleaved rounds of one width are summarised.
STATISTICS = ("median", "min")


class Backend(Protocol):
    name: str

    def environment(self) -> dict[str, Any]:
        """What its timings depend on (device, threads, versions)."""
        ...

    def time_layer(self, module: nn.Module, shape: tuple[int, ...], repeats: int) -> float:
        """Milliseconds of one call of ``module`` on an input of ``shape``: the least of
        ``repeats`` calls (a layer takes microseconds; other processes only ever add to that)."""
        ...

    def end_to_end(
        self,
        model: nn.Module,
        widths: Sequence[WidthConfig],
        batch_size: int,
        rounds: int,
        warmup: int,
        statistic: str = "median",
    ) -> list[float]:
        """Milliseconds of a forward at each width, timed in interleaved rounds: the median of
        the rounds, or their least (``statistic="min"``: what an idle machine would show)."""
        ...


def _least_ms(call: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    least = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        least = min(least, time.perf_counter() - start)
    return least * 1000.0


class Eager:
    """Eager PyTorch on the CPU with torch's current thread count."""

    name = "eager"

    def environment(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": "cpu",
            "device_name": profile.device_name("cpu"),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }

    def time_layer(self, module: nn.Module, shape: tuple[int, ...], repeats: int) -> float:
        x = torch.randn(shape)
        with torch.inference_mode():
            return _least_ms(lambda: module(x.clone()) if _inplace(module) else module(x), repeats)

    def end_to_end(
        self,
        model: nn.Module,
        widths: Sequence[WidthConfig],
        batch_size: int,
        rounds: int,
        warmup: int,
        statistic: str = "median",
    ) -> list[float]:
        with contextlib.ExitStack() as stack:  # timing does not read the statistics' values
            for w in widths:
                if not is_calibrated(model, w):
                    stack.enter_context(placeholder_stats(model, w))
            timings = profile.interleaved_latency(model, list(widths), batch_size, rounds, warmup)
        return [t.median_ms if statistic == "median" else t.min_ms for t in timings]


def _inplace(module: nn.Module) -> bool:
    """An in-place layer (``ReLU(inplace=True)``) rewrites its input: time it on a fresh copy,
    as the network gives it a fresh tensor (the copy's cost is part of the measured time, as
    small as the layer's)."""
    return bool(getattr(module, "inplace", False))


class OnnxRuntime:
    """ONNX Runtime's CPU provider, with as many intra-op threads as torch uses."""

    name = "onnxruntime"

    def __init__(self) -> None:
        try:
            import onnxruntime
        except ModuleNotFoundError:
            raise UsageError("the onnxruntime backend needs: pip install 'usnet[onnx]'") from None
        self.ort = onnxruntime
        self.threads = torch.get_num_threads()

    def environment(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": "cpu",
            "device_name": profile.device_name("cpu"),
            "threads": self.threads,
            "onnxruntime": self.ort.__version__,
            "torch": torch.__version__,
        }

    def session(self, module: nn.Module, shape: tuple[int, ...]) -> Any:
        """An inference session of ``module`` exported for inputs of ``shape``."""
        buffer = io.BytesIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (torch.zeros(shape),),
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                input_names=["x"],
                opset_version=17,
            )
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return self.ort.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def time_layer(self, module: nn.Module, shape: tuple[int, ...], repeats: int) -> float:
        s = self.session(module, shape)
        x = {"x": np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        return _least_ms(lambda: s.run(None, x), repeats)

    def end_to_end(
        self,
        model: nn.Module,
        widths: Sequence[WidthConfig],
        batch_size: int,
        rounds: int,
        warmup: int,
        statistic: str = "median",
    ) -> list[float]:
        shape = (batch_size, *input_shape(model))
        sessions = [self.session(dense_network(model, w), shape) for w in widths]
        x = {"x": np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        times: list[list[float]] = [[] for _ in widths]
        order, rng = list(range(len(widths))), random.Random(0)
        for r in range(warmup + rounds):
            rng.shuffle(order)
            for i in order:
                start = time.perf_counter()
                sessions[i].run(None, x)
                if r >= warmup:
                    times[i].append((time.perf_counter() - start) * 1000.0)
        return [statistics.median(t) if statistic == "median" else min(t) for t in times]


def backend(name: str) -> Backend:
    """The backend called ``name`` (``eager`` or ``onnxruntime``)."""
    if name == "eager":
        return Eager()
    if name == "onnxruntime":
        return OnnxRuntime()
    raise UsageError(f"latency backend {name!r} is unknown; allowed: {list(BACKENDS)}")
