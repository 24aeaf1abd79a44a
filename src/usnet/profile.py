"""Cost of a network at a width: MACs, parameters and latency (design.md, "spectrum").

MACs are counted by running the network under :class:`torch.utils.flop_counter.FlopCounterMode`
rather than by a hand-written per-layer formula, so every architecture (and every dense
export) is counted by the same rule. Parameters are those of the dense network the width
selects (:func:`usnet.export.extract`), so a new model family that teaches ``extract`` its
layers is counted correctly too.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .export import extract
from .nn import USBatchNorm2d, WidthConfig, WidthSpace, format_width, get_width
from .nn import width as at_width
from .shapes import input_shape

__all__ = ["device_name", "input_shape", "latency", "macs", "params"]


@contextlib.contextmanager
def _at(model: nn.Module, width: WidthConfig | None) -> Iterator[None]:
    """Run at ``width`` (``None``: as it is, e.g. a dense model) and restore every module's mode."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        if width is None:
            yield
        else:
            with at_width(model, width):
                yield
    finally:
        for m, training in modes:
            m.training = training


def _first_param(model: nn.Module) -> torch.Tensor:
    for p in model.parameters():
        return p
    return torch.empty(0)


def macs(
    model: nn.Module,
    width: WidthConfig | None,
    input_size: int | tuple[int, ...] | None = None,
) -> int:
    """Multiply-accumulates per input of the network at ``width`` (``None``: its current width).

    Counts convolutions and matrix products (conv and linear layers) with ``FlopCounterMode``:
    MACs = FLOPs / 2. The model's width, train/eval modes and statistics are left as they were,
    and uncalibrated widths can be counted (BNs use batch statistics). The pass runs on meta
    tensors (shapes only, so it costs microseconds per layer); a model whose forward needs real
    data is run for real instead.
    """
    shape = input_shape(model, input_size)
    with _at(model, width), torch.no_grad():
        try:
            return _count_macs(model, shape, meta=True)
        except (RuntimeError, NotImplementedError, TypeError):
            return _count_macs(model, shape, meta=False)


def _count_macs(model: nn.Module, shape: tuple, meta: bool) -> int:
    """FLOPs / 2 of one forward of a batch of two, halved (batch statistics need two values)."""
    # Eval mode (inference's forward; no running statistics change) except US BNs, which then
    # use batch statistics and so need no calibration.
    model.eval()
    for m in model.modules():
        if isinstance(m, USBatchNorm2d):
            m.train()
    p = _first_param(model)
    dtype = p.dtype if p.is_floating_point() else None
    x = torch.zeros(2, *shape, dtype=dtype, device="meta" if meta else p.device)
    with FlopCounterMode(display=False) as counter:
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


def latency(
    model: nn.Module,
    width: WidthConfig | None,
    batch_size: int = 1,
    repeats: int = 50,
    warmup: int = 10,
    device: str | torch.device | None = None,
    input_size: int | tuple[int, ...] | None = None,
) -> dict:
    """Inference time of one batch at ``width``: the median of ``repeats`` timed runs after warm-up.

    Eval mode under ``torch.inference_mode``, so the width needs calibrated BN statistics (an
    uncalibrated width raises the model's own error). ``device`` defaults to the model's; the
    model is moved there for the measurement and back afterwards. The result records what the
    number depends on: device, threads, torch version.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"batch_size ({batch_size}) and repeats ({repeats}) must be >= 1, warmup ({warmup}) >= 0"
        )
    shape = input_shape(model, input_size)
    home = _first_param(model).device
    dev = torch.device(device) if device is not None else home
    cuda = dev.type == "cuda"
    p = _first_param(model)
    x = torch.randn(batch_size, *shape, dtype=p.dtype if p.is_floating_point() else None)
    x = x.to(dev)
    times: list[float] = []
    model.to(dev)
    try:
        with _at(model, width), torch.inference_mode():
            model.eval()
            for i in range(warmup + repeats):
                if cuda:
                    torch.cuda.synchronize(dev)
                start = time.perf_counter()
                model(x)
                if cuda:
                    torch.cuda.synchronize(dev)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
            config = get_width(model) if width is not None else None
    finally:
        model.to(home)
    median = statistics.median(times)
    return {
        "width": None if config is None else format_width(config),
        "batch_size": batch_size,
        "median_ms": median,
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "stdev_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
        "images_per_s": batch_size * 1000.0 / median,
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
