"""``usnet profile MODEL``: MACs and parameters of a model across a width grid."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..errors import UsageError
from ..io import atomic_write, make_parent
from ..models import list_models
from ..models.registry import model_name_error
from ..nn import parse_widths, width_space
from ..profile import input_shape, macs, params
from ._args import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "profile",
        help="MACs and parameters of a model at a grid of widths",
        description="Print MACs and active parameters at each width; widths that round to the "
        "same network are marked. MODEL is a registered model name or a checkpoint folder.",
    )
    p.add_argument(
        "model", metavar="MODEL", help=f"one of {', '.join(list_models())}, a source (torchvision:NAME, timm:NAME, "
        "package.module:factory) or a checkpoint folder"
    )
    p.add_argument(
        "--widths",
        help="start:stop:step (stop included) or a comma list; default: the model's range, "
        "step 0.025",
    )
    p.add_argument(
        "--input-size", type=positive_int, help="image side in pixels (default: the model's)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model argument, e.g. --set num_classes=10 (repeatable; values parsed as YAML)",
    )
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the table as CSV")
    return p


def _model_kwargs(pairs: list[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r} must be KEY=VALUE, e.g. --set num_classes=10")
        try:
            kwargs[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise UsageError(f"--set {pair!r}: the value is not YAML ({e})") from None
    return kwargs


def _build(name: str, kwargs: dict[str, Any], trust_code: bool = False) -> nn.Module:
    from ..checkpoint import load
    from ..devices import physical_memory
    from ..models.checked import build_model

    if Path(name).is_dir():
        if kwargs:
            raise UsageError("--set changes a model built by name, not a checkpoint")
        return load(name, trust_code=trust_code)
    error = model_name_error(name)
    if error is not None:
        what = f"MODEL {name!r} is a file; " if Path(name).exists() else ""
        raise UsageError(f"{what}{error} (or give a checkpoint folder)")
    # the arguments of --set may ask for anything: refuse what would not fit in memory
    where = "--set " + " ".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else name
    return build_model(name, kwargs, physical_memory(), where, "this machine's memory holds")


def run(args: argparse.Namespace) -> int:
    model = _build(args.model, _model_kwargs(args.set), args.trust_code)
    space = width_space(model)
    text = args.widths or f"{space.width_min}:{space.width_max}:0.025"
    widths = parse_widths(text)
    if not widths:
        raise UsageError(f"--widths {text!r} selects no width")
    for w in widths:
        space.canonical(w)  # every width in range before any work
    shape = input_shape(model, args.input_size)

    rows: list[dict[str, Any]] = []
    first_of: dict[str, dict[str, Any]] = {}
    for w in widths:
        key = space.resolve(w)[1]
        if key in first_of:
            same = first_of[key]
            rows.append({**same, "width": w, "same_as": same["width"]})
            continue
        row: dict[str, Any] = {"width": w, "macs": macs(model, w, shape)}
        row.update(params=params(model, w), network=key, same_as="")
        first_of[key] = row
        rows.append(row)

    name = getattr(model, "arch", args.model)
    print(
        f"{name}: input {'x'.join(map(str, shape))}, {len(widths)} widths, "
        f"{len(first_of)} distinct networks"
    )
    print(f"{'width':>7} {'MACs (M)':>10} {'params (M)':>11}  same network as")
    for r in rows:
        mark = f"{r['same_as']:g}" if r["same_as"] != "" else ""
        print(f"{r['width']:>7.3f} {r['macs'] / 1e6:>10.2f} {r['params'] / 1e6:>11.3f}  {mark}")
    if args.csv is not None:
        make_parent(args.csv, "--csv")

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                fields = ["width", "macs", "params", "network", "same_as"]
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(args.csv, write)
        print(f"wrote {args.csv}")
    return 0
