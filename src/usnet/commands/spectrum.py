"""``usnet spectrum CKPT``: cost and quality of every width, as a table, files and a plot."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint
from ..errors import UsageError
from ..nn import WidthConfig, parse_widths, width_space
from ..spectrum import (
    MetricProvider,
    ProviderOptions,
    Spectrum,
    baseline_points,
    check_trains_range,
    compute_spectrum,
    describe,
    format_table,
    measure_latency,
    save_spectrum,
)
from ..spectrum.result import Kind
from ..tasks import metric_provider
from ._spectrum_args import (
    add_checkpoint_command,
    add_measure_options,
    check_batch_size,
    searched,
    setup,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_checkpoint_command(
        subparsers,
        "spectrum",
        help="MACs, params, latency and accuracy of a checkpoint across its widths",
        description="Measure a checkpoint at a grid of widths: active channels, MACs, params, "
        "latency on this device and the task metric on the validation data of its training "
        "config. Uncalibrated widths are calibrated first and their statistics saved into the "
        "checkpoint. Writes spectrum.csv/.json/.md and spectrum.png.",
    )
    add_measure_options(p)
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: CKPT)")
    p.add_argument(
        "--baseline",
        type=Path,
        nargs="+",
        default=[],
        metavar="CKPT",
        help="checkpoints to compare: individually trained (train.sampling fixed: its width), "
        "switchable (each switch) or another US-Net (the grid)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument(
        "--no-save-stats",
        action="store_true",
        help="do not write newly calibrated statistics back into the checkpoint",
    )
    return p


def load(
    path: Path, device: torch.device, trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Model, metadata and the whole ``usnet.json`` of a checkpoint."""
    info = checkpoint.read_info(path)
    model = checkpoint.load(path, map_location=device, trust_code=trust_code)
    return model, info["meta"], info


def grid(model: nn.Module, text: str | None) -> list[float]:
    """The widths of ``--widths``, or the model's default grid; each checked against the model."""
    space = width_space(model)
    if text is None:
        if space.allowed is not None:
            widths = list(space.allowed)
        else:
            widths = parse_widths(f"{space.width_min}:{space.width_max}:0.025")
            if widths[-1] < space.width_max - 1e-9:
                widths.append(space.width_max)  # the full width even off the step
    else:
        widths = parse_widths(text)
        if not widths:
            raise UsageError(f"--widths {text!r} selects no width")
    for w in widths:
        space.canonical(w)
    return widths


def provider(
    model: nn.Module, meta: Mapping[str, Any], args: argparse.Namespace
) -> MetricProvider | None:
    """The checkpoint's metric provider, or ``None`` with ``--no-metric``."""
    if args.no_metric:
        return None
    if not isinstance(meta.get("config"), Mapping):
        print("the checkpoint has no training config, so no evaluation data: costs only")
        return None
    options = ProviderOptions(args.data_root, args.max_eval_samples, args.num_samples)
    try:
        return metric_provider(model, meta, options)
    except (FileNotFoundError, ValueError) as e:
        hint = (
            " (the evaluation data comes from the checkpoint's training config: pass "
            "--data-root DIR, or --no-metric to measure costs only)"
        )
        raise type(e)(f"{e}{hint}") from None


def source(path: Path) -> dict[str, Any]:
    return {"checkpoint": str(path), "save_id": checkpoint.read_info(path)["save_id"]}


def measure(
    path: Path,
    model: nn.Module,
    meta: Mapping[str, Any],
    widths: Sequence[WidthConfig],
    metrics: MetricProvider | None,
    args: argparse.Namespace,
    save_stats: bool,
    label: str = "US-Net",
    kind: Kind = "us",
    latency: bool = False,
) -> Spectrum:
    """The spectrum of one checkpoint, with latency if asked (:func:`run` times a checkpoint and
    its baselines later, in the same rounds); newly calibrated statistics are saved into it if
    asked."""
    spec = compute_spectrum(
        model,
        widths,
        metrics,
        latency=latency,
        batch_size_throughput=args.batch_size,
        repeats=args.repeats,
        label=label,
        kind=kind,
    )
    if spec.calibrated_here and save_stats:
        checkpoint.save_statistics(model, path)  # keeps what others calibrated meanwhile
        print(f"saved BN statistics of {len(spec.calibrated_here)} new widths into {path}")
    spec.source = source(path)
    return spec


def _check_baseline(
    path: Path,
    main: nn.Module,
    main_meta: Mapping[str, Any],
    grid_: list[float],
    metrics: MetricProvider | None,
    device: torch.device,
    trust_code: bool = False,
) -> tuple[nn.Module, dict[str, Any], tuple[Kind, str, Sequence[WidthConfig]]]:
    """A baseline's model, metadata and ``(kind, label, widths)``; refused when the checkpoint's
    metric cannot judge it: another task (its data and loss do not fit the model) or data set."""
    model, meta, _ = load(path, device, trust_code)
    if metrics is not None:
        task = getattr(model, "task", "classification")
        ours_task = getattr(main, "task", "classification")
        if task != ours_task:
            raise UsageError(
                f"baseline {path} is a {task!r} model, the checkpoint a {ours_task!r} one: give "
                "baselines of its task, or --no-metric to compare costs only"
            )
        data = ((meta.get("config") or {}).get("data") or {}).get("name")
        ours = ((main_meta.get("config") or {}).get("data") or {}).get("name")
        if data and ours and data != ours:
            raise UsageError(f"baseline {path} was trained on {data!r}, the model on {ours!r}")
    kind, label, widths = baseline_points(model, meta, grid_)
    if kind == "us":  # name it after its run folder (runs/NAME/checkpoint)
        label = path.parent.name if path.name == "checkpoint" else path.name
    return model, meta, (kind, label, widths)


def run(args: argparse.Namespace) -> int:
    from ..spectrum.plot import plot_spectrum  # matplotlib only when plotting

    args.checkpoint = checkpoint.folder_of(args.checkpoint)  # CKPT/usnet.json means CKPT
    out = Path(args.out or args.checkpoint)
    if out.exists() and not out.is_dir():  # before minutes of measuring, not after
        raise UsageError(f"--out {out}: is a file; the spectrum files go into a folder")
    device = setup(args)
    model, meta, _ = load(args.checkpoint, device, args.trust_code)
    check_trains_range(meta, "spectrum")
    widths = grid(model, args.widths)
    if not args.no_latency:
        check_batch_size(model, args.batch_size)
    metrics = provider(model, meta, args)
    for b in args.baseline:  # a baseline that cannot be compared fails before minutes of work
        _check_baseline(b, model, meta, widths, metrics, device, args.trust_code)
    spec = measure(args.checkpoint, model, meta, widths, metrics, args, not args.no_save_stats)
    parts = [(model, spec)]
    extra = searched(args)
    if extra:  # the same model at searched widths: drawn beside the uniform curve
        found = measure(args.checkpoint, model, meta, extra, metrics, args, False, "searched", "searched")
        parts.append((model, found))
        spec.baselines.append(found)
    for b in args.baseline:  # loaded again: it may be the checkpoint, whose statistics just grew
        b_model, b_meta, (kind, label, b_widths) = _check_baseline(
            b, model, meta, widths, metrics, device, args.trust_code
        )
        save = not args.no_save_stats
        b_spec = measure(b, b_model, b_meta, b_widths, metrics, args, save, label, kind)
        parts.append((b_model, b_spec))
        spec.baselines.append(b_spec)
    if not args.no_latency:
        measure_latency(parts, args.batch_size, repeats=args.repeats)
    print(describe(spec))
    print(format_table(spec))
    for b in spec.baselines:
        print(f"\nbaseline {b.label} ({b.source['checkpoint']}):")
        print(format_table(b))
    if metrics is None:
        print("\ncosts only: no quality metric was measured")
    elif not any(r.metrics for r in spec.rows):
        print("\nno width could be evaluated: it has no calibration data")
    # files written into a checkpoint folder (this one or another: --out) take its lock, like
    # every writer of that folder
    into_checkpoint = (out / checkpoint.INFO).is_file()
    with checkpoint.locked(out) if into_checkpoint else contextlib.nullcontext():
        paths = save_spectrum(spec, out)
        if spec.has_latency or any(r.metrics for r in spec.rows):
            paths.append(plot_spectrum(spec, Path(out) / "spectrum.png"))
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0
