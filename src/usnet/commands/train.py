"""``usnet train CONFIG``: train a US-Net from a YAML recipe (dispatching on its ``task``)."""

from __future__ import annotations

import argparse
import importlib
import os


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a US-Net from a YAML recipe, then calibrate and evaluate its width grid",
        description="Train with the sandwich rule and inplace distillation. Under torchrun every "
        "rank runs this command (DDP); only rank 0 writes files.",
    )
    p.add_argument("config", help="YAML recipe, e.g. configs/fashion_mnist.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.1 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/resume.pt")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an OUTPUT_DIR that holds a run (its checkpoint is replaced)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


# task name -> package with ``TASK`` (a task of the training loop)
TASKS = {"classification": "usnet.tasks.classification", "sr": "usnet.tasks.sr"}


def run(args: argparse.Namespace) -> int:
    from ..config import build_config, load_yaml, task_of

    raw = load_yaml(args.config)
    name = task_of(raw)
    if name == "rl":
        from .. import rl

        extra = {} if args.device is None else {"device": args.device}
        return int(rl.run(raw, args.overrides, args.resume, source=args.config, **extra) or 0)
    task = importlib.import_module(TASKS[name]).TASK
    cfg = build_config(task.config, raw, args.overrides, source=args.config)
    path = task.train(
        cfg,
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for the run
        print(f"checkpoint: {path}")
    return 0
