"""The spectrum of a US model: cost and quality of every network in a width grid (design.md).

One trained US-Net stands for a whole family of networks; :func:`compute_spectrum` makes that
family visible. Per width it records the active channels, MACs, parameters, latency on this
device (batch 1, and throughput at a larger batch) and the task's quality metrics. Widths that
round to the same network (same plan key) are one row that lists every width sharing it.

Quality comes from a :class:`MetricProvider`, so this module stays task-agnostic: a provider
names its metrics (and whether higher is better), evaluates a model at a width and may offer
BN calibration data. :func:`metric_provider` builds one from a checkpoint's training config,
dispatching on ``model.task`` through :func:`register_metric_provider`.

:func:`select` picks a width from a spectrum under a budget (MACs, latency, a metric floor).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import profile
from .calibration import calibrate, is_calibrated
from .nn import USBatchNorm2d, Width, WidthConfig, format_width, width_space
from .nn import width as at_width

FILES = ("spectrum.csv", "spectrum.json", "spectrum.md")
SPECTRUM_FORMAT = "usnet-spectrum"
SPECTRUM_VERSION = 1


# -- metrics --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One quality measure of a task.

    ``higher_is_better`` ranks widths (``None``: descriptive only, e.g. a standard deviation);
    ``fraction`` values lie in [0, 1] and are shown as percentages; ``unit`` labels axes.
    """

    name: str
    label: str
    higher_is_better: bool | None = True
    fraction: bool = False
    unit: str = ""

    def show(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * value:.2f}" if self.fraction else f"{value:.4g}"

    @property
    def heading(self) -> str:
        """Column/axis title with its unit, e.g. ``top-1 accuracy (%)``."""
        unit = "%" if self.fraction else self.unit
        return f"{self.label} ({unit})" if unit else self.label

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better is not False else a < b

    def reaches(self, value: float, target: float) -> bool:
        """Whether ``value`` meets ``target`` (at least for higher-is-better, at most otherwise)."""
        return value >= target if self.higher_is_better is not False else value <= target


@dataclass
class MetricProvider:
    """How one task's quality is measured: ``provider(model, width) -> {metric: value}``.

    ``metrics`` declares the names returned (the first ranked one is the *primary* metric);
    ``calibration`` returns BN calibration inputs (a loader of ``x`` or ``(x, y)`` batches), or
    is ``None`` when no data is known; ``references`` are fixed points drawn with the spectrum
    (e.g. bicubic upscaling for super-resolution).
    """

    task: str
    metrics: tuple[Metric, ...]
    evaluate: Callable[[nn.Module, WidthConfig], Mapping[str, float]]
    calibration: Callable[[], Iterable] | None = None
    num_samples: int = 2000
    calibration_method: str = "exact"
    dataset: str = ""
    references: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not any(m.higher_is_better is not None for m in self.metrics):
            raise ValueError(f"metric provider for {self.task!r} declares no ranked metric")

    def __call__(self, model: nn.Module, width: WidthConfig) -> dict[str, float]:
        got = dict(self.evaluate(model, width))
        missing = [m.name for m in self.metrics if m.name not in got]
        if missing:
            raise ValueError(f"{self.task} metrics {missing} missing from evaluate's result {got}")
        return {k: float(v) for k, v in got.items() if isinstance(v, (int, float))}

    @property
    def primary(self) -> Metric:
        return next(m for m in self.metrics if m.higher_is_better is not None)


@dataclass(frozen=True)
class ProviderOptions:
    """What a user may change about a checkpoint's evaluation data."""

    data_root: str | None = None
    max_eval_samples: int | None = None
    num_samples: int | None = None  # calibration images; None: the training config's


#: ``factory(model, config, options) -> MetricProvider``; ``config`` is the checkpoint's
#: training config as a dict (meta key ``"config"``).
ProviderFactory = Callable[[nn.Module, Mapping[str, Any], ProviderOptions], MetricProvider]
_PROVIDERS: dict[str, ProviderFactory] = {}


def register_metric_provider(task: str) -> Callable[[ProviderFactory], ProviderFactory]:
    """Register how models of ``task`` (``model.task``) are evaluated from their training config."""

    def deco(fn: ProviderFactory) -> ProviderFactory:
        _PROVIDERS[task] = fn
        return fn

    return deco


def metric_provider(
    model: nn.Module, meta: Mapping[str, Any], options: ProviderOptions | None = None
) -> MetricProvider:
    """The metric provider for ``model`` from its checkpoint metadata (training config inside)."""
    task = getattr(model, "task", None) or meta.get("task") or "classification"
    if task not in _PROVIDERS:
        raise ValueError(f"no metric provider for task {task!r}; known: {sorted(_PROVIDERS)}")
    config = meta.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(
            "the checkpoint's metadata has no training config (meta key 'config'), so its "
            "evaluation data is unknown; measure costs only (--no-metric)"
        )
    options = options or ProviderOptions()
    if options.max_eval_samples is not None and options.max_eval_samples < 1:
        raise ValueError(f"max_eval_samples must be >= 1, got {options.max_eval_samples}")
    return _PROVIDERS[task](model, config, options)


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"checkpoint config {name!r} must be a mapping, got {value!r}")
    return value


@register_metric_provider("classification")
def _classification(
    model: nn.Module, config: Mapping[str, Any], options: ProviderOptions
) -> MetricProvider:
    from .data import calibration_loader, calibration_subset, create_dataset, create_loader
    from .training.evaluate import evaluate

    data, cal = _section(config, "data"), _section(config, "calibrate")
    name = data.get("name")
    if not name:
        raise ValueError("checkpoint config has no data.name: the validation set is unknown")
    root = options.data_root or data.get("root")
    kw: dict[str, Any] = {}
    if name in ("imagefolder", "imagenet"):
        kw["input_size"] = int(model.input_size[-1])
    val = create_dataset(name, root, "val", augment=False, **kw)
    if options.max_eval_samples is not None and options.max_eval_samples < len(val):
        val = calibration_subset(val, options.max_eval_samples, seed=0)  # a seeded random subset
    batch = int(data.get("val_batch_size", 500))
    workers = int(data.get("num_workers", 0))
    loader = create_loader(val, batch, shuffle=False, num_workers=workers)
    num_samples = options.num_samples or int(cal.get("num_samples", 2000))

    def calibration() -> Iterable:
        return calibration_loader(
            name, root, num_samples, int(cal.get("batch_size", 200)), num_workers=workers, **kw
        )

    return MetricProvider(
        task="classification",
        metrics=(
            Metric("top1", "top-1 accuracy", True, fraction=True),
            Metric("top5", "top-5 accuracy", True, fraction=True),
            Metric("loss", "cross-entropy", False),
        ),
        evaluate=lambda m, w: evaluate(m, loader, w),
        calibration=calibration,
        num_samples=num_samples,
        calibration_method=str(cal.get("method", "exact")),
        dataset=str(name),
    )


@register_metric_provider("sr")
def _super_resolution(
    model: nn.Module, config: Mapping[str, Any], options: ProviderOptions
) -> MetricProvider:
    from torch.utils.data import Subset

    from .config import build_config
    from .data.sr import EMBEDDED_TEST, SRTestSet, load_pairs
    from .training.sr import SRConfig, bicubic_metrics, evaluate

    cfg = build_config(SRConfig, config, source="checkpoint config")
    test_dir = options.data_root or cfg.data.test_dir
    test: Any = SRTestSet(load_pairs(test_dir, EMBEDDED_TEST, cfg.scale))
    if options.max_eval_samples is not None and options.max_eval_samples < len(test):
        test = Subset(test, range(options.max_eval_samples))
    return MetricProvider(
        task="sr",
        metrics=(
            Metric("psnr", "Y-channel PSNR", True, unit="dB"),
            Metric("ssim", "Y-channel SSIM", True),
        ),
        evaluate=lambda m, w: evaluate(m, w, test),
        dataset=test_dir or "embedded test images",
        references={"bicubic": bicubic_metrics(test, cfg.scale)},
    )


@register_metric_provider("rl")
def _reinforcement_learning(
    model: nn.Module, config: Mapping[str, Any], options: ProviderOptions
) -> MetricProvider:
    from .config import build_config
    from .rl import RLConfig, evaluate

    cfg = build_config(RLConfig, config, source="checkpoint config")
    episodes = options.max_eval_samples or cfg.eval.episodes
    return MetricProvider(
        task="rl",
        metrics=(
            Metric("return_mean", "mean episodic return", True),
            Metric("return_std", "return std", None),
        ),
        evaluate=lambda m, w: evaluate(m, w, cfg.env.id, episodes, cfg.eval.seed, cfg.eval.greedy),
        dataset=cfg.env.id,
    )


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
        return _show_width(self.width)

    @property
    def shared(self) -> str:
        """The widths that select this network, compactly (``0.35..0.55 (9)``); '' if only one."""
        if len(self.widths) < 2:
            return ""
        if all(isinstance(w, (int, float)) for w in self.widths):
            lo, hi = min(self.widths), max(self.widths)  # type: ignore[type-var]
            return f"{lo:g}..{hi:g} ({len(self.widths)})"
        return " ".join(_show_width(w) for w in self.widths)


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
        _write_csv(self, paths[0])
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


def _show_width(w: float | Mapping[str, float]) -> str:
    if isinstance(w, Mapping):
        return format_width(tuple(w.items()))
    return f"{w:g}"


def _width_json(config: Width) -> float | dict[str, float]:
    return dict(config) if isinstance(config, tuple) else config


def environment(device: torch.device) -> dict[str, Any]:
    """What timings depend on: device, its name, CPU threads, torch version, when."""
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def threads(env: Mapping[str, Any]) -> str:
    """``1 thread`` / ``2 threads`` from an environment record."""
    n = env.get("threads")
    return f"{n} thread" + ("" if n == 1 else "s")


def _cpu_name() -> str:
    name = getattr(profile, "_cpu_name", None)  # TODO: profile could export device_name()
    return name() if name is not None else (platform.processor() or platform.machine())


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


# -- tables ---------------------------------------------------------------------------------
def _columns(spectrum: Spectrum) -> list[tuple[str, Callable[[SpectrumRow], str]]]:
    image = len(spectrum.input_size) == 3 and spectrum.input_size[-1] > 1
    per_s = "img/s" if image else "inputs/s"
    cols: list[tuple[str, Callable[[SpectrumRow], str]]] = [
        ("width", lambda r: r.label),
        ("widths sharing it", lambda r: r.shared or "-"),
        ("channels", lambda r: f"{r.channels} ({100 * r.channels / max(r.channels_full, 1):.0f}%)"),
        ("MACs (M)", lambda r: f"{r.macs / 1e6:.4g}"),
        ("params (M)", lambda r: f"{r.params / 1e6:.4g}"),
    ]
    if spectrum.has_latency:
        bs = spectrum.env.get("throughput_batch_size", "")
        cols += [
            ("latency (ms)", lambda r: "-" if r.latency_ms is None else f"{r.latency_ms:.2f}"),
            (f"{per_s} @{bs}", lambda r: "-" if r.throughput is None else f"{r.throughput:.0f}"),
        ]
    for m in spectrum.metrics:
        cols.append((m.heading, lambda r, m=m: m.show(r.metrics.get(m.name))))
    return cols


def format_table(spectrum: Spectrum) -> str:
    """The spectrum as an aligned text table (for the terminal)."""
    cols = _columns(spectrum)
    cells = [[name for name, _ in cols]] + [[f(r) for _, f in cols] for r in spectrum.rows]
    sizes = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = []
    for j, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(s) if i < 2 else c.rjust(s)
                for i, (c, s) in enumerate(zip(row, sizes, strict=True))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * s for s in sizes))
    return "\n".join(lines)


def describe(spectrum: Spectrum) -> str:
    """One line: model, data, device and what the timings used."""
    env = spectrum.env
    parts = [spectrum.model]
    if spectrum.dataset:
        parts.append(f"on {spectrum.dataset}")
    parts.append(
        f"| {len(spectrum.widths())} widths, {len(spectrum.rows)} distinct networks | input "
        f"{'x'.join(map(str, spectrum.input_size))}"
    )
    parts.append(
        f"| {env.get('device')} ({env.get('device_name')}), {threads(env)}, "
        f"torch {env.get('torch')}"
    )
    return " ".join(parts)


def to_markdown(spectrum: Spectrum) -> str:
    """The spectrum as a Markdown document: what was measured, how, and the table."""
    cols = _columns(spectrum)
    env = spectrum.env
    lines = [
        f"# Spectrum of {spectrum.model}" + (f" on {spectrum.dataset}" if spectrum.dataset else ""),
        "",
    ]
    lines.append(
        f"- device: {env.get('device')} ({env.get('device_name')}), {threads(env)}, "
        f"torch {env.get('torch')}, python {env.get('python')}"
    )
    lines.append(f"- measured: {env.get('date')}")
    lines.append(f"- input: {'x'.join(map(str, spectrum.input_size))}; MACs per input")
    if spectrum.has_latency:
        lines.append(
            f"- latency: median of {env.get('repeats')} runs after {env.get('warmup')} warm-up "
            f"runs at batch 1; throughput at batch {env.get('throughput_batch_size')}"
        )
    if spectrum.source.get("checkpoint"):
        lines.append(f"- checkpoint: `{spectrum.source['checkpoint']}`")
    if spectrum.calibrated_here:
        lines.append(f"- calibrated for this spectrum: {len(spectrum.calibrated_here)} widths")
    for name, values in spectrum.references.items():
        shown = ", ".join(
            f"{spectrum.metric(k).heading} {spectrum.metric(k).show(v)}"
            for k, v in values.items()
            if any(m.name == k for m in spectrum.metrics)
        )
        lines.append(f"- reference {name}: {shown}")
    lines += [
        "",
        "| " + " | ".join(n for n, _ in cols) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|",
    ]
    lines += ["| " + " | ".join(f(r) for _, f in cols) + " |" for r in spectrum.rows]
    for b in spectrum.baselines:
        lines += [
            "",
            f"## Baseline: {b.label}"
            + (f" (`{b.source.get('checkpoint')}`)" if b.source.get("checkpoint") else ""),
            "",
        ]
        bcols = _columns(b)
        lines += [
            "| " + " | ".join(n for n, _ in bcols) + " |",
            "|" + "|".join("---" if i < 2 else "---:" for i in range(len(bcols))) + "|",
        ]
        lines += ["| " + " | ".join(f(r) for _, f in bcols) + " |" for r in b.rows]
    return "\n".join(lines) + "\n"


def _write_csv(spectrum: Spectrum, path: Path) -> None:
    names = [m.name for m in spectrum.metrics]
    head = [
        "width",
        "widths",
        "network",
        "channels",
        "channels_full",
        "macs",
        "params",
        "latency_ms",
        "throughput",
        *names,
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        for r in spectrum.rows:
            writer.writerow(
                [
                    r.label,
                    " ".join(_show_width(w) for w in r.widths),
                    r.network,
                    r.channels,
                    r.channels_full,
                    r.macs,
                    r.params,
                    "" if r.latency_ms is None else f"{r.latency_ms:.4f}",
                    "" if r.throughput is None else f"{r.throughput:.2f}",
                    *("" if r.metrics.get(n) is None else r.metrics[n] for n in names),
                ]
            )


# -- choosing a width -----------------------------------------------------------------------
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_count(text: str | float, what: str = "budget") -> float:
    """``150M`` -> 1.5e8, ``1.2G``, ``5e8``, ``300k``: a count with an optional SI suffix."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", text)
        if m is None:
            raise ValueError(
                f"{what} {text!r} must be a number with an optional suffix k, M, G or T "
                f"(e.g. 150M, 1.2G, 5e8)"
            )
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what} {text!r} must be positive")
    return value


def parse_latency_ms(text: str | float) -> float:
    """``5``, ``5ms``, ``500us``, ``0.005s``: a latency budget in milliseconds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|s)?\s*", text)
        if m is None:
            raise ValueError(f"latency budget {text!r} must be milliseconds, e.g. 5 or 5ms")
        value = float(m.group(1)) * {None: 1.0, "ms": 1.0, "us": 1e-3, "s": 1e3}[m.group(2)]
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"latency budget {text!r} must be positive")
    return value


def parse_target(text: str, spectrum: Spectrum | None = None) -> tuple[str, float]:
    """``top1=0.9`` or ``top1=90%`` -> (``top1``, 0.9): a metric floor (ceiling if lower is better)."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ValueError(f"metric target {text!r} must be NAME=VALUE, e.g. top1=0.9")
    percent = value.endswith("%")
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        raise ValueError(f"metric target {text!r}: {value!r} is not a number") from None
    if percent:
        number /= 100
    if spectrum is not None:
        metric = spectrum.metric(name)
        if metric.higher_is_better is None:
            raise ValueError(f"metric {name!r} is descriptive and cannot be a target")
        if metric.fraction and not 0 <= number <= 1:
            raise ValueError(
                f"{name} is a fraction in [0, 1], got {value}; did you mean {number / 100:g} "
                f"(or {number:g}%)?"
            )
    return name, number


@dataclass
class Selection:
    """The chosen network, how many fitted, and why it was chosen."""

    row: SpectrumRow
    fitting: int
    reason: str


def select(
    spectrum: Spectrum,
    max_macs: float | None = None,
    max_latency_ms: float | None = None,
    target: tuple[str, float] | None = None,
) -> Selection:
    """The best width under the budget.

    With a metric ``target`` (name, value): the cheapest network (fewest MACs, then lowest
    latency) reaching it. Otherwise the network with the best primary metric within the MACs /
    latency budget (ties: the cheaper); a spectrum without metrics gives the widest that fits.
    Budgets combine. No fit raises ``ValueError`` naming the cheapest (or best) available.
    """
    if max_macs is None and max_latency_ms is None and target is None:
        raise ValueError("give a budget: max_macs, max_latency_ms or a metric target")
    if max_latency_ms is not None and not spectrum.has_latency:
        raise ValueError("this spectrum has no latency: measure it to select by latency")
    metric = spectrum.metric(target[0]) if target is not None else spectrum.primary
    rows = [r for r in spectrum.rows if r.latency_ms is not None or max_latency_ms is None]

    def cost(r: SpectrumRow) -> tuple:
        return (r.macs, r.latency_ms if r.latency_ms is not None else 0.0)

    def summary(r: SpectrumRow) -> str:
        parts = [f"width {r.label}", f"{r.macs / 1e6:.3g}M MACs"]
        if r.latency_ms is not None:
            parts.append(f"{r.latency_ms:.2f} ms")
        if metric is not None and metric.name in r.metrics:
            parts.append(
                f"{metric.name} {metric.show(r.metrics[metric.name])}"
                + ("%" if metric.fraction else "")
            )
        return ", ".join(parts)

    limits = []
    if max_macs is not None:
        limits.append(f"MACs <= {max_macs / 1e6:g}M")
    if max_latency_ms is not None:
        limits.append(f"latency <= {max_latency_ms:g} ms")
    budget = " and ".join(limits)
    fits = [
        r
        for r in rows
        if (max_macs is None or r.macs <= max_macs)
        and (max_latency_ms is None or r.latency_ms <= max_latency_ms)
    ]
    if not fits:
        by_latency = max_latency_ms is not None and max_macs is None
        cheapest = min(rows, key=lambda r: (r.latency_ms, r.macs) if by_latency else cost(r))
        raise ValueError(f"no width fits {budget}: the cheapest available is {summary(cheapest)}")

    def best(candidates: list[SpectrumRow]) -> SpectrumRow:
        """Best by ``metric``; equal values go to the cheaper network."""
        assert metric is not None
        choice = candidates[0]
        for r in candidates[1:]:
            v, b = r.metrics[metric.name], choice.metrics[metric.name]
            if metric.better(v, b) or (v == b and cost(r) < cost(choice)):
                choice = r
        return choice

    within = f" within {budget}" if budget else ""
    if target is not None:
        assert metric is not None
        name, value = target
        scored = [r for r in fits if name in r.metrics]
        if not scored:
            raise ValueError(f"no width{within} has a measured {name}")
        sign = ">=" if metric.higher_is_better is not False else "<="
        goal = f"{name} {sign} {metric.show(value)}" + ("%" if metric.fraction else "")
        good = [r for r in scored if metric.reaches(r.metrics[name], value)]
        if not good:
            raise ValueError(
                f"no width reaches {goal}{within}: the best is {summary(best(scored))}"
            )
        choice = min(good, key=cost)
        why = f"the cheapest of {_networks(len(good))} reaching {goal}{within}"
        return Selection(choice, len(good), f"{summary(choice)}: {why}")
    scored = [r for r in fits if metric is not None and metric.name in r.metrics]
    if not scored:
        choice = max(fits, key=cost)
        why = f"the widest of {_networks(len(fits))}{within} (no quality metric measured)"
        return Selection(choice, len(fits), f"{summary(choice)}: {why}")
    choice = best(scored)
    assert metric is not None
    why = f"the best {metric.label} of {_networks(len(scored))}{within}"
    return Selection(choice, len(fits), f"{summary(choice)}: {why}")


def _networks(n: int) -> str:
    return f"{n} network" + ("" if n == 1 else "s")


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
