"""Speed of converted networks: a switched US model against its dense export, and conversion time.

    python benchmarks/convert_speed.py                  # resnet50, mobilenet_v3_large, 224 px
    python benchmarks/convert_speed.py --side 160 --rounds 10

For each model: ``usnet.convert`` time (random weights, 224 px example; median of a few runs),
then eval latency at widths 0.5 and 0.75 of the US model (calibrated, switched to the width)
and of its dense export (``usnet.export.extract``), batch 1, one thread, ``torch.inference_mode``.
The two contenders are timed in pairs, alternating, with ``torch.utils.benchmark`` (``--rounds``
pairs of ``blocked_autorange``-free fixed-count measurements), so load from other jobs hits both
alike; the table gives the median of the per-pair ratios and the ratio of the fastest runs
(target <= 1.05). The table replaces the block between the markers in ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch.utils import benchmark

import usnet
from usnet.export import extract
from usnet.profile import device_name

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- speed:start -->", "<!-- speed:end -->"


def convert_time(
    net: torch.nn.Module, x: torch.Tensor, repeats: int
) -> tuple[float, torch.nn.Module]:
    times: list[float] = []
    model = net
    for _ in range(repeats):
        start = time.perf_counter()
        model = usnet.convert(net, x)
        times.append(time.perf_counter() - start)
    return statistics.median(times), model


def paired(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, rounds: int, number: int):
    """Median ms of ``a`` and ``b`` over alternating measurements, and the median ratio."""
    ta: list[float] = []
    tb: list[float] = []
    timers = [benchmark.Timer("m(x)", globals={"m": m, "x": x}, num_threads=1) for m in (a, b)]
    with torch.inference_mode():
        for m in (a, b):  # warm-up: caches, allocator
            for _ in range(3):
                m(x)
        for i in range(rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for k in order:
                ms = timers[k].timeit(number).median * 1e3
                (ta if k == 0 else tb).append(ms)
    ratios = [p / q for p, q in zip(ta, tb, strict=True)]
    return (
        statistics.median(ta),
        statistics.median(tb),
        statistics.median(ratios),
        min(ta) / min(tb),
    )


def run(name: str, side: int, rounds: int, number: int) -> list[dict]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, side, side)
    seconds, model = convert_time(net, torch.randn(2, 3, 224, 224), 3)
    model.input_size = (3, side, side)  # type: ignore[assignment]
    batches = [torch.randn(8, 3, side, side) for _ in range(2)]
    usnet.calibrate(model, batches, widths=[0.5, 0.75], method="single_pass")
    model.eval()
    rows = []
    for w in (0.5, 0.75):
        dense = extract(model, w)
        usnet.set_width(model, w)
        slim_ms, dense_ms, ratio, best = paired(model, dense, x, rounds, number)
        rows.append(
            dict(model=name, width=w, macs=usnet.macs(model, w), slim_ms=slim_ms,
                 dense_ms=dense_ms, ratio=ratio, best=best, convert_s=seconds)
        )  # fmt: skip
        print(
            f"{name} @ {w}: US {slim_ms:.2f} ms, dense {dense_ms:.2f} ms, paired ratio "
            f"{ratio:.3f}, ratio of minima {best:.3f}; convert {seconds:.2f} s",
            flush=True,
        )
    usnet.set_width(model, 1.0)
    return rows


def table(rows: list[dict], side: int, rounds: int, number: int) -> str:
    lines = [
        f"Measured on {datetime.date.today().isoformat()}, {device_name()}, 1 thread, torch "
        f"{torch.__version__}, batch 1, {side} px, {rounds} alternating pairs of {number} runs "
        "(`python benchmarks/convert_speed.py`).",
        "",
        "| model | width | MACs | US model (ms) | dense export (ms) | ratio (paired median) "
        "| ratio (minima) | convert (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['width']:g} | {r['macs'] / 1e6:.0f} M | {r['slim_ms']:.2f} | "
            f"{r['dense_ms']:.2f} | {r['ratio']:.3f} | {r['best']:.3f} | {r['convert_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v3_large"])
    p.add_argument("--side", type=int, default=224)
    p.add_argument("--rounds", type=int, default=10, help="alternating pairs per width")
    p.add_argument("--number", type=int, default=5, help="runs per measurement")
    p.add_argument("--out", type=Path, default=ROOT / "docs/convert.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [r for name in args.models for r in run(name, args.side, args.rounds, args.number)]
    block = table(rows, args.side, args.rounds, args.number)
    print(block)
    if args.out.is_file() and START in args.out.read_text():
        text = args.out.read_text()
        head, rest = text.split(START, 1)
        args.out.write_text(head + START + "\n" + block + "\n" + END + rest.split(END, 1)[1])
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
