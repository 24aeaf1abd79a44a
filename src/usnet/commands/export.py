"""``usnet export CKPT --width W --format pt|torchscript|onnx --out FILE``: deploy one width."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UsageError
from ..export import FORMATS, SUFFIXES, format_of
from ..io import directly_in
from ..nn import WidthConfig, format_width, width_space
from ..spectrum import trained_width
from ._args import positive_int
from .calibrate import add_data_options, calibration_provider, samples_used

_FORMAT_HELP = (
    "pt: a torch.export ExportedProgram (.pt2; load with torch.export.load(f).module()). It is "
    "PyTorch's portable module file: standard ATen ops and weights, no class definitions, so "
    "it loads without usnet, which a pickled nn.Module would not (and unpickling runs code). "
    "torchscript: torch.jit.trace (.pt; torch.jit.load(f)), for C++ and mobile runtimes. "
    "onnx: opset 17 (.onnx; onnxruntime). All have a dynamic batch axis."
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="save the dense network of one width as an ExportedProgram, TorchScript or ONNX",
        description="Export the dense sub-network a width selects (plain conv/BN/linear layers "
        "with that width's calibrated statistics) to a file that loads without usnet. The file "
        "is checked after writing: it must reproduce the model at batch sizes 1 and 3. "
        "Formats: " + _FORMAT_HELP,
    )
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="checkpoint folder")
    p.add_argument(
        "--width",
        metavar="W",
        help="a width (0.5), a non-uniform config 'stem=0.5,stage1=0.75,*=1' or JSON "
        "'{\"*\": 0.5}', or @FILE.json holding one; @CKPT/search.json: the searched network "
        "chosen for the budget (@search.json#N: front member N)",
    )
    p.add_argument(
        "--width-json", type=Path, metavar="FILE", help="JSON file: a width or {group: width}"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="(default: from --out's suffix: "
        + ", ".join(f"{s} {f}" for f, s in SUFFIXES.items())
        + "; else pt) "
        + _FORMAT_HELP,
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="file to write (default: CKPT/export_w<width><suffix>; suffixes "
        + ", ".join(f"{f} {s}" for f, s in SUFFIXES.items())
        + ")",
    )
    p.add_argument(
        "--input-size",
        type=positive_int,
        metavar="N",
        help="image side of the traced input (default: the model's input size); the batch "
        "axis is dynamic either way",
    )
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="calibrate an uncalibrated width first from the checkpoint's training data "
        "(default: on; --no-calibrate makes it an error)",
    )
    add_data_options(p)
    p.add_argument(
        "--save-stats",
        action="store_true",
        help="write statistics calibrated here back into the checkpoint",
    )
    return p


def parse_width(text: str | None, json_file: Path | None = None) -> WidthConfig:
    """The width of ``--width`` / ``--width-json``: a float or a ``{group: width}`` mapping."""
    if (text is None) == (json_file is None):
        raise UsageError("give the width: --width W or --width-json FILE (one of them)")
    if json_file is None and text is not None and text.startswith("@"):
        json_file = Path(text[1:])
    if json_file is not None and ("#" in json_file.name or _is_search(json_file)):
        from ..search import searched_widths  # a search.json: its chosen network, or FILE#N

        return searched_widths(str(json_file))[0]
    if json_file is not None:
        if not json_file.is_file():
            raise FileNotFoundError(f"{json_file}: no such width JSON file")
        try:
            return _width_value(json.loads(json_file.read_text()), str(json_file))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise UsageError(f"{json_file}: not a width in JSON ({type(e).__name__})") from None
    assert text is not None
    text = text.strip()
    if text.startswith("{"):
        try:
            return _width_value(json.loads(text), "--width")
        except (json.JSONDecodeError, RecursionError) as e:
            raise UsageError(f"--width {text[:80]!r}: not a width in JSON ({e})") from None
    if "=" in text:
        pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
        for pair in pairs:
            if len(pair) != 2 or not pair[0].strip():
                raise UsageError(
                    f"--width {text!r}: {'='.join(pair)!r} is not GROUP=WIDTH; give every group "
                    "a width, e.g. 'stem=0.5,stage1=0.75,*=1'"
                )
        return _width_value({k.strip(): v.strip() for k, v in pairs}, "--width")
    return _width_value(text, "--width")


def _is_search(path: Path) -> bool:
    """Whether ``path`` is a search.json (``usnet search``'s file)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, Mapping) and doc.get("format") == "usnet-search"


def _width_value(value: Any, where: str) -> WidthConfig:
    if isinstance(value, Mapping) and "width" in value and (len(value) == 1 or "network" in value):
        value = value["width"]  # a saved spectrum row's or search entry's {"width": ...}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            out[str(k)] = _number(v, f"{where}: group {k!r}")
        if not out:
            raise UsageError(f"{where}: an empty width config; give {{group: width}} or a number")
        return out
    return _number(value, where)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool):
        v = None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise UsageError(
            f"{where}: width {v!r} must be a number (e.g. 0.5) or a {{group: width}} mapping"
        ) from None


def ensure_calibrated(
    model: nn.Module, meta: Mapping[str, Any], width: WidthConfig, args: argparse.Namespace
) -> bool:
    """Calibrate ``width`` from the checkpoint's training data if it has no statistics yet.

    Returns whether it calibrated. Without data (or with ``--no-calibrate``) it raises a
    ``ValueError`` saying how to calibrate.
    """
    from ..calibration import is_calibrated

    if is_calibrated(model, width):
        return False
    label = format_width(width_space(model).canonical(width))
    how = (
        f"run `usnet calibrate {args.checkpoint} --widths {label}`"
        if not isinstance(width, Mapping)
        else "calibrate it with usnet.calibrate(model, loader, widths=[config]) and save"
    )
    if not args.calibrate:
        raise UsageError(
            f"width {label} of {args.checkpoint} has no batch-norm statistics; {how}, or drop "
            "--no-calibrate to calibrate it here"
        )
    try:
        provider = calibration_provider(args.checkpoint, meta, model, args)
    except UsageError as e:
        raise UsageError(f"width {label} has no batch-norm statistics to export: {e}") from None
    provider.calibrate(model, [width], replace=True)
    print(
        f"calibrated width {label} from {samples_used(provider)} {provider.dataset} training "
        f"images ({provider.calibration_method})"
    )
    return True


def run(args: argparse.Namespace) -> int:
    from .. import checkpoint, export

    width = parse_width(args.width, args.width_json)
    model = checkpoint.load(args.checkpoint, trust_code=args.trust_code)
    meta = checkpoint.read_meta(args.checkpoint)
    space = width_space(model)
    config = space.canonical(width)  # a clear error for a bad group name or range
    label = format_width(config)
    trained = trained_width(meta)
    if trained is not None and space.canonical(trained) != config:
        only = format_width(space.canonical(trained))
        raise UsageError(
            f"--width {label}: this checkpoint was trained at one width only (train.sampling "
            f"'fixed'), {only}; its other widths are untrained: export that one"
        )
    # a file named x.onnx gets ONNX, not the default format under a misleading name
    args.format = args.format or (format_of(args.out) if args.out else None) or "pt"
    out = args.out or args.checkpoint / f"export_w{label.replace(',', '_')}{SUFFIXES[args.format]}"
    calibrated = ensure_calibrated(model, meta, width, args)
    if calibrated and args.save_stats:
        checkpoint.save_statistics(model, args.checkpoint)
        print(f"saved the statistics of width {label} into {args.checkpoint}")
    # a file written into the checkpoint folder must not race a save of the folder
    inside = directly_in(out, args.checkpoint)
    with checkpoint.locked(args.checkpoint) if inside else contextlib.nullcontext():
        try:
            path = export.save(model, width, out, args.format, args.input_size)
        except ModuleNotFoundError as e:
            raise UsageError(str(e)) from None
    channels = space.channels(width)
    print(
        f"exported width {label} of {args.checkpoint} ({getattr(model, 'arch', '?')}, "
        f"{sum(channels.values())} active channels) as {args.format} to {path}"
    )
    print(f"  load without usnet: {_how_to_load(args.format, path)}")
    return 0


def _how_to_load(format: str, path: Path) -> str:
    # torch.export.load wants a .pt2 name; any other name loads from an open file
    f = repr(str(path)) if path.suffix == ".pt2" else f"open({str(path)!r}, 'rb')"
    return {
        "pt": f"torch.export.load({f}).module()",
        "torchscript": f"torch.jit.load({str(path)!r})",
        "onnx": f"onnxruntime.InferenceSession({str(path)!r})",
    }[format]
