"""Re-evaluate docs/rl.md's CartPole runs with greedy actions (the most likely action, not a
sample): ``eval.greedy: true`` on the checkpoint's recorded config, the same episodes and widths.

python docs/rl_greedy.py   ->  runs/rl_cartpole{,_nodistill,_individual}/seed*/spectrum_greedy.json,
which docs/rl_results.py tabulates next to the sampled returns.
"""

from __future__ import annotations

import json
from pathlib import Path

from usnet import checkpoint
from usnet.config.widths import width_grid
from usnet.spectrum import compute_spectrum
from usnet.tasks import metric_provider

if __name__ == "__main__":
    for ckpt in sorted(Path("runs").glob("rl_cartpole*/seed*/checkpoint")):
        model, meta = checkpoint.load(ckpt), checkpoint.read_meta(ckpt)
        config = meta["config"]
        greedy = {**meta, "config": {**config, "eval": {**config["eval"], "greedy": True}}}
        provider = metric_provider(model, greedy)
        widths = width_grid(config["eval"]["widths"])
        spec = compute_spectrum(model, widths, provider, latency=False, label="greedy")
        (ckpt.parent / "spectrum_greedy.json").write_text(json.dumps(spec.to_dict(), indent=2))
        print(ckpt.parent, [round(r.metrics["return_mean"], 1) for r in spec.rows])
