"""``usnet upscale CKPT --width 0.5 IN.png OUT.png``: super-resolve an image at one width."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from ..data.sr import to_image, to_tensor
from ..models import edsr as _edsr  # noqa: F401  (registers us_edsr for checkpoint loading)
from ..models import wdsr as _wdsr  # noqa: F401  (registers us_wdsr)
from ..nn import format_width, width_space
from ..nn import width as at_width


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "upscale",
        help="super-resolve an image with an SR checkpoint at one width",
        description="Upscale IN by the checkpoint's scale at --width (any width in the model's "
        "range) and write OUT (8-bit RGB; the format follows OUT's suffix).",
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="an SR checkpoint folder (usnet train, task: sr)"
    )
    p.add_argument("input", metavar="IN", type=Path, help="low-resolution image")
    p.add_argument("output", metavar="OUT", type=Path, help="where to write the upscaled image")
    p.add_argument("--width", type=float, help="width in the model's range (default: its largest)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    return p


def upscale(model: torch.nn.Module, image: Image.Image, width: float | None = None) -> Image.Image:
    """``image`` upscaled by ``model.scale`` at ``width`` (default: the model's largest)."""
    space = width_space(model)
    w = space.width_max if width is None else width
    device = next(model.parameters()).device
    x = (to_tensor(image).float() / 255).unsqueeze(0).to(device)
    with torch.no_grad(), at_width(model, w):
        return to_image(model(x)[0])


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load

    model = load(args.checkpoint, map_location=args.device)
    if getattr(model, "task", None) != "sr":
        raise ValueError(
            f"{args.checkpoint} holds a {getattr(model, 'arch', type(model).__name__)!r} model "
            f"(task {getattr(model, 'task', '?')!r}); upscale needs a super-resolution checkpoint"
        )
    if args.width is not None:
        width_space(model).canonical(args.width)  # a clear error for a width out of range
    if not args.input.is_file():
        raise FileNotFoundError(f"input image {str(args.input)!r} does not exist")
    with Image.open(args.input) as im:
        image = im.convert("RGB")
    out = upscale(model, image, args.width)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out.save(args.output)
    w = width_space(model).width_max if args.width is None else args.width
    print(
        f"{args.input} ({image.width}x{image.height}) -> {args.output} ({out.width}x{out.height}), "
        f"x{model.scale} at width {format_width(w)}"
    )
    return 0
