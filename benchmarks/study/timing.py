"""Measure the CPU time of a full epoch of each method of a plan from a short run.

Each method trains 2 epochs of ``--steps`` steps (one thread) through the real ``usnet train``.
The second epoch's loop time (metrics.csv ``seconds``; the first includes warm-up) gives the
time per step; the gap between the two epoch lines of its output, less that loop time, is the
validation ``usnet train`` runs after every epoch (calibrate and evaluate the end widths); the
time before the first epoch line and after the last one is the per-run cost (start-up, final
calibration and evaluation of the grid, checkpoints). A full epoch is then
``steps_per_epoch * step + validation``. Wall-clock times on a shared machine include waiting
for a core, so the plan's table takes CPU seconds: each wall time scaled by the child's CPU
seconds per wall second over the whole timing run (the record keeps both, and the load).
"""

from __future__ import annotations

import csv
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .plan import Plan
from .process import reap, spawn
from .records import load, machine, now, software


def measure_method(
    plan: Plan,
    method: str,
    usnet: list[str],
    root: Path,
    steps: int = 40,
    steps_per_epoch: int = 468,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Time ``method`` of ``plan`` (its overrides, seed 0) for 2 short epochs; see the module."""
    run = next((r for r in plan.runs if r.method == method), None)
    if run is None:
        raise ValueError(f"plan {plan.name} has no run of method {method!r}")
    with tempfile.TemporaryDirectory(prefix="usnet-timing-") as tmp:
        overrides = [o for o in run.overrides if not o.startswith(("train.epochs=", "train.seed="))]
        overrides += ["train.epochs=2", f"train.max_steps_per_epoch={steps}", "train.seed=0"]
        overrides += [*extra, f"output.dir={tmp}/run"]
        command = [*usnet, "train", plan.config, "--no-progress"]
        for o in overrides:
            command += ["--set", o]
        load_before = load()
        t0 = time.perf_counter()
        proc = spawn(command, {"OMP_NUM_THREADS": str(plan.threads)}, subprocess.PIPE, root)
        assert proc.stdout is not None
        epoch_lines: list[float] = []
        output: list[str] = []
        for line in proc.stdout:
            output.append(line)
            if line.startswith("epoch="):
                epoch_lines.append(time.perf_counter())
        done = reap(proc, block=True)
        t_end = time.perf_counter()
        assert done is not None
        if done.code != 0 or len(epoch_lines) != 2:
            tail = "".join(output[-5:])
            raise RuntimeError(f"timing run of {method!r} failed (exit {done.code}):\n{tail}")
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    loop = [float(r["seconds"]) for r in rows]
    step = loop[1] / steps
    validation = epoch_lines[1] - epoch_lines[0] - loop[1]
    per_run = (epoch_lines[0] - t0 - loop[0] - validation) + (t_end - epoch_lines[1])
    wall = t_end - t0
    cpu_share = done.cpu_seconds / wall  # < 1 while other jobs take the core
    return {
        "method": method,
        "step_seconds": round(step, 5),
        "validation_seconds": round(validation, 2),
        "epoch_seconds": round(steps_per_epoch * step + validation, 1),
        "run_seconds": round(per_run, 1),
        "images_per_s": round(float(rows[1]["images_per_s"]), 1),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(done.cpu_seconds, 1),
        "cpu_per_wall": round(cpu_share, 3),
        "epoch_cpu_seconds": round((steps_per_epoch * step + validation) * cpu_share, 1),
        "run_cpu_seconds": round(per_run * cpu_share, 1),
        "load_before": load_before,
        "load_after": load(),
    }


def measure_plan(
    plan: Plan,
    methods: list[str] | None,
    usnet: list[str],
    root: Path,
    steps: int = 40,
    steps_per_epoch: int = 468,
    extra: tuple[str, ...] = (),
    repeat: int = 1,
) -> dict[str, Any]:
    """Time each method (default: all the plan's) ``repeat`` times, keep the fastest (CPU
    seconds: the try least slowed by other jobs), and return the record with its context."""
    names = methods or list(dict.fromkeys(r.method for r in plan.runs))
    results = []
    for m in names:
        tries = [
            measure_method(plan, m, usnet, root, steps, steps_per_epoch, extra)
            for _ in range(repeat)
        ]
        r = min(tries, key=lambda t: t["epoch_cpu_seconds"])  # the least disturbed
        r["tries_epoch_cpu_seconds"] = [t["epoch_cpu_seconds"] for t in tries]
        print(
            f"{m}: {r['epoch_seconds']} s/epoch ({r['step_seconds'] * 1000:.1f} ms/step, "
            f"validation {r['validation_seconds']} s), {r['run_seconds']} s/run; "
            f"{r['epoch_cpu_seconds']} CPU s/epoch (tries {r['tries_epoch_cpu_seconds']}); "
            f"cpu/wall {r['cpu_per_wall']}, load {r['load_before']}",
            flush=True,
        )
        results.append(r)
    return {
        "plan": plan.name,
        "date": now(),
        "machine": machine(),
        "threads": plan.threads,
        **software(),
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "methods": results,
    }


def timing_yaml(record: dict[str, Any]) -> str:
    """The plan's ``timing:`` block for these measurements."""
    m = record["machine"]
    lines = [
        "timing:",
        f'  measured: "{record["date"][:10]}, {m["cpu"]}, {m["cores"]} cores (shared), '
        f'{record["threads"]} thread, torch {record["torch"]}"',
        "  seconds_per_epoch:",
        *(f"    {r['method']}: {r['epoch_cpu_seconds']}" for r in record["methods"]),
        "  seconds_per_run:",
        *(f"    {r['method']}: {r['run_cpu_seconds']}" for r in record["methods"]),
    ]
    return "\n".join(lines)
