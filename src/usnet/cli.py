"""The ``usnet`` command: one subcommand per module in :mod:`usnet.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules; each defines ``add_parser(subparsers)`` returning its parser, and ``run(args)``.
COMMANDS = ("profile", "train", "calibrate", "spectrum", "select", "export", "upscale")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usnet", description="Universally slimmable networks: train, calibrate, profile, export."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"usnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"usnet.commands.{name}")
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .nn import UncalibratedWidthError

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, UncalibratedWidthError) as e:
        print(f"usnet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
