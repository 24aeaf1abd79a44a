"""The searches of docs/search.md's evidence, on the finished runs of the search_v1 plans.

    python benchmarks/search_evidence.py run  --runs runs/study [--only RUN ...] [--methods greedy]
        [--budgets 0.25 0.5] [--generations N] [--population N] [--dry-run]
    python benchmarks/search_evidence.py gather --runs runs/study --out benchmarks/results/search_v1.csv
    python benchmarks/search_evidence.py summary   # docs/search.md's tables, from the CSVs
    python benchmarks/search_evidence.py plot --run nonuniform-e4-s0   # docs/search_front_v1.png

The training runs come first, from the study runner::

    python -m benchmarks.study run benchmarks/plans/search_v1_mobilenet.yaml
    python -m benchmarks.study run benchmarks/plans/search_v1_resnet.yaml

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
import statistics
import subprocess
import sys
import time
from collections import defaultdict
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


def _top1(entry: dict[str, Any] | None, key: str) -> float | None:
    if not entry:
        return None
    v = entry.get(key, {}).get("top1")
    return None if v is None else round(100 * v, 3)


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
    for _, ckpt in checkpoints(runs):
        for file in searches(ckpt):
            doc = json.loads(file.read_text())
            doc.pop("trace", None)
            _, method, budget = file.stem.split("_")
            timing = ckpt / f"time_{method}_{budget}.json"
            doc["command_time"] = json.loads(timing.read_text()) if timing.is_file() else None
            target = results / ckpt.parent.name / file.name
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


def _spread(values: list[float]) -> str:
    """``mean`` or ``mean ± sample standard deviation (n)``, in points."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:+.2f} (1)"
    return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def summary(training_csv: Path, search_csv: Path) -> int:
    """Print question 1's and question 2's tables (markdown) from the committed CSVs."""
    top1: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    every: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)  # spectrum widths too
    if training_csv.is_file():
        for r in csv.DictReader(training_csv.open()):
            every[(r["method"], float(r["width"]))][int(r["seed"])] = 100 * float(r["top1"])
            if r["source"] == "train":
                top1[(r["method"], float(r["width"]))][int(r["seed"])] = 100 * float(r["top1"])
    print("| width | uniform training: top-1 % by seed | non-uniform | difference (points) |")
    print("|---:|---|---|---:|")
    for w in sorted({w for _, w in top1}, reverse=True):
        u, n = top1.get(("uniform", w), {}), top1.get(("nonuniform", w), {})
        both = sorted(set(u) & set(n))

        def show(d: dict[int, float]) -> str:
            return ", ".join(f"s{k}: {v:.2f}" for k, v in sorted(d.items())) or "-"

        print(f"| {w:g} | {show(u)} | {show(n)} | {_spread([n[s] - u[s] for s in both])} |")
    diffs = [
        n[s] - u[s]
        for w in sorted({w for _, w in every})
        for u, n in [(every.get(("uniform", w), {}), every.get(("nonuniform", w), {}))]
        for s in set(u) & set(n)
    ]
    if diffs:
        print(
            f"\nEvery width of the spectrum ({len(diffs)} width-seed pairs): non-uniform minus "
            f"uniform {statistics.mean(diffs):+.2f} points on average, {min(diffs):+.2f} to "
            f"{max(diffs):+.2f}, non-uniform ahead at {sum(d > 0 for d in diffs)}."
        )
    print()
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    if search_csv.is_file():
        for r in csv.DictReader(search_csv.open()):
            groups[(r["training"], r["method"], r["budget"])].append(r)
    print(
        "| training | method | budget | seeds | best uniform: width, test top-1 % | chosen: "
        "test gain (points) | validation-best: val gain | test gain |"
    )
    print("|---|---|---:|---|---|---:|---:|---:|")
    for (training, method, budget), rs in sorted(groups.items()):
        rs.sort(key=lambda r: int(r["seed"]))
        uni = ", ".join(
            f"s{r['seed']}: {json.loads(r['uniform_width'])} {float(r['uniform_test_top1']):.2f}"
            for r in rs
        )

        def gains(key: str, rows: list[dict[str, str]] = rs) -> str:
            return _spread([float(r[key]) for r in rows if r[key] not in ("", "None")])

        print(
            f"| {training} | {method} | {float(budget):.0%} | "
            f"{', '.join(r['seed'] for r in rs)} | {uni} | {gains('test_gain_points')} | "
            f"{gains('best_val_gain_points')} | {gains('best_test_gain_points')} |"
        )
    print()
    front_against_uniform(search_csv.with_suffix(""))
    print()
    print("| run | method | budget | networks in the search | measured anew | search (s) | command wall (s) | command CPU (s) | load average |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for rs in groups.values():
        for r in rs:
            print(f"| {r['run']} | {r['method']} | {float(r['budget']):.0%} | {r['candidates']} | "
                  f"{r['measured']} | {r['search_seconds']} | {r['command_wall_seconds']} | "
                  f"{r['command_cpu_seconds']} | {r['load_average']} |")  # fmt: skip
    return 0


def front_against_uniform(results: Path) -> None:
    """Each run's greedy front (its per-group members) against its uniform widths on the test
    set: test top-1 minus the uniform curve's at the same MACs (linear in MACs between the
    study's spectrum widths), by range of MACs."""
    import numpy as np

    print("| run | MACs | per-group front members | above the uniform curve | difference: mean, min, max (points) |")  # fmt: skip
    print("|---|---|---:|---:|---|")
    for folder in sorted(p for p in results.glob("*") if (p / "search_greedy_25.json").is_file()):
        record = json.loads(
            (results.parent / "search_v1_mobilenet" / f"{folder.name}.json").read_text()
        )
        xs, ys = zip(*sorted((w["macs"], 100 * w["top1"]) for w in record["widths"]), strict=True)
        front = json.loads((folder / "search_greedy_25.json").read_text())["front"]
        diffs = [
            (e["macs"], 100 * e["test_metrics"]["top1"] - float(np.interp(e["macs"], xs, ys)))
            for e in front
            if isinstance(e["width"], dict)
        ]
        for lo, hi in ((0, 1e6), (1e6, 2e6), (2e6, float("inf"))):
            d = [v for m, v in diffs if lo <= m < hi]
            span = f"{lo / 1e6:g}-{hi / 1e6:g} M" if hi < float("inf") else f">= {lo / 1e6:g} M"
            if d:
                print(f"| {folder.name} | {span} | {len(d)} | {sum(v > 0 for v in d)} | "
                      f"{statistics.mean(d):+.2f}, {min(d):+.2f}, {max(d):+.2f} |")  # fmt: skip


def plot(results: Path, run: str, out: Path) -> int:
    """One run's test top-1: uniform widths (its study record) and the searched networks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads((results.parent / "search_v1_mobilenet" / f"{run}.json").read_text())
    uniform = sorted((w["macs"] / 1e6, 100 * w["top1"]) for w in record["widths"])
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ax.plot(*zip(*uniform, strict=True), "o-", ms=3, label="uniform widths 0.25-1.0")
    folder = results / run
    greedy = json.loads((folder / "search_greedy_25.json").read_text())
    front = sorted((e["macs"] / 1e6, 100 * e["test_metrics"]["top1"]) for e in greedy["front"])
    ax.plot(*zip(*front, strict=True), "s--", ms=3, mfc="none", label="greedy front")
    for file in sorted(folder.glob("search_*_*.json")):
        doc = json.loads(file.read_text())
        ax.axvline(doc["budget"]["max_macs"] / 1e6, color="0.8", lw=0.8, zorder=0)
        for who, marker in (("best", "*"), ("chosen", "o")):
            e = doc.get(who)
            if e and e.get("test_metrics"):
                label = f"{doc['method']}: {'validation-best' if who == 'best' else 'chosen'}"
                color = "C2" if doc["method"] == "evolution" else "C3"
                ax.plot(e["macs"] / 1e6, 100 * e["test_metrics"]["top1"], marker, color=color,
                        ms=11 if who == "best" else 6, mfc="none" if who == "chosen" else color,
                        label=label)  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    ax.set(
        xlabel="MACs (millions)",
        ylabel="test top-1 (%)",
        title=f"us_mobilenet_v1_small, {run}: test set",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("run", "gather", "summary", "plot"))
    p.add_argument("--run", default="nonuniform-e4-s0", help="plot: the run drawn")
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
        return plot(args.out.with_suffix(""), args.run, Path("docs/search_front_v1.png"))
    if args.action == "summary":
        return summary(args.out.parent / "search_v1_mobilenet.csv", args.out)
    return gather(args.runs, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
