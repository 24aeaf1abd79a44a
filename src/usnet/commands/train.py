"""``usnet train CONFIG``: train a US-Net from a YAML recipe (the task its ``task:`` names)."""

from __future__ import annotations

import argparse
import os


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a US-Net from a YAML recipe, then evaluate its width grid",
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
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1... (default: the recipe's train.device, else cuda when available)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the epoch lines stay)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import load_yaml
    from ..tasks import get_task, task_config
    from ..training import train

    cfg = task_config(load_yaml(args.config), args.overrides, source=args.config)
    result = train(
        get_task(cfg.task), cfg, resume=args.resume, device=args.device, overwrite=args.overwrite
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for the run
        print(result.text)
        print(f"checkpoint: {result.checkpoint}")
    return 0
