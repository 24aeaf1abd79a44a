"""The command-line arguments ``usnet spectrum`` and ``usnet select`` share, and their checks.

Both measure a checkpoint across widths, so they take the same checkpoint argument and the same
options for which widths, where and on what data; defined once here so the two cannot drift.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn

from ..devices import MAX_THREADS, physical_memory, resolve_device
from ..errors import UsageError
from ..shapes import input_shape


def add_checkpoint_command(
    subparsers: argparse._SubParsersAction, name: str, help: str, description: str
) -> argparse.ArgumentParser:
    """The subcommand ``name`` with its first argument, the checkpoint folder ``CKPT``."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="checkpoint folder")
    return p


def add_measure_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``spectrum`` and ``select``: which widths, where and on what data."""
    p.add_argument(
        "--widths",
        help="start:stop:step (stop included) or a comma list; default: the model's range in "
        "steps of 0.025 (a switchable model: its switches)",
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where to measure (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"CPU threads for torch, 1 to {MAX_THREADS} (default: torch's)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        metavar="N",
        help="calibration images per width (default: the training config's calibrate.num_samples)",
    )
    p.add_argument(
        "--max-eval-samples",
        type=int,
        metavar="N",
        help="evaluate on a seeded subset of N validation samples (RL: N episodes)",
    )
    p.add_argument(
        "--data-root", metavar="DIR", help="data folder, if not the one in the checkpoint's config"
    )
    p.add_argument("--no-metric", action="store_true", help="costs only: no evaluation data")
    p.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="batch of the throughput column"
    )
    p.add_argument(
        "--repeats", type=int, default=30, metavar="N", help="timed runs per width at batch 1"
    )
    p.add_argument("--quiet", action="store_true", help="warnings only: no progress bars")


def check_batch_size(model: nn.Module, batch_size: int) -> None:
    """Refuse a throughput batch whose input alone exceeds this machine's memory, before any
    measuring (it would end in an allocation failure after minutes of work)."""
    need = batch_size * math.prod(input_shape(model)) * 4
    if need > physical_memory():
        raise UsageError(
            f"--batch-size {batch_size}: one batch of inputs alone takes {need / 2**30:.3g} GiB, "
            f"more than this machine's {physical_memory() / 2**30:.3g} GiB; give a smaller one"
        )


def setup(args: argparse.Namespace) -> torch.device:
    """Validate the shared options; set the thread count. Returns the device."""
    for name in ("num_samples", "max_eval_samples", "threads", "batch_size", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.threads is not None and args.threads > MAX_THREADS:  # more aborts inside OpenMP
        raise UsageError(f"--threads must be at most {MAX_THREADS}, got {args.threads}")
    device = resolve_device(args.device, "--device")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return device
