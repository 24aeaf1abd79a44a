"""The ``usnet`` command: one subcommand per module in :mod:`usnet.commands`.

Bad input ends in one line ``usnet CMD: error: ...`` and exit code 2: argument errors, and the
error types user input can cause (bad values, files, widths, images). Other exceptions are bugs
and keep their traceback. Ctrl-C ends with exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch

# Subcommand modules; each defines ``add_parser(subparsers)`` returning its parser, and ``run(args)``.
COMMANDS = ("profile", "train", "calibrate", "spectrum", "select", "search", "latency", "export", "upscale")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``--help`` shows the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="usnet", description="Universally slimmable networks: train, calibrate, profile, export."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"usnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"usnet.commands.{name}")
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types bad input raises: reported in one line, not as a traceback.

    ``OSError`` covers missing, existing, unreadable files and folders (and Pillow's
    ``UnidentifiedImageError``); ``ValueError`` bad values (and JSON, YAML and pydantic
    validation errors); ``UncalibratedWidthError`` a width without statistics;
    ``torch.OutOfMemoryError`` a device too small for what was asked.
    """
    from .nn import UncalibratedWidthError

    return (ValueError, OSError, UncalibratedWidthError, torch.OutOfMemoryError)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argument errors (code 2), --help and --version (0)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        return int(args._run(args) or 0)
    except user_errors() as e:
        print(f"usnet {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"usnet {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
