"""The searches of docs/search.md's evidence, on the finished runs of the search_v1 plans.

    python benchmarks/search_evidence.py run  --runs runs/study [--only RUN ...] [--methods greedy]
        [--budgets 0.25 0.5] [--generations N] [--population N] [--dry-run]
    python benchmarks/search_evidence.py gather --runs runs/study --out benchmarks/results/search_v1.csv
    python benchmarks/search_evidence.py summary   # docs/search.md's tables, from the CSVs
    python benchmarks/search_evidence.py plot --run nonuniform-e4-s0   # docs/search_front_v1.png

The training runs come first, from the study runner::

    python -m benchmarks.study run benchmarks/plans/search_v1_mobilenet.yaml
    python -m benchmarks.study run benchmarks/plans/search_v1_resnet10t.yaml

``run`` then searches every finished checkpoint of those plans (uniformly and non-uniformly
trained, every seed): greedy once (one pass; each budget's chosen network is read from the same
measurements, so the second and third budgets cost only their test-set checks) and evolution
once per budget, at 25 %, 50 % and 75 % of the network's full MACs. Each search is resumable
(``usnet search`` keeps its measurements), and one whose output exists is skipped, so ``run``
can be stopped and started again. ``--only``, ``--methods``, ``--budgets``, ``--generations``
and ``--population`` run part of that when CPU time is short; every search.json records what
ran (method, step, validation images, evolution's population and generations), and ``run``
writes each command's wall and CPU time and load average beside it (``time_METHOD_BUDGET.json``).
``gather`` writes one CSV row per run, network, seed, budget and method: the chosen network
(and the validation-best one) against the best uniform width within the budget, on the
validation split and the test set; and a copy of every search.json, less its per-step trace,
under ``RESULTS/search_v1/RUN/`` (the runs folder is not committed). ``summary`` prints the
evidence tables from the committed CSVs alone: the training plan's (question 1: top-1 at the
uniform widths, uniform against non-uniform training) and search_v1.csv (question 2: searched
against the best uniform width, mean and spread over seeds). ``plot`` draws one run's greedy
front on the test set beside its uniform widths' test top-1 (the study's spectrum of it), from
the committed records alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import usnet

sys.path.insert(0, str(Path(__file__).parent))  # search_evidence_report.py
from search_evidence_report import PLANS, plot, record_name, summary, top1  # noqa: E402

BUDGETS = (0.25, 0.5, 0.75)
METHODS = ("greedy", "evolution")
#: Per network: options that keep a search's cost in hand (ResNet-18's candidates cost ~7x).
OPTIONS = {
    "search_v1_mobilenet": [],
    "search_v1_resnet": ["--step", "0.1", "--val-samples", "1000"],
    "search_v1_resnet10t": [],
}
FIELDS = (
    "plan", "run", "network", "training", "seed", "budget", "max_macs", "method",
    "chosen_width", "chosen_macs", "chosen_val_top1", "chosen_test_top1",
    "uniform_width", "uniform_macs", "uniform_val_top1", "uniform_test_top1",
    "best_width", "best_macs", "best_val_top1", "best_test_top1", "min_gain_points",
    "test_gain_points", "val_gain_points", "best_test_gain_points", "best_val_gain_points",
    "step", "val_samples", "population", "generations", "candidates", "measured", "resumed",
    "search_seconds", "command_wall_seconds", "command_cpu_seconds", "load_average",
    "validation",
)  # fmt: skip


def checkpoints(runs: list[Path], only: list[str] | None = None) -> list[tuple[str, Path]]:
    """Every finished checkpoint of the plans in the runs folders: ``(plan,
    RUNS/PLAN/RUN/checkpoint)``; ``only``: those runs (names)."""
    found = []
    for folder in runs:
        for plan in PLANS:
            for record in sorted((folder / plan).glob("*/study.json")):
                if only and record.parent.name not in only:
                    continue
                if json.loads(record.read_text()).get("status") == "finished":
                    found.append((plan, record.parent / "checkpoint"))
    return found


def commands(
    plan: str,
    ckpt: Path,
    methods: tuple[str, ...] = METHODS,
    budgets: tuple[float, ...] = BUDGETS,
    extra: tuple[str, ...] = (),
) -> list[tuple[Path, list[str]]]:
    """The searches of one checkpoint: ``(output file, usnet arguments)``; ``extra``: more
    ``usnet search`` options (evolution's alone go to evolution)."""
    full = usnet.macs(usnet.load(ckpt), 1.0)
    out = []
    for method in methods:
        for budget in budgets:
            file = ckpt / f"search_{method}_{round(100 * budget)}.json"
            args = ["search", str(ckpt), "--max-macs", str(int(budget * full)), "--method", method]
            more = list(extra) if method == "evolution" else []
            out.append((file, [*args, *OPTIONS[plan], *more, "--out", str(file), "--quiet"]))
    return out


def timed(command: list[str]) -> dict[str, Any]:
    """Run ``command``; its wall and CPU seconds and the load average around it."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    load = os.getloadavg()[0]
    subprocess.run(command, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {
        "command": command,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(cpu, 1),
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def run(runs: list[Path], dry: bool, usnet_cmd: list[str], **which: Any) -> int:
    only, extra = which.pop("only", None), which.pop("extra", ())
    todo = [
        (file, args)
        for plan, ckpt in checkpoints(runs, only)
        for file, args in commands(plan, ckpt, extra=extra, **which)
        if not file.is_file()
    ]
    print(f"{len(todo)} searches to run")
    for file, args in todo:
        print(" ".join([*usnet_cmd, *args]), flush=True)
        if not dry:
            record = timed([*usnet_cmd, *args])
            _, method, budget = file.stem.split("_")
            (file.parent / f"time_{method}_{budget}.json").write_text(json.dumps(record, indent=1))
    return 0


def searches(ckpt: Path) -> list[Path]:
    """The search files ``run`` wrote in a checkpoint folder."""
    return sorted(f for f in ckpt.glob("search_*_*.json") if f.stem.split("_")[-1].isdigit())


def rows(runs: list[Path]) -> list[dict[str, Any]]:
    out = []
    for plan, ckpt in checkpoints(runs):
        config = usnet.checkpoint.read_meta(ckpt)["config"]
        for file in searches(ckpt):
            doc = json.loads(file.read_text())
            _, method, budget = file.stem.split("_")
            timing = ckpt / f"time_{method}_{budget}.json"
            took = json.loads(timing.read_text()) if timing.is_file() else {}
            evo = doc.get("evolution") or {}
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
                "chosen_val_top1": top1(c, "metrics"),
                "chosen_test_top1": top1(c, "test_metrics"),
                "uniform_width": json.dumps(u and u["width"]),
                "uniform_macs": u and u["macs"],
                "uniform_val_top1": top1(u, "metrics"),
                "uniform_test_top1": top1(u, "test_metrics"),
                "best_width": json.dumps(b and b["width"]),
                "best_macs": b and b["macs"],
                "best_val_top1": top1(b, "metrics"),
                "best_test_top1": top1(b, "test_metrics"),
                "min_gain_points": round(100 * doc.get("min_gain", 0.0), 3),
                "step": doc.get("step"),
                "val_samples": doc["validation"].get("samples"),
                "population": evo.get("population"),
                "generations": evo.get("generations"),
                "candidates": doc["candidates"],
                "measured": doc.get("measured"),
                "resumed": doc.get("resumed"),
                "search_seconds": round(doc["seconds"]),
                "command_wall_seconds": took.get("wall_seconds"),
                "command_cpu_seconds": took.get("cpu_seconds"),
                "load_average": json.dumps(took.get("load_average")),
                "validation": doc["validation"]["split"],
            }
            for split in ("test", "val"):
                u = row[f"uniform_{split}_top1"]
                for who, name in (
                    ("chosen", f"{split}_gain_points"),
                    ("best", f"best_{split}_gain_points"),
                ):
                    a = row[f"{who}_{split}_top1"]
                    row[name] = None if a is None or u is None else round(a - u, 3)
            out.append(row)
    return out


def copy_records(runs: list[Path], results: Path) -> int:
    """Copy every search.json (less the per-step trace) with its timing to RESULTS/RUN/."""
    n = 0
    for plan, ckpt in checkpoints(runs):
        for file in searches(ckpt):
            doc = json.loads(file.read_text())
            doc.pop("trace", None)
            _, method, budget = file.stem.split("_")
            timing = ckpt / f"time_{method}_{budget}.json"
            doc["command_time"] = json.loads(timing.read_text()) if timing.is_file() else None
            target = results / record_name(plan, ckpt.parent.name) / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(doc, indent=1) + "\n")
            n += 1
    return n


def gather(runs: list[Path], out: Path) -> int:
    found = rows(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(found)
    copied = copy_records(runs, out.with_suffix(""))
    print(f"wrote {len(found)} rows to {out}, {copied} search records to {out.with_suffix('')}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("run", "gather", "summary", "plot"))
    p.add_argument(
        "--run", default="nonuniform-e4-s0",
        help="plot: the run drawn (its record's name: resnet10t-RUN for the ResNet-10-T's)",
    )  # fmt: skip
    p.add_argument("--plot", type=Path, default=Path("docs/search_front_v1.png"), help="plot: the file")
    p.add_argument(
        "--runs", type=Path, nargs="+", default=[Path("runs/study")],
        help="the study's runs folders (--runs-dir of its runners)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/search_v1.csv"))
    p.add_argument("--only", nargs="+", metavar="RUN", help="only these runs (names)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS), metavar="FRACTION")
    p.add_argument("--population", type=int, help="evolution's population (usnet's default: 24)")
    p.add_argument("--generations", type=int, help="evolution's generations (default: 10)")
    p.add_argument("--dry-run", action="store_true", help="print the searches, run none")
    args = p.parse_args(argv)
    if args.action == "run":
        extra = [
            *(["--population", str(args.population)] if args.population else []),
            *(["--generations", str(args.generations)] if args.generations is not None else []),
        ]
        return run(
            args.runs,
            args.dry_run,
            [sys.executable, "-m", "usnet"],
            only=args.only,
            methods=tuple(args.methods),
            budgets=tuple(args.budgets),
            extra=tuple(extra),
        )
    if args.action == "plot":
        return plot(args.out.with_suffix(""), args.run, args.plot)
    if args.action == "summary":
        return summary(args.out.parent, args.out)
    return gather(args.runs, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
