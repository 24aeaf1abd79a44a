"""``usnet select CKPT --max-macs 150M | --max-latency-ms 5 | --min-top1 0.9``: choose a width."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from .. import checkpoint
from ..calibration import is_calibrated
from ..errors import UsageError
from ..export import FORMATS, SUFFIXES, format_of
from ..export import save as export_save
from ..io import directly_in
from ..spectrum import (
    Spectrum,
    check_trains_range,
    environment,
    load_spectrum,
    parse_count,
    parse_latency_ms,
    parse_target,
    select,
)
from ..spectrum.tables import format_count
from ._spectrum_args import (
    add_checkpoint_command,
    add_measure_options,
    check_batch_size,
    searched,
    setup,
)
from .spectrum import grid, load, measure, provider


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_checkpoint_command(
        subparsers,
        "select",
        help="the best width of a checkpoint under a MACs, latency or accuracy budget",
        description="Choose a width from the checkpoint's spectrum: the best metric within "
        "--max-macs / --max-latency-ms, or the cheapest width reaching --min-top1 / --target "
        "(budgets combine). Reuses CKPT/spectrum.json when it was measured on this device for "
        "these weights, else measures here (latency only for a latency budget).",
    )
    p.add_argument("--max-macs", metavar="N", help="MACs budget, e.g. 150M, 1.2G, 5e8")
    p.add_argument("--max-latency-ms", metavar="MS", help="batch-1 latency budget on this device")
    p.add_argument("--min-top1", metavar="ACC", help="top-1 floor, e.g. 0.9 or 90%%")
    p.add_argument(
        "--target",
        metavar="METRIC=VALUE",
        help="any metric's target, e.g. psnr=33 (at least; at most for a lower-is-better one)",
    )
    add_measure_options(p)
    p.add_argument("--export", type=Path, metavar="FILE", help="export the chosen network")
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="export format (default: from FILE's suffix: "
        + ", ".join(f"{s} {f}" for f, s in SUFFIXES.items())
        + "; else pt)",
    )
    return p


def _reuse(
    path: Path,
    device: torch.device,
    widths: list[float] | None,
    need_latency: bool,
    need_metric: str | None,
) -> tuple[Spectrum | None, str]:
    """The saved spectrum if it answers this question here, else ``None`` and why not."""
    file = path / "spectrum.json"
    if not file.is_file():
        return None, "no saved spectrum"
    try:
        spec = load_spectrum(file)
    except ValueError as e:
        return None, f"saved spectrum unreadable ({e})"
    env = spec.env
    if spec.source.get("save_id") != checkpoint.read_info(path)["save_id"]:
        return None, "the saved spectrum belongs to other weights"
    if not spec.rows:
        return None, "the saved spectrum has no widths"
    saved = {w for w in spec.widths() if not isinstance(w, dict)}
    if widths is not None and not {round(w, 6) for w in widths} <= saved:
        return None, "the saved spectrum lacks some of --widths"
    if need_metric and not any(need_metric in r.metrics for r in spec.rows):
        return None, f"the saved spectrum has no {need_metric}"
    if need_latency:
        now = environment(device)
        fields = ("device", "device_name", "threads", "torch")
        here, there = [now[k] for k in fields], [env.get(k) for k in fields]
        if not spec.has_latency or here != there:
            return None, "its latency was not measured on this device and thread count"
    if widths is not None:
        keep = {round(w, 6) for w in widths}
        spec.rows = [r for r in spec.rows if any(w in keep for w in r.widths)]
    return spec, f"saved spectrum {file} (measured {env.get('date', '?')})"


def run(args: argparse.Namespace) -> int:
    max_macs = parse_count(args.max_macs, "--max-macs") if args.max_macs is not None else None
    max_ms = parse_latency_ms(args.max_latency_ms) if args.max_latency_ms is not None else None
    if args.min_top1 is not None and args.target is not None:
        raise UsageError("give one metric floor: --min-top1 or --target, not both")
    target_text = f"top1={args.min_top1}" if args.min_top1 is not None else args.target
    target = parse_target(target_text) if target_text is not None else None
    if max_macs is None and max_ms is None and target is None:
        raise UsageError("give a budget: --max-macs, --max-latency-ms, --min-top1 or --target")
    device = setup(args)
    path = args.checkpoint
    model, meta, _ = load(path, device, args.trust_code)
    check_trains_range(meta, "select")
    widths = grid(model, args.widths) if args.widths is not None else None

    extra = searched(args)
    spec, why = (
        (None, "--search adds widths it has not measured")
        if extra
        else _reuse(path, device, widths, max_ms is not None, target[0] if target else None)
    )
    if spec is None:
        if max_ms is not None:
            check_batch_size(model, args.batch_size)
        print(f"measuring the spectrum here ({why})")
        metrics = provider(model, meta, args)
        if target is not None and metrics is None:
            raise UsageError(
                "a metric target needs evaluation data, which this checkpoint lacks "
                "or --no-metric turned off"
            )
        if target is not None and metrics is not None:  # before minutes of measuring
            parse_target(target_text, metrics.metrics, f"what a {metrics.task} model measures")
        spec = measure(
            path,
            model,
            meta,
            [*(widths or grid(model, None)), *extra],
            metrics,
            args,
            latency=max_ms is not None,
            save_stats=False,
        )
        if spec.calibrated_here:
            print(
                f"(calibrated {len(spec.calibrated_here)} widths in memory; `usnet spectrum "
                f"{path}` saves them and the spectrum for next time)"
            )
    else:
        print(f"using the {why}")
    if target is not None:
        target = parse_target(target_text, spec.metrics)  # checks the name and a fraction's range
    choice = select(spec, max_macs, max_ms, target)
    row = choice.row
    print(
        f"selected width {row.label}"
        + (f" (the same network as widths {row.shared})" if row.shared else "")
    )
    print(f"  why: {choice.reason}")
    print(f"  {row.channels} active channels, {format_count(row.params)} params")

    if args.export is not None:
        if not is_calibrated(model, row.width):  # e.g. a spectrum saved with --no-save-stats
            metrics = provider(model, meta, args)
            if metrics is not None:
                metrics.calibrate(model, [row.width])
        if not is_calibrated(model, row.width):
            raise UsageError(
                f"width {row.label} has no batch-norm statistics to export (no calibration data "
                f"was found); calibrate it first: usnet calibrate {path} --widths {row.label}"
            )
        fmt = args.format or format_of(args.export) or "pt"
        # a file written into the checkpoint folder must not race a save of the folder
        inside = directly_in(args.export, path)
        with checkpoint.locked(path) if inside else contextlib.nullcontext():
            out = export_save(model, row.width, args.export, fmt)
        print(f"exported width {row.label} as {fmt} to {out}")
    return 0
