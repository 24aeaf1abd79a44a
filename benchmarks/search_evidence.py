"""The searches of docs/search.md's evidence, on the finished runs of the search_v1 plans.

    python benchmarks/search_evidence.py run  --runs runs/study [--dry-run]
    python benchmarks/search_evidence.py gather --runs runs/study --out benchmarks/results/search_v1.csv

The training runs come first, from the study runner::

    python -m benchmarks.study run benchmarks/plans/search_v1_mobilenet.yaml
    python -m benchmarks.study run benchmarks/plans/search_v1_resnet.yaml

``run`` then searches every finished checkpoint of those plans (uniformly and non-uniformly
trained, every seed): greedy once (one pass; each budget's chosen network is read from the same
measurements, so the second and third budgets cost only their test-set checks) and evolution
once per budget, at 25 %, 50 % and 75 % of the network's full MACs. Each search is resumable
(``usnet search`` keeps its measurements), and one whose output exists is skipped, so ``run``
can be stopped and started again. ``gather`` writes one CSV row per run, network, seed, budget
and method: the chosen network against the best uniform width within the budget, on the
validation split and the test set.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import usnet

PLANS = {"search_v1_mobilenet": "us_mobilenet_v1_small", "search_v1_resnet": "torchvision:resnet18"}
BUDGETS = (0.25, 0.5, 0.75)
METHODS = ("greedy", "evolution")
#: Per network: options that keep a search's cost in hand (ResNet-18's candidates cost ~7x).
OPTIONS = {
    "search_v1_mobilenet": [],
    "search_v1_resnet": ["--step", "0.1", "--val-samples", "1000"],
}
FIELDS = (
    "plan", "run", "network", "training", "seed", "budget", "max_macs", "method",
    "chosen_width", "chosen_macs", "chosen_val_top1", "chosen_test_top1",
    "uniform_width", "uniform_macs", "uniform_val_top1", "uniform_test_top1",
    "best_width", "best_macs", "best_val_top1", "best_test_top1", "min_gain_points",
    "test_gain_points", "val_gain_points", "candidates", "search_seconds", "validation",
)  # fmt: skip


def checkpoints(runs: Path) -> list[tuple[str, Path]]:
    """Every finished checkpoint of the plans: ``(plan, RUNS/PLAN/RUN/checkpoint)``."""
    found = []
    for plan in PLANS:
        for record in sorted((runs / plan).glob("*/study.json")):
            if json.loads(record.read_text()).get("status") == "finished":
                found.append((plan, record.parent / "checkpoint"))
    return found


def commands(plan: str, ckpt: Path) -> list[tuple[Path, list[str]]]:
    """The searches of one checkpoint: ``(output file, usnet arguments)``."""
    full = usnet.macs(usnet.load(ckpt), 1.0)
    out = []
    for method in METHODS:
        for budget in BUDGETS:
            file = ckpt / f"search_{method}_{round(100 * budget)}.json"
            args = ["search", str(ckpt), "--max-macs", str(int(budget * full)), "--method", method]
            out.append((file, [*args, *OPTIONS[plan], "--out", str(file), "--quiet"]))
    return out


def run(runs: Path, dry: bool, usnet_cmd: list[str]) -> int:
    todo = [
        args
        for plan, ckpt in checkpoints(runs)
        for file, args in commands(plan, ckpt)
        if not file.is_file()
    ]
    print(f"{len(todo)} searches to run")
    for args in todo:
        print(" ".join([*usnet_cmd, *args]), flush=True)
        if not dry:
            subprocess.run([*usnet_cmd, *args], check=True)
    return 0


def _top1(entry: dict[str, Any] | None, key: str) -> float | None:
    if not entry:
        return None
    v = entry.get(key, {}).get("top1")
    return None if v is None else round(100 * v, 3)


def rows(runs: Path) -> list[dict[str, Any]]:
    out = []
    for plan, ckpt in checkpoints(runs):
        config = usnet.checkpoint.read_meta(ckpt)["config"]
        for file in sorted(ckpt.glob("search_*_*.json")):
            doc = json.loads(file.read_text())
            c, u, b = doc.get("chosen"), doc.get("best_uniform"), doc.get("best")
            row = {
                "plan": plan,
                "run": ckpt.parent.name,
                "network": PLANS[plan],
                "training": "nonuniform" if config["train"].get("nonuniform") else "uniform",
                "seed": config["train"]["seed"],
                "budget": int(file.stem.rsplit("_", 1)[1]) / 100,
                "max_macs": doc["budget"]["max_macs"],
                "method": doc["method"],
                "chosen_width": json.dumps(c and c["width"]),
                "chosen_macs": c and c["macs"],
                "chosen_val_top1": _top1(c, "metrics"),
                "chosen_test_top1": _top1(c, "test_metrics"),
                "uniform_width": json.dumps(u and u["width"]),
                "uniform_macs": u and u["macs"],
                "uniform_val_top1": _top1(u, "metrics"),
                "uniform_test_top1": _top1(u, "test_metrics"),
                "best_width": json.dumps(b and b["width"]),
                "best_macs": b and b["macs"],
                "best_val_top1": _top1(b, "metrics"),
                "best_test_top1": _top1(b, "test_metrics"),
                "min_gain_points": round(100 * doc.get("min_gain", 0.0), 3),
                "candidates": doc["candidates"],
                "search_seconds": round(doc["seconds"]),
                "validation": doc["validation"]["split"],
            }
            for split in ("test", "val"):
                a, b = row[f"chosen_{split}_top1"], row[f"uniform_{split}_top1"]
                row[f"{split}_gain_points"] = None if a is None or b is None else round(a - b, 3)
            out.append(row)
    return out


def gather(runs: Path, out: Path) -> int:
    found = rows(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(found)
    print(f"wrote {len(found)} rows to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("run", "gather"))
    p.add_argument("--runs", type=Path, default=Path("runs/study"), help="the study's runs folder")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/search_v1.csv"))
    p.add_argument("--dry-run", action="store_true", help="print the searches, run none")
    args = p.parse_args(argv)
    if args.action == "run":
        return run(args.runs, args.dry_run, [sys.executable, "-m", "usnet"])
    return gather(args.runs, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
