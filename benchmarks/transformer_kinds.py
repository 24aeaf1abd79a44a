"""Which kind of channel group costs a trained US-ViT least accuracy per MAC removed: heads, MLP
hidden units or the embedding (docs/transformers.md).

    python benchmarks/transformer_kinds.py CKPT --out docs/results/vit_kinds.csv

Each kind alone runs at 0.25, 0.5 and 0.75 (the other kinds at 1.0,
``usnet.convert.kind_widths``); the uniform widths are measured too. Every row: the MACs, the
top-1 accuracy on the checkpoint's evaluation data (its task's provider, as ``usnet spectrum``
measures it) and, against width 1.0, the accuracy lost per million MACs removed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import torch

import usnet
from usnet.checkpoint import load, read_meta
from usnet.convert import kind_widths
from usnet.convert.kinds import model_kinds
from usnet.errors import UsageError
from usnet.tasks import metric_provider


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True, help="CSV to write")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load(args.checkpoint)
    provider = metric_provider(model, read_meta(args.checkpoint))
    metric = provider.metrics[0].name
    configs: list[tuple[str, float, object]] = [("uniform", 1.0, 1.0)]
    try:
        kinds = model_kinds(model)
    except UsageError as e:
        raise SystemExit(f"{args.checkpoint}: {e}") from None
    for kind in ("heads", "mlp", "embedding"):
        if kind not in kinds:  # e.g. converted with the embedding kept
            print(f"{kind:9s} no channel group of this kind: not measured")
            continue
        configs += [(kind, w, kind_widths(model, **{kind: w})) for w in (0.75, 0.5, 0.25)]
    configs += [("uniform", w, w) for w in (0.75, 0.5, 0.25)]
    rows: list[dict[str, Any]] = []
    for kind, w, config in configs:
        macs = usnet.macs(model, config)  # type: ignore[arg-type]
        value = provider.evaluate(model, config)[metric]  # type: ignore[arg-type]
        rows.append({"kind": kind, "width": w, "macs": macs, metric: value})
    full = rows[0]
    for r in rows:
        removed = (full["macs"] - r["macs"]) / 1e6
        r["lost_per_mmac"] = (full[metric] - r[metric]) / removed if removed else 0.0
        print(f"{r['kind']:9s} {r['width']:.2f} {r['macs'] / 1e6:6.2f} M  {metric} {r[metric]:.4f}"
              f"  lost per M MACs removed {r['lost_per_mmac']:.4f}", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
