"""Wall time of a full greedy search (``usnet search``) of US-MobileNet v1 small (8 groups).

    python benchmarks/search_speed.py                 # random weights, configs/fashion_mnist.yaml
    python benchmarks/search_speed.py CKPT            # a trained checkpoint (copied first)
    python benchmarks/search_speed.py --groups        # also 2, 4, 6 groups (smaller stage lists)

The search runs on a copy of the checkpoint in a temporary folder, so nothing is resumed from an
earlier run: the uniform widths, the greedy pass from the full network to the smallest, the
front on the test set and its latency, all with the command's defaults (2000 validation images,
500 calibration images per candidate). Target: under 10 minutes on a 2-core CPU. The load
average and the process's CPU time are printed beside the wall time: on a shared machine the
wall time grows with the load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import usnet
from usnet import logs
from usnet.config import to_dict
from usnet.models.mobilenet_v1 import SMALL_BLOCKS
from usnet.search import Budget, SearchData, SearchSettings, search_checkpoint
from usnet.tasks import load_config

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 600.0


def random_checkpoint(folder: Path, blocks: tuple = SMALL_BLOCKS) -> Path:
    """US-MobileNet v1 small with random weights and the main job's config (its data)."""
    cfg = load_config(ROOT / "configs/fashion_mnist.yaml")
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v1_small", blocks=blocks)
    config = to_dict(cfg)
    config["model"]["kwargs"] = {"blocks": [list(b) for b in blocks]}
    return usnet.save(model, folder / "ckpt", meta={"config": config})


def timed_search(ckpt: Path, data: SearchData) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds (this process, all threads) and the search.json document."""
    start, cpu = time.perf_counter(), time.process_time()
    settings = SearchSettings("greedy", Budget(max_macs=1e6))
    doc = search_checkpoint(ckpt, settings, data)
    return time.perf_counter() - start, time.process_time() - cpu, doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", nargs="?", help="a trained checkpoint (default: random weights)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--groups", action="store_true", help="also time 2, 4 and 6 groups")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logs.configure(quiet=args.quiet)
    data = SearchData()
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[tuple[str, Path]] = []
        if args.checkpoint:
            shutil.copytree(args.checkpoint, Path(tmp) / "ckpt")
            runs.append(("8 groups (trained)", Path(tmp) / "ckpt"))
        else:
            runs.append(("8 groups", random_checkpoint(Path(tmp) / "g8")))
        if args.groups:
            for n in (1, 2, 3):  # stem + 1, 3, 5 blocks: 2, 4, 6 groups
                blocks = ((32, 1, 1), (64, 2, 1), (128, 2, 2))
                flat = [b for b in blocks for _ in range(b[1])][: 2 * n - 1]
                stages = tuple((c, 1, s) for c, _, s in flat)
                runs.append((f"{2 * n} groups", random_checkpoint(Path(tmp) / f"g{2 * n}", stages)))
        for label, ckpt in runs:
            seconds, cpu, doc = timed_search(ckpt, data)
            load = os.getloadavg()[0]
            status = "met" if seconds < TARGET_S else "MISSED"
            print(
                f"greedy search, {label}: {seconds:.0f} s wall, {cpu:.0f} CPU s "
                f"({doc['candidates']} networks measured, the search itself {doc['seconds']:.0f} "
                f"s, the front's test set and latency the rest); {args.threads} threads, load "
                f"average {load:.1f}; target < {TARGET_S:.0f} s wall: {status}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
