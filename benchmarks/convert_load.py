"""Load time of converted checkpoints, with and without the recorded conversion.

    python benchmarks/convert_load.py [--repeats 5]

Saves a built-in model (us_mobilenet_v2) and converted torchvision ResNet-18 and ResNet-50
checkpoints in a temporary folder, then times ``usnet.load`` of each (median of ``--repeats``,
one thread, after one warm-up load): the converted ones as saved (their ``usnet.json`` records
the conversion, so the network is rebuilt without tracing) and with that record removed (a
checkpoint of an older usnet: traced, run on the example input and checked, as every load
did before the record existed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import usnet


def timed(folder: Path, repeats: int) -> float:
    usnet.load(folder)  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        usnet.load(folder)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("us_mobilenet_v2", "torchvision:resnet18", "torchvision:resnet50"):
            folder = Path(tmp) / name.replace(":", "_")
            usnet.save(usnet.create_model(name), folder)
            rows.append((name, "as saved", timed(folder, args.repeats)))
            info = folder / "usnet.json"
            doc = json.loads(info.read_text())
            if doc.get("conversion"):
                doc.pop("conversion")
                info.write_text(json.dumps(doc))
                rows.append((name, "without the record", timed(folder, args.repeats)))
    print("| checkpoint | usnet.json | load (s, median) |")
    print("|---|---|---:|")
    for name, how, seconds in rows:
        print(f"| {name} | {how} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
