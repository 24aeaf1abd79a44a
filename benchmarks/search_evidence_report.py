"""The report half of benchmarks/search_evidence.py: docs/search.md's tables (``summary``) and
its plot of one run's greedy front (``plot``), read from the committed records alone, so that
what the doc says can be regenerated without the runs folder."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

#: The evidence's training plans and their networks. Each search's record is kept under
#: ``RESULTS/search_v1/NAME/``, NAME its run's name, prefixed for every plan but the first (run
#: names repeat across plans: ``nonuniform-e4-s0``).
PLANS = {
    "search_v1_mobilenet": "us_mobilenet_v1_small",
    "search_v1_resnet": "torchvision:resnet18",
    "search_v1_resnet10t": "timm:resnet10t",
}
FIRST = next(iter(PLANS))


def record_name(plan: str, run: str) -> str:
    """The folder of ``plan``'s run ``run`` under RESULTS/search_v1/."""
    return run if plan == FIRST else f"{plan.removeprefix('search_v1_')}-{run}"


def plan_of(name: str) -> tuple[str, str]:
    """``(plan, run)`` of a record folder's name (:func:`record_name`'s inverse)."""
    for plan in PLANS:
        prefix = f"{plan.removeprefix('search_v1_')}-"
        if plan != FIRST and name.startswith(prefix):
            return plan, name.removeprefix(prefix)
    return FIRST, name


def top1(entry: dict[str, Any] | None, key: str) -> float | None:
    if not entry:
        return None
    v = entry.get(key, {}).get("top1")
    return None if v is None else round(100 * v, 3)


def _spread(values: list[float]) -> str:
    """``mean`` or ``mean ± sample standard deviation (n)``, in points."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:+.2f} (1)"
    return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def summary(results: Path, search_csv: Path) -> int:
    """Print questions 1, 2 and 3's tables (markdown) from the committed CSVs in ``results``."""
    for plan, network in PLANS.items():
        training_csv = results / f"{plan}.csv"
        if training_csv.is_file():
            print(f"**{network}** ({plan}):\n")
            question_1(training_csv)
            print()
    groups: dict[tuple[str, str, str, str], list[dict[str, str]]] = defaultdict(list)
    if search_csv.is_file():
        for r in csv.DictReader(search_csv.open()):
            groups[(r["plan"], r["training"], r["method"], r["budget"])].append(r)
    print(
        "| network | training | method | budget | seeds | best uniform: width, test top-1 % | "
        "chosen: test gain (points) | validation-best: val gain | test gain |"
    )
    print("|---|---|---|---:|---|---|---:|---:|---:|")
    for (plan, training, method, budget), rs in sorted(groups.items()):
        rs.sort(key=lambda r: int(r["seed"]))
        uni = ", ".join(
            f"s{r['seed']}: {json.loads(r['uniform_width'])} {float(r['uniform_test_top1']):.2f}"
            for r in rs
        )

        def gains(key: str, rows: list[dict[str, str]] = rs) -> str:
            return _spread([float(r[key]) for r in rows if r[key] not in ("", "None")])

        print(
            f"| {PLANS.get(plan, plan)} | {training} | {method} | {float(budget):.0%} | "
            f"{', '.join(r['seed'] for r in rs)} | {uni} | {gains('test_gain_points')} | "
            f"{gains('best_val_gain_points')} | {gains('best_test_gain_points')} |"
        )
    print()
    min_gain_rules(search_csv)
    print()
    front_against_uniform(search_csv.with_suffix(""))
    print()
    for scratch in sorted(results.glob("autoslim_v1*.csv")):
        print(f"{scratch.stem}:\n")
        from_scratch(scratch)
        print()
    print()
    print("| run | method | budget | networks in the search | measured anew | search (s) | command wall (s) | command CPU (s) | load average |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for rs in groups.values():
        for r in rs:
            print(f"| {r['run']} | {r['method']} | {float(r['budget']):.0%} | {r['candidates']} | "
                  f"{r['measured']} | {r['search_seconds']} | {r['command_wall_seconds']} | "
                  f"{r['command_cpu_seconds']} | {r['load_average']} |")  # fmt: skip
    return 0


def question_1(training_csv: Path) -> None:
    """Question 1's table: test top-1 at the trained widths, uniform against non-uniform training."""
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


def min_gain_rules(search_csv: Path) -> None:
    """What each search would have chosen with ``--min-gain`` at 0, 1 and 2 standard errors,
    from the CSV's validation-best network and best uniform width (``min_gain_points`` is what
    the search ran with): how often a per-group network is chosen and how it does on the test
    set against the uniform width."""
    rows = list(csv.DictReader(search_csv.open())) if search_csv.is_file() else []
    keys = ("best_val_gain_points", "best_test_gain_points", "uniform_val_top1", "val_samples")
    rows = [r for r in rows if all(r.get(k) not in (None, "", "None") for k in keys)]

    def error(r: dict[str, str]) -> float:
        """One standard error of the best uniform width's validation top-1, in points (whatever
        ``--min-gain`` the search ran with)."""
        p = float(r["uniform_val_top1"]) / 100
        return 100 * (p * (1 - p) / int(r["val_samples"])) ** 0.5

    print("| network | --min-gain | searches | per-group chosen | of them better on test | worse | test gain, mean over all searches (points) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for plan in sorted({r["plan"] for r in rows}):
        mine = [r for r in rows if r["plan"] == plan]
        for k in (0, 1, 2):
            picked = [
                float(r["best_test_gain_points"])
                for r in mine
                if float(r["best_val_gain_points"]) > 0
                and float(r["best_val_gain_points"]) >= k * error(r)
            ]
            print(
                f"| {PLANS.get(plan, plan)} | {k} SE | {len(mine)} | {len(picked)} | "
                f"{sum(g > 0 for g in picked)} | {sum(g < 0 for g in picked)} | "
                f"{sum(picked) / len(mine):+.3f} |"
            )


def from_scratch(autoslim_csv: Path) -> None:
    """Question 3's table: each network of benchmarks/plans/autoslim_v1.yaml trained from
    scratch at its one width, test top-1 by seed, and its difference from the uniform width."""
    by: dict[str, dict[int, tuple[float, int]]] = defaultdict(dict)
    if autoslim_csv.is_file():
        for r in csv.DictReader(autoslim_csv.open()):
            by[r["method"]][int(r["seed"])] = (100 * float(r["top1"]), int(r["macs"]))
    uniform = next((v for k, v in by.items() if k.startswith("uniform")), {})
    print("| network (trained from scratch) | MACs | test top-1 % by seed | minus uniform (points) |")
    print("|---|---:|---|---:|")
    for method, seeds in sorted(by.items()):
        shown = ", ".join(f"s{k}: {v[0]:.2f}" for k, v in sorted(seeds.items()))
        both = sorted(set(seeds) & set(uniform))
        diff = "" if seeds is uniform else _spread([seeds[s][0] - uniform[s][0] for s in both])
        macs = {v[1] for v in seeds.values()}
        print(f"| {method} | {', '.join(f'{m / 1e6:.2f} M' for m in sorted(macs))} | {shown} | {diff} |")


def front_against_uniform(results: Path) -> None:
    """Each run's greedy front (its per-group members) against its uniform widths on the test
    set: test top-1 minus the uniform curve's at the same MACs (linear in MACs between the
    study's spectrum widths), by range of MACs."""
    import numpy as np

    print("| run | MACs | per-group front members | above the uniform curve | difference: mean, min, max (points) |")  # fmt: skip
    print("|---|---|---:|---:|---|")
    for folder in sorted(p for p in results.glob("*") if (p / "search_greedy_25.json").is_file()):
        plan, run = plan_of(folder.name)
        record = json.loads((results.parent / plan / f"{run}.json").read_text())
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

    plan, name = plan_of(run)
    record = json.loads((results.parent / plan / f"{name}.json").read_text())
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
        title=f"{PLANS[plan]}, {name}: test set",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0
