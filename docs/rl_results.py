"""Rebuild the CartPole results of docs/rl.md from the run folders (see the commands there).

python docs/rl_results.py [ROOT]   ->  prints the tables, writes docs/rl_cartpole.png and
docs/rl_cartpole_curve.png from ROOT/rl_cartpole{,_nodistill,_individual}/seed*/ (ROOT: runs,
or benchmarks/results/rl, where the records the page quotes are committed).
"""

from __future__ import annotations

import contextlib
import csv
import statistics as st
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from usnet.spectrum import Metric, Spectrum, format_table, load_spectrum  # noqa: E402
from usnet.spectrum.plot import plot_spectrum  # noqa: E402

DOCS = Path(__file__).parent
ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
RUNS = {
    "US, sandwich + distillation": str(ROOT / "rl_cartpole"),
    "US, sandwich, no distillation": str(ROOT / "rl_cartpole_nodistill"),
    "individual (fixed width 1.0)": str(ROOT / "rl_cartpole_individual"),
}


def aggregate(root: str, name: str, label: str) -> Spectrum:
    """The first seed's spectrum with, per width, the mean and std over seeds of each seed's
    mean return (the run folders' ``seed*/NAME``, written by ``usnet train``)."""
    per = [load_spectrum(p) for p in sorted(Path(root).glob(f"seed*/{name}"))]
    if not per:
        raise FileNotFoundError(f"no {root}/seed*/{name}")
    spec = per[0]
    for i, row in enumerate(spec.rows):
        means = [s.rows[i].metrics["return_mean"] for s in per]
        row.metrics = {"return_mean": st.fmean(means), "return_std": st.pstdev(means)}
    spec.label = label
    return spec


def table(name: str) -> dict[str, Spectrum]:
    agg = {label: aggregate(root, name, label) for label, root in RUNS.items()}
    first = next(iter(agg.values()))
    rows, metrics = [], []
    for i, label in enumerate(agg):
        metrics += [Metric(f"m{i}", label, spread=f"s{i}"), Metric(f"s{i}", "± std", None)]
    for j, r in enumerate(first.rows):
        row = {"width": r.width, "macs": r.macs, "params": r.params}
        for i, spec in enumerate(agg.values()):
            m = spec.rows[j].metrics
            row |= {f"m{i}": m["return_mean"], f"s{i}": m["return_std"]}
        rows.append(row)
    print(f"{name}:\n{format_table(rows, 'markdown', metrics)}")
    return agg


def curves() -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, root in RUNS.items():
        logs = [
            list(csv.DictReader(p.open(newline="")))
            for p in sorted(Path(root).glob("seed*/metrics.csv"))
        ]
        steps = [int(d["step"]) for d in logs[0]]
        mean = [st.fmean(float(log[i]["return"]) for log in logs) for i in range(len(steps))]
        ax.plot(steps, mean, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training return (last 20 episodes, full width)")
    ax.set_title("CartPole-v1 training (mean of 3 seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "rl_cartpole_curve.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    agg = table("spectrum.json")
    with contextlib.suppress(FileNotFoundError):
        table("spectrum_greedy.json")  # re-evaluations with greedy actions, where made
    labels = list(agg)
    main, others = agg[labels[0]], [agg[k] for k in labels[1:]]
    ind = others.pop()  # the individually trained agent: its weights sliced, and its one width
    sliced = Spectrum.from_dict(ind.to_dict())
    sliced.label = "individual, sliced (only 1.0 trained)"
    ind.kind, ind.rows = "individual", [r for r in ind.rows if r.width == 1.0]
    main.baselines = [*others, sliced, ind]
    plot_spectrum(main, DOCS / "rl_cartpole.png")
    curves()
