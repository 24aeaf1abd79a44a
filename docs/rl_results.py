"""Rebuild the CartPole results of docs/rl.md from the run folders (see the commands there).

python docs/rl_results.py   ->  prints the tables, writes docs/rl_cartpole.png and
docs/rl_cartpole_curve.png from runs/rl_cartpole{,_nodistill,_individual}/seed*/.
"""

from __future__ import annotations

import json
import statistics as st
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from usnet.rl.evaluate import plot  # noqa: E402

DOCS = Path(__file__).parent
RUNS = {
    "US, sandwich + distillation": "runs/rl_cartpole",
    "US, sandwich, no distillation": "runs/rl_cartpole_nodistill",
    "individual (fixed width 1.0)": "runs/rl_cartpole_individual",
}


def aggregate(root: str, name: str) -> list[dict]:
    """Per width: the mean and std over seeds of each seed's mean return."""
    per = [json.loads(p.read_text()) for p in sorted(Path(root).glob(f"seed*/{name}"))]
    rows = []
    for i, r in enumerate(per[0]):
        means = [s[i]["return_mean"] for s in per]
        rows.append({**r, "return_mean": st.fmean(means), "return_std": st.pstdev(means)})
    return rows


def table(name: str) -> dict[str, list[dict]]:
    agg = {label: aggregate(root, name) for label, root in RUNS.items()}
    print(f"{name}:\n| width | MACs | params | " + " | ".join(agg) + " |")
    print("|---|---:|---:|" + "---:|" * len(agg))
    for i, r in enumerate(next(iter(agg.values()))):
        cells = [
            f"{rows[i]['return_mean']:.1f} ± {rows[i]['return_std']:.1f}" for rows in agg.values()
        ]
        print(f"| {r['width']} | {r['macs']:,} | {r['params']:,} | " + " | ".join(cells) + " |")
    return agg


def curves() -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, root in RUNS.items():
        logs = [
            [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(Path(root).glob("seed*/log.jsonl"))
        ]
        steps = [d["step"] for d in logs[0]]
        mean = [st.fmean(log[i]["return"] for log in logs) for i in range(len(steps))]
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
    try:
        table("spectrum_greedy.json")  # re-evaluations with greedy actions, where made
    except IndexError:
        pass
    ind = agg["individual (fixed width 1.0)"]
    spectra = {k: v for k, v in agg.items() if not k.startswith("individual")}
    spectra["individual, sliced (only 1.0 trained)"] = ind
    spectra["individual (fixed width 1.0)"] = [r for r in ind if r["width"] == "1"]
    plot(spectra, DOCS / "rl_cartpole.png", "CartPole-v1: return against MACs (3 seeds)")
    curves()
