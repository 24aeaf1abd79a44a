"""Which calibration a search can afford: few images, ``single_pass``, against the reference.

    python benchmarks/search_calibration.py CKPT                  # 20 random per-group widths
    python benchmarks/search_calibration.py CKPT --widths 40 --val-samples 2000

Each candidate of a search is calibrated before it is measured, so calibration is most of its
cost. For random per-group widths of CKPT (seeded), every setting calibrates afresh and measures
top-1 on the search's validation images; the reference is ``exact`` from 2000 images. Printed
per setting: the mean and largest absolute difference in top-1 from the reference (points), the
Spearman rank correlation with it (what a search's choices depend on), and the seconds one
calibration takes. A setting is as good as the reference when its differences are within the
validation set's own sampling noise and the ranks agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import usnet
from usnet.calibration import calibrate, collect_batches
from usnet.latency import random_widths
from usnet.nn import WidthConfig
from usnet.spectrum import ProviderOptions
from usnet.tasks import metric_provider

SETTINGS = (
    ("exact", 2000),
    ("exact", 500),
    ("single_pass", 500),
    ("exact", 250),
    ("single_pass", 250),
)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else 1.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--widths", type=int, default=20, help="random per-group widths")
    p.add_argument("--val-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = usnet.load(args.checkpoint)
    meta = usnet.checkpoint.read_meta(args.checkpoint)
    most = max(n for _, n in SETTINGS)
    options = ProviderOptions(None, args.val_samples, most, split="validation")
    provider = metric_provider(model, meta, options)
    assert provider.calibration is not None
    batches = collect_batches(provider.calibration(), most)
    widths: list[WidthConfig] = [0.25, 0.5, 1.0, *random_widths(model, args.widths, args.seed)]
    print(f"{args.checkpoint}: {len(widths)} widths, top-1 on {provider.data_note}")
    results: dict[tuple[str, int], list[float]] = {}
    seconds: dict[tuple[str, int], float] = {}
    for method, n in SETTINGS:
        top1, spent = [], 0.0
        for w in widths:
            start = time.perf_counter()
            calibrate(model, batches, [w], n, method)
            spent += time.perf_counter() - start
            top1.append(provider(model, w)["top1"])
        results[(method, n)], seconds[(method, n)] = top1, spent / len(widths)
    ref = results[SETTINGS[0]]
    print("| calibration | mean abs diff (points) | max abs diff | rank corr. | s / calibration |")
    print("|---|---:|---:|---:|---:|")
    for key, top1 in results.items():
        diffs = [100 * abs(a - b) for a, b in zip(top1, ref, strict=True)]
        print(
            f"| {key[0]} {key[1]} | {statistics.fmean(diffs):.3f} | {max(diffs):.2f} | "
            f"{spearman(top1, ref):.3f} | {seconds[key]:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
