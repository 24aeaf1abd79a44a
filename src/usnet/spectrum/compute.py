"""The spectrum of a US model: cost and quality of every network in a width grid (design.md).

One trained US-Net stands for a whole family of networks; :func:`compute_spectrum` makes that
family visible. Per width it records the active channels, MACs, parameters, latency on this
device (batch 1, and throughput at a larger batch) and the task's quality metrics. Widths that
round to the same network (same plan key) are one row that lists every width sharing it.

Latency is measured for all rows together in interleaved rounds
(:func:`usnet.profile.interleaved_latency_of`): a burst of load elsewhere on the machine then
slows every width alike rather than making one row an outlier, and rows whose runs still spread
too widely are flagged ``noisy``. :func:`measure_latency` times several spectra (a US-Net and its
baselines) in the same rounds. Quality comes from a
:class:`~usnet.spectrum.providers.MetricProvider`, so this module stays task-agnostic.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import profile
from ..calibration import calibrate, is_calibrated
from ..errors import UsageError
from ..logs import progress_bar
from ..nn import USBatchNorm2d, Width, WidthConfig, format_width, width_space
from ..nn import width as at_width
from .providers import MetricProvider
from .result import Kind, Spectrum, SpectrumRow

#: A row is ``noisy`` when a timing's interquartile range exceeds this share of its median.
NOISY_SPREAD = 0.25


def _config(width: Width) -> float | dict[str, float]:
    """A canonical width as the width functions and JSON take it (per group: a mapping)."""
    return dict(width) if isinstance(width, tuple) else width


def environment(device: torch.device) -> dict[str, Any]:
    """What timings depend on: device, its name, CPU threads, torch version, when."""
    return {
        "device": str(device),
        "device_name": profile.device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def placeholder_stats(model: nn.Module, width: WidthConfig) -> Iterator[None]:
    """Temporary BN statistics (mean 0, variance 1) for an uncalibrated ``width``, then removed.

    Timing does not depend on the statistics' values, so a model with no calibration data (e.g.
    random weights) can still be timed at every width; its quality cannot be measured.
    """
    key = width_space(model).resolve(width)[1]
    added = []
    with at_width(model, width):
        for bn in model.modules():
            if isinstance(bn, USBatchNorm2d) and bn.get_stats(key) is None:
                c = bn.span.active
                bn.set_stats(key, torch.zeros(c), torch.ones(c))
                added.append(bn)
    try:
        yield
    finally:
        for bn in added:
            bn.remove_stats(key)


def compute_spectrum(
    model: nn.Module,
    widths: Sequence[WidthConfig],
    metric_fn: MetricProvider | None = None,
    latency: bool = True,
    batch_size_throughput: int = 32,
    *,
    calibration: Iterable | None = None,
    num_samples: int | None = None,
    repeats: int = 30,
    warmup: int = 5,
    noisy_spread: float = NOISY_SPREAD,
    timer: Callable[[], float] = time.perf_counter,
    label: str = "US-Net",
    kind: Kind = "us",
) -> Spectrum:
    """Measure ``model`` at every width of ``widths`` (on the model's device).

    ``metric_fn`` measures quality (none: costs only). Uncalibrated widths are calibrated first
    from ``calibration`` (default: the provider's calibration data) with ``num_samples`` images;
    without data they are timed with placeholder statistics and get no metric. Batch-1 latency
    is the median of ``repeats`` interleaved rounds after ``warmup`` rounds; throughput uses
    ``batch_size_throughput`` and a third of the rounds. A row is flagged ``noisy`` when either
    timing's interquartile range exceeds ``noisy_spread`` times its median. ``timer`` (seconds)
    is for tests. The model's width is unchanged.
    """
    if not widths:
        raise UsageError("widths is empty: give at least one width")
    _check_timing(batch_size_throughput, noisy_spread)
    space = width_space(model)
    configs = [space.canonical(w) for w in widths]  # every width valid before any work
    # Plan key -> the widths selecting that network. Switches of a switchable-BN model are
    # different networks even with equal channel counts: each has its own BN.
    switchable = space.allowed is not None
    groups: dict[str, list[Width]] = {}
    for c in configs:
        key = space.resolve(_config(c))[1] + (f"@{format_width(c)}" if switchable else "")
        members = groups.setdefault(key, [])
        if c not in members:
            members.append(c)

    todo = [c for g in groups.values() if not is_calibrated(model, _config(g[0])) for c in g]
    if todo and calibration is None and metric_fn is not None and metric_fn.calibration:
        calibration = metric_fn.calibration()
    calibrated_here: list[str] = []
    if todo and calibration is not None:
        calibrate(
            model,
            calibration,
            [_config(c) for c in todo],
            num_samples or (metric_fn.num_samples if metric_fn else 2000),
            metric_fn.calibration_method if metric_fn else "exact",
        )
        calibrated_here = [format_width(c) for c in todo]

    device = next(model.parameters()).device
    slimmable = [i for i, g in enumerate(space.groups) if g.slimmable]
    full = sum(space.groups[i].full for i in slimmable)
    rows, chosen = [], []
    for members in groups.values():
        active, key = space.resolve(_config(members[0]))
        channels = sum(active[i] for i in slimmable)
        w = _config(_representative(members, channels / max(full, 1), space.width_max))
        chosen.append(w)
        rows.append(
            SpectrumRow(
                width=w,
                widths=[_config(c) for c in members],
                network=key,
                channels=channels,
                channels_full=full,
                macs=int(profile.macs(model, w)),
                params=int(profile.params(model, w)),
            )
        )
    if metric_fn is not None:
        for r, w in progress_bar(list(zip(rows, chosen, strict=True)), desc="spectrum", unit="net"):
            if is_calibrated(model, w):
                r.metrics = metric_fn(model, w)
    rows.sort(key=lambda r: (r.macs, r.channels))

    spectrum = Spectrum(
        rows=rows,
        model=str(getattr(model, "arch", type(model).__name__)),
        task=str(getattr(model, "task", "classification")),
        metrics=list(metric_fn.metrics) if metric_fn is not None else [],
        input_size=tuple(profile.input_shape(model)),
        dataset=metric_fn.dataset if metric_fn is not None else "",
        label=label,
        kind=kind,
        references=dict(metric_fn.references) if metric_fn is not None else {},
        calibrated_here=calibrated_here,
        env=environment(device),
    )
    if latency:
        measure_latency(
            [(model, spectrum)],
            batch_size_throughput,
            repeats=repeats,
            warmup=warmup,
            noisy_spread=noisy_spread,
            timer=timer,
        )
    return spectrum


def measure_latency(
    parts: Sequence[tuple[nn.Module, Spectrum]],
    batch_size_throughput: int = 32,
    *,
    repeats: int = 30,
    warmup: int = 5,
    noisy_spread: float = NOISY_SPREAD,
    timer: Callable[[], float] = time.perf_counter,
) -> None:
    """Fill the latency and throughput of every row of every ``(model, spectrum)`` part, all
    timed in the same interleaved rounds: a US-Net and its baselines then meet the same machine
    load, so a baseline is not slower only because it was timed later."""
    _check_timing(batch_size_throughput, noisy_spread)
    _time_rows(
        [(m, r) for m, spec in parts for r in spec.rows],
        batch_size_throughput,
        repeats,
        warmup,
        timer,
    )
    for _, spec in parts:
        for r in spec.rows:
            r.noisy = any(
                iqr is not None and (iqr[1] - iqr[0]) / mid > noisy_spread
                for iqr, mid in ((r.latency_iqr_ms, r.latency_ms), (r.throughput_iqr, r.throughput))
                if mid
            )
        spec.env.update(
            latency_batch_size=1,
            throughput_batch_size=batch_size_throughput,
            repeats=repeats,
            warmup=warmup,
            latency_order="interleaved rounds, shuffled"
            + _together(len({id(m) for m, _ in parts}) - 1),
            noisy_spread=noisy_spread,
        )


def _check_timing(batch_size_throughput: int, noisy_spread: float) -> None:
    """Timing options checked before any work (compute_spectrum checks before calibrating)."""
    if batch_size_throughput < 1:
        raise UsageError(f"batch_size_throughput must be >= 1, got {batch_size_throughput}")
    if not noisy_spread > 0:
        raise UsageError(f"noisy_spread must be > 0, got {noisy_spread}")


def _together(others: int) -> str:
    return f", with {others} other model{'s' if others > 1 else ''}" if others else ""


def _time_rows(
    rows: Sequence[tuple[nn.Module, SpectrumRow]],
    batch_size: int,
    repeats: int,
    warmup: int,
    timer: Callable[[], float],
) -> None:
    """Fill the rows' latency and throughput, every row timed in the same interleaved rounds;
    uncalibrated widths run on placeholder statistics meanwhile."""
    targets = [(m, r.width) for m, r in rows]
    with contextlib.ExitStack() as stack:
        for m, w in targets:
            if not is_calibrated(m, w):
                stack.enter_context(placeholder_stats(m, w))
        one = profile.interleaved_latency_of(
            targets, 1, repeats, warmup, timer=timer
        )
        many = profile.interleaved_latency_of(
            targets,
            batch_size,
            max(3, repeats // 3),
            max(1, warmup // 2),
            timer=timer,
        )
    per_s = batch_size * 1000.0
    for (_, r), a, b in zip(rows, one, many, strict=True):
        r.latency_ms, r.latency_iqr_ms = a.median_ms, (a.q1_ms, a.q3_ms)
        r.throughput, r.throughput_iqr = per_s / b.median_ms, (per_s / b.q3_ms, per_s / b.q1_ms)


def _representative(members: list[Width], ratio: float, width_max: float) -> Width:
    """The width that names a network shared by ``members``: the uniform width closest to the
    network's real fraction of channels (e.g. 1.0 rather than 0.85 for the full network)."""
    uniform = [w for w in members if not isinstance(w, tuple)]
    if not uniform:
        return members[0]
    return min(uniform, key=lambda w: abs(w / width_max - ratio))


# -- baselines ------------------------------------------------------------------------------
def _training(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``train:`` section of a checkpoint's recorded config (empty where there is none)."""
    config = meta.get("config")
    train = config.get("train") if isinstance(config, Mapping) else None
    return train if isinstance(train, Mapping) else {}


def trained_width(meta: Mapping[str, Any]) -> WidthConfig | None:
    """The one width an individually trained checkpoint (``train.sampling: fixed``) was trained
    at, as its config gives it (a number or ``{group: width}``); None for any other checkpoint."""
    train = _training(meta)
    widths = train.get("widths") or []
    return widths[0] if train.get("sampling") == "fixed" and len(widths) == 1 else None


def check_trains_range(meta: Mapping[str, Any], command: str) -> None:
    """Refuse ``command`` (spectrum, select, search) on an individually trained checkpoint
    (``train.sampling: fixed``): every width but its one was never trained, so measuring or
    ranking them would be silently meaningless; it is compared as a ``--baseline`` instead."""
    train = _training(meta)
    if train.get("sampling") == "fixed":
        raise UsageError(
            f"this checkpoint was trained at one width only (train.sampling 'fixed', "
            f"train.widths {train.get('widths')!r}); its other widths are untrained, so it "
            f"takes no {command}: compare it with "
            "`usnet spectrum US_CKPT --baseline CKPT`"
        )


def baseline_points(
    model: nn.Module, meta: Mapping[str, Any], grid: Sequence[float]
) -> tuple[Kind, str, Sequence[WidthConfig]]:
    """How a baseline checkpoint is compared with a US-Net: ``(kind, label, widths)``.

    A switchable-BN model (``switches``) is measured at each switch; an individually trained
    model (training config ``train.sampling == "fixed"``) at its one trained width (a number,
    or a per-group ``{group: width}``: the channel configuration it was trained as); another
    US-Net along ``grid`` (the widths of it inside its range).
    """
    switches = getattr(model, "switches", None) or dict(getattr(model, "arch_kwargs", {})).get(
        "switches"
    )
    if switches:
        return "switches", f"{len(switches)}-switch S-Net", [float(w) for w in switches]
    train = _training(meta)
    if train.get("sampling") == "fixed":
        widths = train.get("widths") or []
        if len(widths) != 1:
            raise UsageError(
                f"a 'fixed' baseline needs exactly one width in train.widths, got {widths!r}"
            )
        (only,) = widths
        return "individual", "individually trained", [
            dict(only) if isinstance(only, Mapping) else float(only)
        ]
    space = width_space(model)
    inside = [w for w in grid if space.width_min - 1e-9 <= w <= space.width_max + 1e-9]
    if not inside:
        raise UsageError(
            f"no width of the grid lies in the baseline's range [{space.width_min}, "
            f"{space.width_max}]"
        )
    return "us", "US-Net baseline", inside
