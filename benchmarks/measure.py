"""Shared by the benchmarks: the side-by-side measurement, its result, the models and inputs."""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import usnet
from usnet.calibration import calibrate
from usnet.shapes import input_shape

TINY = {"input_size": 16, "blocks": ((1, 8, 1, 1), (6, 16, 2, 2)), "last_channels": 64}


@dataclass
class Result:
    """One side-by-side measurement: ``a`` (the US-Net) against ``b`` (the reference)."""

    bench: str
    case: str
    a_label: str
    a: float
    b_label: str
    b: float
    unit: str
    target: str  # e.g. "<= 1.05" on a / b
    extra: dict = field(default_factory=dict)
    pairs: list[float] | None = None  # the per-pair ratios a/b, when the runs were paired

    @property
    def ratio(self) -> float:
        """The median of the per-pair ratios where the runs were paired, else ``a / b``."""
        if self.pairs:
            return statistics.median(self.pairs)
        return self.a / self.b if self.b > 0 else float("inf")

    @property
    def spread(self) -> str:
        """The per-pair ratios' quartiles ("" unpaired or under 4 pairs): how far one pair's
        ratio strays on this machine, so how much one run's median can be trusted."""
        if not self.pairs or len(self.pairs) < 4:
            return ""
        q1, _, q3 = statistics.quantiles(self.pairs, n=4)
        return f"{q1:.3f}-{q3:.3f}"

    @property
    def met(self) -> bool:
        op, value = self.target.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def line(self) -> str:
        return (
            f"{self.bench:<11} {self.case:<24} {self.a_label} {self.a:9.3f} {self.unit:<5} "
            f"{self.b_label} {self.b:9.3f} {self.unit:<5} ratio {self.ratio:6.3f} "
            f"(target {self.target}: {'met' if self.met else 'MISSED'})"
            + (f" pairs {self.spread}" if self.spread else "")
        )


# -- set-up -----------------------------------------------------------------------------------
#: The networks the benchmarks build (``--model``).
MODELS = ("mobilenet", "tiny", "vit", "vit224")


def build(name: str) -> nn.Module:
    """US-MobileNet v2 (224 px, ImageNet), a tiny one (16 px), or timm's ViT-Tiny converted (12
    blocks of 3 heads; heads, MLP and embedding slim): ``vit`` at 64 px (16 patches and a class
    token: 17 tokens, where per-layer Python shows most), ``vit224`` at its own 224 px (197
    tokens); with random weights."""
    torch.manual_seed(0)
    if name == "mobilenet":
        return usnet.create_model("us_mobilenet_v2")
    if name == "tiny":
        return usnet.create_model("us_mobilenet_v2_small", **TINY)
    if name == "vit":
        return usnet.create_model("timm:vit_tiny_patch16_224", img_size=64, input_size=64)
    if name == "vit224":
        return usnet.create_model("timm:vit_tiny_patch16_224", input_size=224)
    raise ValueError(f"--model {name!r} is unknown; allowed: {', '.join(MODELS)}")


def calibrate_on_noise(model: nn.Module, widths: list) -> None:
    """Calibrated statistics for ``widths`` from random inputs: their values do not matter for speed."""
    calibrate(model, [inputs(model, 2)], widths, 2, "single_pass")


def inputs(model: nn.Module, batch: int) -> torch.Tensor:
    return torch.randn(batch, *input_shape(model), generator=torch.Generator().manual_seed(1))


#: The benchmarks' clocks: ``cpu`` is this process's CPU time (with one thread: the work done,
#: whatever other jobs on a shared machine take), ``wall`` the elapsed time.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def interleaved(
    a: Callable[[], object],
    b: Callable[[], object],
    warmup: int,
    repeats: int,
    clock: Callable[[], float] = time.process_time,
) -> tuple[float, float, list[float]]:
    """Median seconds of ``a`` and ``b`` over ``repeats`` back-to-back pairs after ``warmup``,
    and the pairs' ratios ``a/b`` (their median is the result's ratio).

    The order within a pair alternates, and a pair's two runs see the same machine load, so the
    paired ratio stays stable on a busy machine where the medians of each side drift.
    """
    ta: list[float] = []
    tb: list[float] = []
    for i in range(warmup + repeats):
        for f, times in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            start = clock()
            f()
            elapsed = clock() - start
            if i >= warmup:
                times.append(elapsed)
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    return statistics.median(ta), statistics.median(tb), ratios


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> None:
    """Make glibc keep freed memory in the process: every block from the heap (no ``mmap``) and
    no trimming, as jemalloc and tcmalloc do. By default glibc returns large freed blocks (every
    224 px activation) to the system, and the next allocation page-faults them in again: a
    quarter of a training step's CPU time here, varying by +-10 % between identical steps."""
    path = ctypes.util.find_library("c")
    libc = ctypes.CDLL(path) if path else None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)):
        raise ValueError(f"--malloc keep needs glibc's mallopt; not available here (libc: {path})")
