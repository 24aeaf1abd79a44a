"""Gather a plan: its committed results into one CSV, the summary the docs quote, and plots.

Reads only ``RESULTS/P/R.json`` (what the runner commits), never the run folders, so a fresh
clone regenerates every table and plot without the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import results
from .plan import Plan
from .records import read_json, write_text


def gather(plan: Plan, results_dir: Path) -> int:
    """Write RESULTS/P.csv from the committed results of the plan's runs, the summary, the plots."""
    docs: list[dict[str, Any]] = []
    missing: list[str] = []
    cpu, finished = 0.0, 0
    for run in plan.runs:
        doc = read_json(results.committed(results_dir, plan.name, run.name))
        if doc and doc.get("status") == "finished" and doc.get("spec") == run.spec(plan.config):
            docs.append(doc)
            cpu += sum(a.get("cpu_seconds") or 0 for a in doc.get("attempts", []))
            finished += 1
        else:
            missing.append(run.name)
    for b in plan.baselines:
        for name in b.runs:
            doc = read_json(results.committed(results_dir, b.plan, name))
            if doc and doc.get("status") == "finished":
                docs.append(doc)
            else:
                missing.append(f"{b.plan}/{name}")
    table = [row for doc in docs for row in results.rows(doc)]
    path = results_dir / f"{plan.name}.csv"
    results.write_csv(path, table)
    print(f"wrote {path}: {len(table)} rows")
    runs = f"{finished} finished run{'' if finished == 1 else 's'}"
    print(f"CPU time of its {runs}: {cpu / 3600:.2f} h (every attempt; baselines not counted)")
    if missing:
        print(f"not finished ({len(missing)}): {', '.join(missing)}")
    if table:
        from .plots import plot_all
        from .summary import summary_markdown, training_gap_markdown, training_loss_markdown

        rows = results.read_csv(path)
        tables = [t for t in (training_gap_markdown(docs), training_loss_markdown(docs)) if t]
        summary = results_dir / plan.name / "summary.md"
        during = "\n## During training\n\n" + "\n".join(tables) if tables else ""
        write_text(summary, f"# {plan.name}\n\n{summary_markdown(rows)}{during}")
        print(f"wrote {summary}")
        for p in plot_all(rows, results_dir / plan.name):
            print(f"wrote {p}")
    return 0
