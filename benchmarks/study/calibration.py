"""The calibration study: how many images, and which estimator, post-statistics BN needs.

One trained US-Net checkpoint; for every (num_samples, method, subset seed) setting a fresh copy
of it is calibrated at every width of the grid from scratch, timed, and evaluated on the test
split. Top-1 at each width is compared with the reference setting (default: 10000 images,
``exact``, seed 0). Each setting's result is a small JSON under RESULTS/calibration/, written as
soon as it is measured, so an interrupted study carries on where it stopped; the CSV and the
plot are rebuilt from those files at the end. Plan (``benchmarks/plans/calibration.yaml``)::

    checkpoint: {plan: schedule_v1, run: us-e4-s0}   # RUNS/PLAN/RUN/checkpoint
    widths: "0.25:1.0:0.05"
    num_samples: [250, 500, 1000, 2000, 10000]
    methods: [exact, single_pass]
    seeds: [0, 1, 2]
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .plan import PlanError
from .records import machine, now, read_json, software, write_json
from .results import write_csv

COLUMNS = (
    "num_samples", "method", "seed", "width", "top1", "top1_reference", "diff_pp", "seconds",
    "seconds_per_width", "threads",
)  # fmt: skip


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str
    run: str


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_samples: int = 10000
    method: str = "exact"
    seed: int = 0


class CalibrationPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    checkpoint: Checkpoint
    widths: str
    num_samples: list[int] = Field(min_length=1)
    methods: list[str] = ["exact", "single_pass"]
    seeds: list[int] = [0]
    reference: Reference = Reference()
    batch_size: int = Field(200, ge=1)
    threads: int = Field(1, ge=1)


def load_calibration_plan(path: Path) -> CalibrationPlan:
    if not path.is_file():
        raise PlanError(f"plan {str(path)!r} does not exist")
    try:
        return CalibrationPlan.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as e:
        first = e.errors()[0]
        raise PlanError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def measure(
    ckpt: Path, widths: list[float], num_samples: int, method: str, seed: int, batch_size: int
) -> dict[str, Any]:
    """Calibrate a fresh copy of ``ckpt`` at ``widths`` and evaluate it on the test split."""
    from usnet import checkpoint
    from usnet.calibration import calibrate, clear_calibration
    from usnet.data import calibration_loader, create_dataset, create_loader
    from usnet.tasks.classification.evaluate import evaluate

    meta = checkpoint.read_meta(ckpt)
    data = meta["config"]["data"]
    model = checkpoint.load(ckpt)
    clear_calibration(model)
    loader = calibration_loader(data["name"], data["root"], num_samples, batch_size, seed=seed)
    t0 = time.perf_counter()
    calibrate(model, loader, widths, num_samples, method)
    seconds = time.perf_counter() - t0
    test = create_dataset(data["name"], data["root"], "test")
    val = create_loader(test, data["val_batch_size"], shuffle=False, num_workers=0)
    return {
        "seconds": round(seconds, 3),
        "widths": [{"width": w, **evaluate(model, val, w)} for w in widths],
    }


def run_calibration(plan_path: Path, runs_dir: Path, results_dir: Path) -> int:
    import torch

    from usnet import checkpoint
    from usnet.nn import parse_widths

    plan = load_calibration_plan(plan_path)
    ckpt = runs_dir / plan.checkpoint.plan / plan.checkpoint.run / "checkpoint"
    if not (ckpt / "usnet.json").is_file():
        raise PlanError(
            f"{plan_path}: checkpoint {ckpt} does not exist: run plan {plan.checkpoint.plan} first"
        )
    save_id = checkpoint.read_info(ckpt)["save_id"]
    widths = parse_widths(plan.widths)
    torch.set_num_threads(plan.threads)
    out = results_dir / plan_path.stem
    ref = plan.reference
    settings = [(ref.num_samples, ref.method, ref.seed)] + [
        (n, m, s) for n in plan.num_samples for m in plan.methods for s in plan.seeds
    ]
    docs = {}
    for n, m, s in dict.fromkeys(settings):
        path = out / f"n{n}-{m}-s{s}.json"
        doc = read_json(path)
        if not doc or doc.get("save_id") != save_id or doc.get("grid") != plan.widths:
            doc = {
                "checkpoint": str(ckpt), "save_id": save_id, "grid": plan.widths,
                "num_samples": n, "method": m, "seed": s, "threads": plan.threads,
                "date": now(), "machine": machine(), **software(),
                **measure(ckpt, widths, n, m, s, plan.batch_size),
            }  # fmt: skip
            write_json(path, doc)
            print(f"{path.name}: {doc['seconds']:.1f} s for {len(widths)} widths", flush=True)
        docs[(n, m, s)] = doc
    reference = {
        w["width"]: w["top1"] for w in docs[(ref.num_samples, ref.method, ref.seed)]["widths"]
    }
    table = [
        {
            "num_samples": n,
            "method": m,
            "seed": s,
            "width": w["width"],
            "top1": w["top1"],
            "top1_reference": reference[w["width"]],
            "diff_pp": round(100 * (w["top1"] - reference[w["width"]]), 3),
            "seconds": d["seconds"],
            "seconds_per_width": round(d["seconds"] / len(widths), 4),
            "threads": d["threads"],
        }  # fmt: skip
        for (n, m, s), d in docs.items()
        for w in d["widths"]
    ]
    csv_path = results_dir / f"{plan_path.stem}.csv"
    write_csv(csv_path, table, COLUMNS)
    print(f"wrote {csv_path} and {plot_calibration(table, out / 'calibration.png')}")
    return 0


def plot_calibration(table: list[dict[str, Any]], path: Path) -> Path:
    """Mean and max |top-1 difference| to the reference over widths and seeds, and the time,
    against the number of calibration images, one line per estimator."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in table:
        groups[(r["method"], r["num_samples"])].append(r)
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    diff_ax, time_ax = fig.subplots(1, 2)
    for method in dict.fromkeys(r["method"] for r in table):
        ns = sorted(n for m, n in groups if m == method)
        mean = [statistics.fmean(abs(r["diff_pp"]) for r in groups[(method, n)]) for n in ns]
        worst = [max(abs(r["diff_pp"]) for r in groups[(method, n)]) for n in ns]
        secs = [statistics.fmean(r["seconds_per_width"] for r in groups[(method, n)]) for n in ns]
        (line,) = diff_ax.plot(ns, mean, marker="o", label=f"{method} mean")
        diff_ax.plot(
            ns, worst, marker="v", linestyle=":", color=line.get_color(), label=f"{method} max"
        )
        time_ax.plot(ns, secs, marker="o", label=method)
    diff_ax.set(xscale="log", xlabel="calibration images", ylabel="|top-1 - reference| (points)")
    time_ax.set(xscale="log", yscale="log", xlabel="calibration images", ylabel="seconds per width")
    for ax in (diff_ax, time_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
