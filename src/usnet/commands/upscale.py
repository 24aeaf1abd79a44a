"""``usnet upscale CKPT --width 0.5 IN.png OUT.png``: super-resolve an image at one width."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from ..data.sr import ALPHA_FORMATS, MAX_PIXELS, image_format, read_image, write_image
from ..errors import UsageError
from ..models import edsr as _edsr  # noqa: F401  (registers us_edsr for checkpoint loading)
from ..models import wdsr as _wdsr  # noqa: F401  (registers us_wdsr)
from ..nn import format_width, width_space
from ..nn import width as at_width
from ._args import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "upscale",
        help="super-resolve an image with an SR checkpoint at one width",
        description="Upscale IN by the checkpoint's scale at --width (any width in the model's "
        "range) and write OUT as 8-bit RGB, the format following OUT's suffix. Greyscale "
        "(8- and 16-bit), palette and CMYK inputs are read as RGB; an alpha band is upscaled "
        "bicubically and kept where OUT's format stores it (PNG, WebP, TIFF).",
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="an SR checkpoint folder (usnet train, task: sr)"
    )
    p.add_argument("input", metavar="IN", type=Path, help="low-resolution image")
    p.add_argument("output", metavar="OUT", type=Path, help="where to write the upscaled image")
    p.add_argument("--width", type=float, help="width in the model's range (default: its largest)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=MAX_PIXELS,
        metavar="N",
        help="refuse inputs of more pixels, checked before decoding (default: %(default)s = "
        "2048x2048; the network's activations take hundreds of bytes per input pixel)",
    )
    return p


def upscale(model: torch.nn.Module, x: Tensor, width: float | None = None) -> Tensor:
    """A ``(3, H, W)`` float image in [0, 1] upscaled by ``model.scale`` at ``width`` (default:
    the model's largest)."""
    space = width_space(model)
    w = space.width_max if width is None else width
    device = next(model.parameters()).device
    with torch.no_grad(), at_width(model, w):
        return model(x.unsqueeze(0).to(device))[0].cpu()


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load
    from ..devices import resolve_device

    device = resolve_device(args.device, "--device")
    image_format(args.output)  # a bad OUT suffix is an error before any work
    if args.output.exists() and args.input.exists() and args.output.samefile(args.input):
        raise UsageError(f"OUT {str(args.output)!r} is the input image; give another file")
    model = load(args.checkpoint, map_location=device, trust_code=args.trust_code)
    if getattr(model, "task", None) != "sr":
        raise UsageError(
            f"{args.checkpoint} holds a {getattr(model, 'arch', type(model).__name__)!r} model "
            f"(task {getattr(model, 'task', '?')!r}); upscale needs a super-resolution checkpoint"
        )
    if args.width is not None:
        width_space(model).canonical(args.width)  # a clear error for a width out of range
    x, alpha = read_image(args.input, args.max_pixels)
    out = write_image(args.output, upscale(model, x, args.width), alpha)
    w = width_space(model).width_max if args.width is None else args.width
    note = ""
    if alpha is not None and image_format(args.output) not in ALPHA_FORMATS:
        note = f" (alpha dropped: {args.output.suffix} stores none)"
    print(
        f"{args.input} ({x.shape[2]}x{x.shape[1]}) -> {args.output} ({out.width}x{out.height}), "
        f"x{model.scale} at width {format_width(w)}{note}"
    )
    return 0
