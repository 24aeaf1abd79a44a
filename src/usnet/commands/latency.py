"""``usnet latency CKPT [--backend eager|onnxruntime]``: build and validate a latency model."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from .. import checkpoint
from ..latency import BACKENDS, backend, build, summary
from ..latency.backends import STATISTICS
from ..latency.model import rows_table
from ._args import positive_int


def default_path(ckpt: Path, backend_name: str) -> Path:
    """Where a checkpoint's latency model of ``backend_name`` is kept."""
    return ckpt / f"latency_{backend_name}.json"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "latency",
        help="build a latency model of this machine for a checkpoint's widths, and validate it",
        description="Time every layer the checkpoint's networks run (a lookup table), fit it to "
        "end-to-end timings of random per-group widths, and check it on other random widths "
        "(predicted against measured, interleaved rounds, median). Writes "
        "CKPT/latency_<backend>.json, which `usnet search --max-latency-ms` uses.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="checkpoint folder")
    p.add_argument("--backend", choices=BACKENDS, default="eager", help="(default: %(default)s)")
    p.add_argument("--fit", type=positive_int, default=24, metavar="N", help="widths fitted on")
    p.add_argument(
        "--validate", type=positive_int, default=20, metavar="N", help="widths checked (other ones)"
    )
    p.add_argument(
        "--rounds", type=positive_int, default=30, metavar="N", help="interleaved rounds"
    )
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N")
    p.add_argument("--seed", type=int, default=0, help="of the random widths (default 0)")
    p.add_argument(
        "--statistic",
        choices=STATISTICS,
        default="median",
        help="of each width's end-to-end rounds (default: %(default)s; min: what an idle "
        "machine shows)",
    )
    p.add_argument(
        "--threads", type=positive_int, metavar="N", help="CPU threads (default torch's)"
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="default: CKPT/latency_<backend>.json")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the log lines stay)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    return p


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = checkpoint.folder_of(args.checkpoint)
    model = checkpoint.load(path)
    runner = backend(args.backend)
    lm = build(
        model,
        runner,
        args.batch_size,
        args.fit,
        args.validate,
        args.rounds,
        seed=args.seed,
        statistic=args.statistic,
    )
    out = args.out or default_path(path, args.backend)
    with checkpoint.locked(path) if out.parent == path else contextlib.nullcontext():
        lm.save(out)
    env = lm.environment
    print(
        f"latency model of {getattr(model, 'arch', '?')} on {env['device_name']} "
        f"({env['backend']}, {env['threads']} threads, batch {lm.batch_size}, {lm.statistic} of "
        f"the rounds): {len(lm.table)} layers timed, fit "
        f"'{lm.fit['form']}' on {lm.fit['widths']} widths"
    )
    print(rows_table(lm.validation["rows"]))
    print(summary(lm.validation))
    print(f"wrote {out}")
    return 0
