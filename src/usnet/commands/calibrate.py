"""``usnet calibrate CKPT --widths ...``: post-statistics BN for any widths of a checkpoint."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ._args import positive_int

if TYPE_CHECKING:
    from torch import nn


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


@dataclass
class CalibrationData:
    """What calibrates a checkpoint: its training data's loader, sample count and estimator."""

    loader: Any
    name: str
    num_samples: int
    method: str


def calibration_data(
    checkpoint: object, meta: Mapping[str, Any], model: nn.Module, args: argparse.Namespace
) -> CalibrationData:
    """The calibration data of ``model`` from checkpoint ``checkpoint``: its training config
    (``meta.config``), overridden by the options (``--num-samples`` ...).

    ``ValueError`` naming the field when the metadata lacks the data set or has a bad value.
    """
    from ..calibration import METHODS
    from ..data import calibration_loader

    cfg = _section(meta, "config")
    data = _section(cfg, "data", "config.")
    name = data.get("name")
    if not isinstance(name, str):
        raise UsageError(
            f"{checkpoint}: its metadata names no training data set (meta.config.data.name); "
            "calibrate it from Python with usnet.calibrate(model, loader, widths)"
        )
    cal = _section(cfg, "calibrate", "config.")
    num = _option(args.num_samples, cal, "num_samples", 2000, checkpoint, "--num-samples")
    batch = _option(
        getattr(args, "batch_size", None), cal, "batch_size", 200, checkpoint, "--batch-size"
    )
    seed = _section(cfg, "train", "config.").get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise UsageError(
            f"{checkpoint}: meta.config.train.seed {seed!r} must be an integer in [0, 2**32)"
        )
    method = args.method or cal.get("method", "exact")
    if method not in METHODS:
        raise UsageError(
            f"{checkpoint}: meta.config.calibrate.method {method!r} is unknown; allowed: "
            f"{list(METHODS)} (or pass --method)"
        )
    root = args.data_root or data.get("root")
    if root is not None and not isinstance(root, str):
        raise UsageError(f"{checkpoint}: meta.config.data.root {root!r} must be a folder name")
    kw: dict[str, Any] = {}
    if name in ("imagefolder", "imagenet"):  # images cropped to the model's input size
        kw["input_size"] = int(tuple(getattr(model, "input_size", (224,)))[-1])
    loader = calibration_loader(name, root, num, batch, seed=seed, **kw)
    return CalibrationData(loader, name, num, method)


def _section(doc: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"checkpoint meta.{prefix}{key} must be a mapping, got {value!r}")
    return value


def _option(
    given: int | None, cal: Mapping[str, Any], key: str, default: int, ckpt: object, flag: str
) -> int:
    """A positive count: the option if given, else the config's, else ``default``."""
    if given is not None:
        return given
    value = cal.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"{ckpt}: meta.config.calibrate.{key} {value!r} must be an integer >= 1 "
            f"(or pass {flag} N)"
        )
    return value


def run(args: argparse.Namespace) -> int:
    from .. import checkpoint
    from ..calibration import calibrate, needs_calibration
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
    data = calibration_data(args.checkpoint, checkpoint.read_meta(args.checkpoint), model, args)
    calibrate(model, data.loader, widths, data.num_samples, data.method)
    checkpoint.save_statistics(model.cpu(), args.checkpoint)
    print(
        f"calibrated {len(widths)} width(s) ({', '.join(format_width(w) for w in widths)}) "
        f"from {samples_used(data)} samples ({data.method}); saved into {args.checkpoint}"
    )
    return 0


def samples_used(data: CalibrationData) -> str:
    """How many samples calibrate: the training set may hold fewer than were asked for."""
    held = len(data.loader.dataset)
    if held >= data.num_samples:
        return str(data.num_samples)
    return f"{held} (all the training set holds; {data.num_samples} asked)"
