"""The ``usnet`` command: one subcommand per module in :mod:`usnet.commands`.

Bad input ends in one line ``usnet CMD: error: ...`` and exit code 2: argument errors, a
:class:`usnet.UsageError` (every check of user input raises one), a width without statistics, a
device too small, and the operating system's errors about a path (missing, not allowed, disk
full). Anything else is a bug in usnet: it is printed with its traceback and a request to report
it, exit code 1, so an internal ``ValueError`` is never passed off as the user's mistake. Ctrl-C
ends with exit code 130, SIGTERM with 143, both after the command's cleanup ran.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

import torch

from . import logs
from .version import __version__

# Subcommand modules; each defines ``add_parser(subparsers)`` returning its parser, and ``run(args)``.
COMMANDS = (
    "profile", "train", "calibrate", "spectrum", "select", "search", "latency", "export", "upscale"
)  # fmt: skip
#: The subcommands that load checkpoints, so take ``--trust-code``.
READS_CHECKPOINTS = (
    "profile", "calibrate", "spectrum", "select", "search", "latency", "export", "upscale"
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``--help`` shows the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="usnet", description="Universally slimmable networks: train, calibrate, profile, export."
    )
    parser.add_argument("--version", action="version", version=f"usnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"usnet.commands.{name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run, trust_code=False)
        if name in READS_CHECKPOINTS:
            p.add_argument(
                "--trust-code",
                action="store_true",
                help="allow a checkpoint whose model is a package.module:factory to import that "
                "module (it runs its code; only for checkpoints you trust)",
            )
    return parser


#: What the operating system says about a path the user gave: one line, not a traceback.
_PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
_PATH_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP}


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is bad input (one line) rather than a bug (a traceback).

    A :class:`usnet.UsageError` (``ConfigError``, ``ConvertError``, ``CheckpointError`` ...);
    ``UncalibratedWidthError``, a width without statistics; ``torch.OutOfMemoryError``, a device
    too small for what was asked; and an ``OSError`` about a path: missing, existing, not
    allowed, a file where a folder belongs, or a full or read-only disk.
    """
    from .errors import UsageError
    from .nn import UncalibratedWidthError

    if isinstance(e, (UsageError, UncalibratedWidthError, torch.OutOfMemoryError)):
        return True
    return isinstance(e, _PATH_ERRORS) or (isinstance(e, OSError) and e.errno in _PATH_ERRNOS)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argument errors (code 2), --help and --version (0)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    logs.configure(getattr(args, "quiet", False), not getattr(args, "no_progress", False))
    try:
        with _terminate_as_exception():
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"usnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"usnet {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:
        if is_user_error(e):
            print(f"usnet {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            f"usnet {args.command}: {type(e).__name__}: this is a bug in usnet, please report it "
            "with the traceback above",
            file=sys.stderr,
        )
        return 1


class Terminated(BaseException):
    """SIGTERM (``kill``, a job scheduler, ``torchrun`` stopping its workers), raised where the
    command is, so that every ``finally`` and cleanup runs: locks are released and the
    temporary files of writes in progress removed, as on Ctrl-C."""


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def without_implicit_folder(path: list[str]) -> list[str]:
    """``sys.path`` without the current folder that ``python -m usnet`` puts first (as
    ``python -P`` does): a model name such as ``evil:Net`` from a checkpoint must never import
    a file that happens to lie in the folder usnet runs from. Modules of one's own networks go
    on ``PYTHONPATH`` or are installed."""
    here = os.getcwd()
    if path and (path[0] in ("", ".") or os.path.abspath(path[0]) == here):
        return path[1:]
    return list(path)


def _one_line(e: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
