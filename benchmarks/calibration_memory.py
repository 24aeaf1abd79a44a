"""Peak memory and CPU time of one ``usnet.calibrate`` call, each in a fresh process.

    python benchmarks/calibration_memory.py                      # exact at 3 budgets, single_pass
    python benchmarks/calibration_memory.py --images 64 --width 0.5

US-MobileNet v2 at 224 px with random weights and inputs. The RSS growth (peak - before, MiB) is
what calibration adds to the model and the collected inputs; ``cache_bytes`` bounds the
activations ``exact`` keeps (docs/benchmarks.md, "Calibration memory").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

import usnet
from usnet.calibration import calibrate


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def probe(method: str, budget: int | None, images: int, width: float) -> dict:
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v2")
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(32, 3, 224, 224, generator=gen) for _ in range(images // 32)]
    before = _rss_mb()
    start = time.process_time()
    calibrate(model, batches, [width], images, method, cache_bytes=budget)
    cpu = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"growth_mb": round(peak - before), "cpu_s": round(cpu, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=128, help="a multiple of 32")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)  # METHOD BUDGET, in a child
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.probe:
        method, budget = args.probe
        result = probe(method, None if budget == "auto" else int(budget), args.images, args.width)
        print(json.dumps(result))
        return 0
    print(f"calibrate {args.images} images of 224 px at width {args.width} (1 thread):")
    for method, budget in (
        ("exact", "auto"),
        ("exact", str(256 << 20)),
        ("exact", str(32 << 20)),
        ("single_pass", "auto"),
    ):
        cmd = [sys.executable, __file__, "--images", str(args.images), "--width", str(args.width)]
        done = subprocess.run(
            cmd + ["--probe", method, budget], capture_output=True, text=True, check=True
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        shown = budget if budget == "auto" else f"{int(budget) >> 20} MiB"
        print(
            f"  {method:<12} cache_bytes {shown:>8}: RSS growth {r['growth_mb']:5d} MiB, "
            f"CPU {r['cpu_s']:5.1f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
