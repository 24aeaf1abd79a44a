"""``usnet calibrate CKPT --widths ...``: post-statistics BN for any widths of a checkpoint."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ._args import positive_int

if TYPE_CHECKING:
    from torch import nn

    from ..spectrum import MetricProvider


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "calibrate",
        help="compute batch-norm statistics of a checkpoint at some widths and save them into it",
        description="Calibrate the widths and write their statistics into the checkpoint. Runs "
        "on one checkpoint at once take turns saving and keep each other's widths.",
    )
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors + usnet.json)")
    p.add_argument("--widths", required=True, help="grid 'start:stop:step' or list '0.35,0.5,1.0'")
    add_data_options(p)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="images per batch (default: as trained, else 200)",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (default: cpu)")
    return p


def add_data_options(p: argparse.ArgumentParser) -> None:
    """Where calibration data comes from: options ``calibrate`` and ``export`` share."""
    p.add_argument(
        "--data-root", default=None, help="data folder (default: as in the checkpoint's config)"
    )
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=None,
        help="training images (default: the config's calibrate.num_samples, else 2000)",
    )
    p.add_argument(
        "--method",
        choices=("exact", "single_pass"),
        default=None,
        help="estimator (default: the config's calibrate.method, else exact)",
    )


def calibration_provider(
    checkpoint: object, meta: Mapping[str, Any], model: nn.Module, args: argparse.Namespace
) -> MetricProvider:
    """How the checkpoint's task calibrates it (:func:`usnet.tasks.metric_provider`: the run's
    recorded config and seed), with the options (``--num-samples``...) applied. ``ValueError``
    naming the field when the metadata has a bad value or names no calibration data."""
    from ..spectrum import ProviderOptions
    from ..tasks import metric_provider

    options = ProviderOptions(
        data_root=args.data_root,
        num_samples=args.num_samples,
        method=args.method,
        calibration_batch_size=getattr(args, "batch_size", None),
    )
    try:
        provider = metric_provider(model, meta, options)
    except UsageError as e:
        raise UsageError(f"{checkpoint}: {e}") from None
    if provider.calibration is None:
        raise UsageError(
            f"{checkpoint}: its {provider.task} task has no calibration data; calibrate it "
            "from Python with usnet.calibrate(model, loader, widths)"
        )
    return provider


def run(args: argparse.Namespace) -> int:
    from .. import checkpoint
    from ..calibration import needs_calibration
    from ..devices import resolve_device
    from ..nn import format_width, parse_widths, width_space

    device = resolve_device(args.device, "--device")
    widths = parse_widths(args.widths)
    if not widths:
        raise UsageError(f"--widths {args.widths!r} selects no width")
    model = checkpoint.load(args.checkpoint, map_location=device, trust_code=args.trust_code)
    for w in widths:
        width_space(model).canonical(w)  # every width in range before any work
    if not needs_calibration(model):
        print(
            f"{args.checkpoint}: its model has no per-width batch norm to calibrate (no BN, or "
            "an S-Net's switchable BN with trained statistics per switch); every width runs as "
            "it is"
        )
        return 0
    meta = checkpoint.read_meta(args.checkpoint)
    provider = calibration_provider(args.checkpoint, meta, model, args)
    provider.calibrate(model, widths, replace=True)
    checkpoint.save_statistics(model.cpu(), args.checkpoint)
    print(
        f"calibrated {len(widths)} width(s) ({', '.join(format_width(w) for w in widths)}) "
        f"from {samples_used(provider)} samples ({provider.calibration_method}); saved into "
        f"{args.checkpoint}"
    )
    return 0


def samples_used(provider: MetricProvider) -> str:
    """How many samples calibrated: the training set may hold fewer than were asked for."""
    used = provider.samples_used
    if used is None or used >= provider.num_samples:
        return str(provider.num_samples)
    return f"{used} (all the training set holds; {provider.num_samples} asked)"
