"""Cost of a network at a width: MACs, parameters and latency (design.md, "spectrum").

MACs are counted by running the network under :class:`torch.utils.flop_counter.FlopCounterMode`
rather than by a hand-written per-layer formula, so every architecture (and every dense
export) is counted by the same rule. Parameters are those of the dense network the width
selects (:func:`usnet.export.extract`), so a new model family that teaches ``extract`` its
layers is counted correctly too. Latencies of several widths are measured in interleaved
rounds (:func:`interleaved_latency`), so load from elsewhere on the machine cannot single out
one width.
"""

from __future__ import annotations

import contextlib
import math
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .errors import UsageError
from .export import extract
from .logs import progress_bar
from .nn import (
    USBatchNorm2d,
    WidthConfig,
    WidthSpace,
    format_width,
    get_width,
    modes_kept,
    width_space,
)
from .nn import width as at_width
from .shapes import example_input, input_shape

__all__ = [
    "Timing",
    "device_name",
    "input_shape",
    "interleaved_latency",
    "latency",
    "macs",
    "params",
]


@contextlib.contextmanager
def _at(model: nn.Module, width: WidthConfig | None) -> Iterator[None]:
    """Run at ``width`` (``None``: as it is, e.g. a dense model) and restore every module's mode."""
    with modes_kept(model):
        if width is None:
            yield
        else:
            with at_width(model, width):
                yield


def _first_param(model: nn.Module) -> torch.Tensor:
    for p in model.parameters():
        return p
    return torch.empty(0)


def macs(
    model: nn.Module,
    width: WidthConfig | None,
    input_size: int | tuple[int, ...] | None = None,
    *,
    meta: bool = True,
) -> int:
    """Multiply-accumulates per input of the network at ``width`` (``None``: its current width).

    Counts convolutions and matrix products (conv and linear layers) with ``FlopCounterMode``:
    MACs = FLOPs / 2. The model's width, train/eval modes and statistics are left as they were,
    and uncalibrated widths can be counted (BNs use batch statistics). The pass runs on meta
    tensors (shapes only: no memory, whatever the model's size); a model whose forward needs
    real data is run for real instead. ``meta=False`` runs for real from the start: a small
    model's real forward (two inputs) costs less than the meta tensors' Python dispatch, which
    matters to a caller counting thousands of widths (a search).
    """
    shape = input_shape(model, input_size)
    with _at(model, width), torch.no_grad():
        if meta:
            try:
                return _count_macs(model, shape, meta=True)
            except (RuntimeError, NotImplementedError, TypeError):
                pass
        return _count_macs(model, shape, meta=False)


def _count_macs(model: nn.Module, shape: tuple, meta: bool) -> int:
    """FLOPs / 2 of one forward of a batch of two, halved (batch statistics need two values)."""
    # Eval mode (inference's forward; no running statistics change) except US BNs, which then
    # use batch statistics and so need no calibration.
    model.eval()
    for m in model.modules():
        if isinstance(m, USBatchNorm2d):
            m.train()
    x = example_input(model, 2, shape, "meta" if meta else None)
    # the math backend: CPU's fused attention kernel has no FLOP formula (it would count 0),
    # the math one runs the two matrix products the meta tensors count
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        if meta:
            named = (*model.named_parameters(), *model.named_buffers())
            state = {k: t.to("meta") for k, t in named}
            torch.func.functional_call(model, state, (x,), strict=True)
        else:
            model(x)
    return counter.get_total_flops() // 4


def params(model: nn.Module, width: WidthConfig | None) -> int:
    """Parameters active at ``width`` (``None``: the current width).

    Sliced conv/linear weights and biases, the BN affine parameters of active channels, and the
    full count of layers that do not slim: the parameters of the dense network this width is.
    """
    if width is None and not isinstance(getattr(model, "width_space", None), WidthSpace):
        return sum(p.numel() for p in model.parameters())  # a dense model
    with _at(model, width):
        dense = extract(model, None, stats=False)
    return sum(p.numel() for p in dense.parameters())


@dataclass(frozen=True)
class Timing:
    """One network's timed runs, summarised robustly (milliseconds per batch).

    The median is the estimate; the quartiles ``q1_ms``..``q3_ms`` (the middle half of the runs)
    say how far to trust it: their gap relative to the median is :attr:`spread`.
    """

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    stdev_ms: float
    runs: int

    @classmethod
    def of(cls, times_ms: Sequence[float]) -> Timing:
        if not times_ms:
            raise UsageError("no timed runs to summarise")
        t = sorted(times_ms)
        q1, _, q3 = statistics.quantiles(t, n=4, method="inclusive") if len(t) > 1 else t * 3
        return cls(
            median_ms=statistics.median(t),
            q1_ms=q1,
            q3_ms=q3,
            min_ms=t[0],
            max_ms=t[-1],
            mean_ms=statistics.fmean(t),
            stdev_ms=statistics.stdev(t) if len(t) > 1 else 0.0,
            runs=len(t),
        )

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.1: the middle half within 10 %)."""
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else math.inf


def interleaved_latency(
    model: nn.Module,
    widths: Sequence[WidthConfig | None],
    batch_size: int = 1,
    rounds: int = 30,
    warmup: int = 5,
    *,
    device: str | torch.device | None = None,
    input_size: int | tuple[int, ...] | None = None,
    seed: int = 0,
    timer: Callable[[], float] = time.perf_counter,
) -> list[Timing]:
    """Inference time of one batch at each of ``widths``, measured in interleaved rounds.

    Every round runs each width once, in a fresh (seeded) random order, so a burst of load
    from elsewhere on the machine slows every width alike instead of making one row an outlier;
    each width's :class:`Timing` summarises its ``rounds`` runs by their median and quartiles.
    ``warmup`` untimed rounds come first. ``timer`` returns seconds (tests pass a fake clock).
    Eval mode under ``torch.inference_mode``, so widths need BN statistics (an uncalibrated
    width raises the model's own error). ``device`` defaults to the model's; the model moves
    there and back. Width ``None`` (run as it is, e.g. a dense model) must be the only one.
    The model's width and train/eval modes are restored. Several models in the same rounds:
    :func:`interleaved_latency_of`.
    """
    return interleaved_latency_of(
        [(model, w) for w in widths],
        batch_size,
        rounds,
        warmup,
        device=device,
        input_size=input_size,
        seed=seed,
        timer=timer,
    )


def interleaved_latency_of(
    targets: Sequence[tuple[nn.Module, WidthConfig | None]],
    batch_size: int = 1,
    rounds: int = 30,
    warmup: int = 5,
    *,
    device: str | torch.device | None = None,
    input_size: int | tuple[int, ...] | None = None,
    seed: int = 0,
    timer: Callable[[], float] = time.perf_counter,
) -> list[Timing]:
    """:func:`interleaved_latency` over ``(model, width)`` pairs of one or more models: a
    US-Net and its baselines timed in the same rounds meet the same machine load, so their
    latencies can be compared. A model with width ``None`` must appear only once."""
    if batch_size < 1 or rounds < 1 or warmup < 0:
        raise UsageError(
            f"batch_size ({batch_size}) and repeats ({rounds}) must be >= 1, warmup ({warmup}) >= 0"
        )
    if not targets:
        raise UsageError("give one (model, width) pair or more")
    models: dict[int, tuple[nn.Module, list[WidthConfig | None]]] = {}
    for m, w in targets:
        models.setdefault(id(m), (m, []))[1].append(w)
    if any(None in ws and len(ws) > 1 for _, ws in models.values()):
        raise UsageError("give one width or more; None (the model as it is) only on its own")
    inputs: dict[int, torch.Tensor] = {}
    homes: dict[int, torch.device] = {}
    for key, (m, _) in models.items():
        p = _first_param(m)
        homes[key] = p.device
        dev = torch.device(device) if device is not None else p.device
        shape = input_shape(m, input_size)
        inputs[key] = example_input(m, batch_size, shape, dev, random=True)
    devices = {x.device for x in inputs.values()}
    syncs = [(lambda d=d: torch.cuda.synchronize(d)) for d in devices if d.type == "cuda"]

    def sync() -> None:
        for s in syncs:
            s()

    order, rng = list(range(len(targets))), random.Random(seed)
    times: list[list[float]] = [[] for _ in targets]
    try:
        for key, (m, _) in models.items():
            m.to(inputs[key].device)  # outside inference mode: parameters stay normal tensors
        with contextlib.ExitStack() as stack, torch.inference_mode():
            for m, _ in models.values():
                stack.enter_context(_at(m, None))  # modes restored afterwards
                m.eval()
            for r in progress_bar(range(warmup + rounds), desc="latency"):
                rng.shuffle(order)
                for i in order:
                    m, w = targets[i]
                    x = inputs[id(m)]
                    with contextlib.nullcontext() if w is None else width_space(m).at(w):
                        sync()
                        start = timer()
                        m(x)
                        sync()
                        elapsed = timer() - start
                    if r >= warmup:
                        times[i].append(elapsed * 1000.0)
    finally:
        for key, (m, _) in models.items():
            m.to(homes[key])
    return [Timing.of(t) for t in times]


def latency(
    model: nn.Module,
    width: WidthConfig | None,
    batch_size: int = 1,
    repeats: int = 50,
    warmup: int = 10,
    device: str | torch.device | None = None,
    input_size: int | tuple[int, ...] | None = None,
) -> dict:
    """Inference time of one batch at one ``width``: the median of ``repeats`` runs after warm-up.

    As :func:`interleaved_latency` with one width (which see; a spectrum times many widths
    together). The result records what the number depends on: device, threads, torch version.
    """
    (t,) = interleaved_latency(
        model, [width], batch_size, repeats, warmup, device=device, input_size=input_size
    )
    dev = torch.device(device) if device is not None else _first_param(model).device
    with _at(model, width):
        config = get_width(model) if width is not None else None
    return {
        "width": None if config is None else format_width(config),
        "batch_size": batch_size,
        "median_ms": t.median_ms,
        "q1_ms": t.q1_ms,
        "q3_ms": t.q3_ms,
        "mean_ms": t.mean_ms,
        "min_ms": t.min_ms,
        "max_ms": t.max_ms,
        "stdev_ms": t.stdev_ms,
        "images_per_s": batch_size * 1000.0 / t.median_ms,
        "repeats": repeats,
        "warmup": warmup,
        "device": str(dev),
        "device_name": device_name(dev),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def device_name(device: torch.device | str = "cpu") -> str:
    """A readable name of ``device``: the GPU's, or the CPU model (``platform.processor()`` is
    empty on many Linux systems)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
