"""The spectrum of a US model: cost and quality of every network in a width grid (design.md).

One trained US-Net stands for a whole family of networks; :func:`compute_spectrum` makes that
family visible. Per width it records the active channels, MACs, parameters, latency on this
device (batch 1, and throughput at a larger batch) and the task's quality metrics. Widths that
round to the same network (same plan key) are one row that lists every width sharing it.

Quality comes from a :class:`~usnet.metric_providers.MetricProvider`, so this module stays
task-agnostic. The text forms live in :mod:`usnet.spectrum_tables`; choosing a width under a
budget in :mod:`usnet.selection`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import profile
from .calibration import calibrate, is_calibrated
from .metric_providers import Metric, MetricProvider
from .nn import USBatchNorm2d, Width, WidthConfig, format_width, width_space
from .nn import width as at_width
from .spectrum_tables import show_width, to_markdown, write_csv

FILES = ("spectrum.csv", "spectrum.json", "spectrum.md")
SPECTRUM_FORMAT = "usnet-spectrum"
SPECTRUM_VERSION = 1


# -- the spectrum ---------------------------------------------------------------------------
@dataclass
class SpectrumRow:
    """One network of the spectrum: every grid width in ``widths`` selects it."""

    width: float | dict[str, float]
    widths: list[float | dict[str, float]]
    network: str
    channels: int
    channels_full: int
    macs: int
    params: int
    latency_ms: float | None = None
    throughput: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return show_width(self.width)

    @property
    def shared(self) -> str:
        """The widths that select this network, compactly (``0.35..0.55 (9)``); '' if only one."""
        if len(self.widths) < 2:
            return ""
        if all(isinstance(w, (int, float)) for w in self.widths):
            lo, hi = min(self.widths), max(self.widths)  # type: ignore[type-var]
            return f"{lo:g}..{hi:g} ({len(self.widths)})"
        return " ".join(show_width(w) for w in self.widths)


@dataclass
class Spectrum:
    """A spectrum: rows sorted by MACs, the metrics measured and what the timings depend on."""

    rows: list[SpectrumRow]
    model: str
    task: str
    metrics: list[Metric]
    input_size: tuple[int, ...]
    env: dict[str, Any]
    dataset: str = ""
    label: str = "US-Net"
    kind: str = "us"  # "us", "individual" (fixed width), "switches" (S-Net)
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    calibrated_here: list[str] = field(default_factory=list)
    baselines: list[Spectrum] = field(default_factory=list)

    @property
    def primary(self) -> Metric | None:
        return next((m for m in self.metrics if m.higher_is_better is not None), None)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise ValueError(
            f"metric {name!r} is not in this spectrum; measured: {[m.name for m in self.metrics]}"
        )

    @property
    def has_latency(self) -> bool:
        return any(r.latency_ms is not None for r in self.rows)

    def widths(self) -> list[float | dict[str, float]]:
        return [w for r in self.rows for w in r.widths]

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPECTRUM_FORMAT,
            "format_version": SPECTRUM_VERSION,
            "model": self.model,
            "task": self.task,
            "dataset": self.dataset,
            "label": self.label,
            "kind": self.kind,
            "input_size": list(self.input_size),
            "env": self.env,
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
            "references": self.references,
            "source": self.source,
            "calibrated_here": self.calibrated_here,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "baselines": [b.to_dict() for b in self.baselines],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "spectrum") -> Spectrum:
        if doc.get("format") != SPECTRUM_FORMAT or doc.get("format_version", 0) > SPECTRUM_VERSION:
            raise ValueError(
                f"{where}: not a usnet spectrum (format {doc.get('format')!r} version "
                f"{doc.get('format_version')!r}; expected {SPECTRUM_FORMAT!r} up to version "
                f"{SPECTRUM_VERSION})"
            )
        try:
            return cls(
                rows=[SpectrumRow(**r) for r in doc["rows"]],
                model=doc["model"],
                task=doc["task"],
                metrics=[Metric(**m) for m in doc["metrics"]],
                input_size=tuple(doc["input_size"]),
                env=dict(doc["env"]),
                dataset=doc.get("dataset", ""),
                label=doc.get("label", "US-Net"),
                kind=doc.get("kind", "us"),
                references=dict(doc.get("references", {})),
                source=dict(doc.get("source", {})),
                calibrated_here=list(doc.get("calibrated_here", [])),
                baselines=[cls.from_dict(b, where) for b in doc.get("baselines", [])],
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: malformed spectrum ({type(e).__name__}: {e})") from None

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write ``spectrum.csv``, ``spectrum.json`` and ``spectrum.md`` into folder ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / name for name in FILES]
        write_csv(self, paths[0])
        paths[1].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        paths[2].write_text(to_markdown(self))
        return paths


def load_spectrum(path: str | os.PathLike) -> Spectrum:
    """Read a ``spectrum.json`` (or the one in folder ``path``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "spectrum.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such spectrum file")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt spectrum JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return Spectrum.from_dict(doc, str(path))


def _width_json(config: Width) -> float | dict[str, float]:
    return dict(config) if isinstance(config, tuple) else config


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
                c = bn.ref.active
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
    progress: bool = True,
    label: str = "US-Net",
    kind: str = "us",
) -> Spectrum:
    """Measure ``model`` at every width of ``widths`` (on the model's device).

    ``metric_fn`` measures quality (none: costs only). Uncalibrated widths are calibrated first
    from ``calibration`` (default: the provider's calibration data) with ``num_samples`` images;
    without data they are timed with placeholder statistics and get no metric. Batch-1 latency
    is the median of ``repeats`` runs after ``warmup``; throughput uses
    ``batch_size_throughput`` and a third of the repeats. The model's width is unchanged.
    """
    if not widths:
        raise ValueError("widths is empty: give at least one width")
    if batch_size_throughput < 1:
        raise ValueError(f"batch_size_throughput must be >= 1, got {batch_size_throughput}")
    space = width_space(model)
    configs = [space.canonical(w) for w in widths]  # every width valid before any work
    # Plan key -> the widths selecting that network. Switches of a switchable-BN model are
    # different networks even with equal channel counts: each has its own BN.
    switchable = space.allowed is not None
    groups: dict[str, list[Width]] = {}
    for c in configs:
        key = space.resolve(c)[1] + (f"@{format_width(c)}" if switchable else "")
        members = groups.setdefault(key, [])
        if c not in members:
            members.append(c)

    todo = [c for g in groups.values() if not is_calibrated(model, g[0]) for c in g]
    if todo and calibration is None and metric_fn is not None and metric_fn.calibration:
        calibration = metric_fn.calibration()
    calibrated_here: list[str] = []
    if todo and calibration is not None:
        calibrate(
            model,
            calibration,
            todo,
            num_samples or (metric_fn.num_samples if metric_fn else 2000),
            metric_fn.calibration_method if metric_fn else "exact",
            progress=progress,
        )
        calibrated_here = [format_width(c) for c in todo]

    device = next(model.parameters()).device
    slimmable = [i for i, g in enumerate(space.groups) if g.slimmable]
    full = sum(space.groups[i].full for i in slimmable)
    rows = []
    for members in tqdm(groups.values(), desc="spectrum", unit="net", disable=not progress):
        active, key = space.resolve(members[0])
        channels = sum(active[i] for i in slimmable)
        w = _representative(members, channels / max(full, 1), space.width_max)
        row = SpectrumRow(
            width=_width_json(w),
            widths=[_width_json(c) for c in members],
            network=key,
            channels=channels,
            channels_full=full,
            macs=int(profile.macs(model, w)),
            params=int(profile.params(model, w)),
        )
        ready = is_calibrated(model, w)
        if latency:
            with contextlib.nullcontext() if ready else placeholder_stats(model, w):
                one = profile.latency(model, w, 1, repeats, warmup)
                many = profile.latency(
                    model, w, batch_size_throughput, max(3, repeats // 3), max(1, warmup // 2)
                )
            row.latency_ms, row.throughput = one["median_ms"], many["images_per_s"]
        if metric_fn is not None and ready:
            row.metrics = metric_fn(model, w)
        rows.append(row)
    rows.sort(key=lambda r: (r.macs, r.channels))

    env = environment(device)
    if latency:
        env.update(
            latency_batch_size=1,
            throughput_batch_size=batch_size_throughput,
            repeats=repeats,
            warmup=warmup,
        )
    return Spectrum(
        rows=rows,
        model=str(getattr(model, "arch", type(model).__name__)),
        task=str(getattr(model, "task", "classification")),
        metrics=list(metric_fn.metrics) if metric_fn is not None else [],
        input_size=tuple(profile.input_shape(model)),
        env=env,
        dataset=metric_fn.dataset if metric_fn is not None else "",
        label=label,
        kind=kind,
        references=dict(metric_fn.references) if metric_fn is not None else {},
        calibrated_here=calibrated_here,
    )


def _representative(members: list[Width], ratio: float, width_max: float) -> Width:
    """The width that names a network shared by ``members``: the uniform width closest to the
    network's real fraction of channels (e.g. 1.0 rather than 0.85 for the full network)."""
    uniform = [w for w in members if not isinstance(w, tuple)]
    if not uniform:
        return members[0]
    return min(uniform, key=lambda w: abs(w / width_max - ratio))


# -- baselines ------------------------------------------------------------------------------
def baseline_points(
    model: nn.Module, meta: Mapping[str, Any], grid: Sequence[float]
) -> tuple[str, str, list[float]]:
    """How a baseline checkpoint is compared with a US-Net: ``(kind, label, widths)``.

    A switchable-BN model (``switches``) is measured at each switch; an individually trained
    model (training config ``train.sampling == "fixed"``) at its one trained width; another
    US-Net along ``grid`` (the widths of it inside its range).
    """
    switches = getattr(model, "switches", None) or dict(getattr(model, "arch_kwargs", {})).get(
        "switches"
    )
    if switches:
        return "switches", f"{len(switches)}-switch S-Net", [float(w) for w in switches]
    config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    train = config.get("train") if isinstance(config.get("train"), Mapping) else {}
    if train.get("sampling") == "fixed":
        widths = train.get("widths") or []
        if len(widths) != 1:
            raise ValueError(
                f"a 'fixed' baseline needs exactly one width in train.widths, got {widths!r}"
            )
        return "individual", "individually trained", [float(widths[0])]
    space = width_space(model)
    inside = [w for w in grid if space.width_min - 1e-9 <= w <= space.width_max + 1e-9]
    if not inside:
        raise ValueError(
            f"no width of the grid lies in the baseline's range [{space.width_min}, "
            f"{space.width_max}]"
        )
    return "us", "US-Net baseline", inside
