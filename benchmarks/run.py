"""usnet performance benchmarks: is a switched US-Net as cheap as the network it stands for?

    python benchmarks/run.py                 # all five, US-MobileNet v2 at 224 px (~9 min, 1 thread)
    python benchmarks/run.py --quick         # a faster smoke run (fewer widths, repeats, images)
    python benchmarks/run.py --model tiny --quick --out /tmp/b.md   # seconds; what the test runs
    python benchmarks/run.py --model vit --only inference --out docs/benchmarks_vit.md  # a ViT
    python benchmarks/run.py --model vit224 --only inference --out docs/benchmarks_vit224.md

Each benchmark times two contenders side by side, interleaved, so that load from other jobs hits
both alike, and reports the medians after warm-up and their ratio. Times are the process's CPU
time by default (``--clock cpu``): on a shared machine, elapsed time mostly measures the other
jobs (with 1 thread CPU time is the work done; ``--clock wall`` for elapsed time). Paired cases
also show the quartiles of their per-pair ratios. ``--malloc keep`` keeps freed memory in the
process, so that page faults of memory the C library gave back to the system do not count.

1. inference: the US model switched to width w (eval, calibrated) vs its exported dense model.
2. switch: ``usnet.set_width`` (a cached width config, and a first-time one).
3. training: one sandwich-rule step (n=4, inplace distillation) vs the same four forward and
   backward passes on four separately built dense models of those widths.
4. calibration: images/s calibrating one width (``exact`` and ``single_pass``) vs a plain eval
   forward of the same images at that width (the same batches and memory format).
5. memory: peak RSS growth of a sandwich-rule step vs one full-width step of the dense model,
   each in a fresh process (CPU: torch allocations are invisible to tracemalloc).
6. compiled (only with ``--only compiled``: compiling takes minutes): ``usnet.compile`` of the
   US model at 3 widths vs ``torch.compile`` of the dense export of each width.

The results replace the block between the markers in ``--out`` (default docs/benchmarks.md);
text outside the markers (the analysis) is kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # measure.py, cases.py (also when imported)

import torch  # noqa: E402
from cases import (  # noqa: E402
    bench_calibration,
    bench_inference,
    bench_memory,
    bench_switch,
    bench_training,
    memory_probe,
)
from compiled import bench_compiled  # noqa: E402
from measure import CLOCKS, MODELS, Result, build, keep_freed_memory  # noqa: E402

import usnet  # noqa: E402

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
CLOCK_WORDS = {"cpu": "CPU time of the process", "wall": "elapsed (wall) time"}
MALLOC_WORDS = {
    "default": "the C library's default (glibc: large freed blocks go back to the system)",
    "keep": "freed memory kept in the process (`--malloc keep`)",
}
__all__ = ["END", "START", "Result", "main"]


# -- report ------------------------------------------------------------------------------------
def machine() -> dict:
    return {
        "cpu": usnet.profile.device_name("cpu"),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "usnet": usnet.__version__,
        "load": [round(v, 2) for v in os.getloadavg()],
    }


def markdown(results: list[Result], env: dict, command: str, seconds: float) -> str:
    lines = [
        START,
        f"Measured {env['date']} with `{command}` ({seconds:.0f} s).",
        "",
        f"- machine: {env['cpu']}, {env['cores']} cores; torch threads {env['threads']}; "
        f"clock: {CLOCK_WORDS[env['clock']]}",
        f"- allocator: {MALLOC_WORDS[env['malloc']]}",
        f"- torch {env['torch']}, Python {env['python']}, usnet {env['usnet']}",
        f"- load average (1/5/15 min) before: {env['load']}, after: {env['load_after']}",
        "",
        "| benchmark | case | US-Net | reference | unit | ratio | target | met | pairs (IQR) |",
        "|---|---|---:|---:|---|---:|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.bench} | {r.case} | {r.a_label} {r.a:.3f} | {r.b_label} {r.b:.3f} | {r.unit} "
            f"| {r.ratio:.3f} | {r.target} | {'yes' if r.met else '**no**'} | {r.spread} |"
        )
    met = sum(r.met for r in results)
    lines += ["", f"{met} of {len(results)} measurements meet their target.", END]
    return "\n".join(lines) + "\n"


def write(path: Path, block: str) -> None:
    """Replace the results block of ``path`` (create it with a title if missing)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n" + START + "\n" + END + "\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mobilenet", choices=MODELS)
    p.add_argument("--quick", action="store_true", help="fewer widths, repeats and images")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the "
        "machine is shared, and one thread gives repeatable ratios)",
    )
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="cpu",
        help="cpu (default): this process's CPU time, which other jobs on a shared machine do "
        "not inflate (with 1 thread: the work done); wall: elapsed time",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=("inference", "switch", "training", "calibration", "memory", "compiled"),
        help="run only these benchmarks (compiled runs only when named)",
    )
    p.add_argument(
        "--malloc",
        choices=tuple(MALLOC_WORDS),
        default="default",
        help="keep: glibc keeps freed memory in the process (no mmap, no trimming), so neither "
        "side pays page faults for memory it allocated before (default: the C library's own)",
    )
    default_out = Path(__file__).parent.parent / "docs/benchmarks.md"
    p.add_argument("--out", type=Path, default=default_out)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the compiled benchmark (default inductor)",
    )
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    p.add_argument("--memory-batch", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:  # a fresh process with the default allocator: RSS as users see it
        print(json.dumps(memory_probe(args.model, args.memory_probe, args.memory_batch)))
        return 0

    tiny, quick = args.model == "tiny", args.quick
    big = 8 if quick else 32
    plan: dict[str, Any] = {
        "widths": [0.35, 1.0] if quick else [0.35, 0.5, 0.75, 1.0],
        "inference": [(1, 5 if quick else 40), (big, 2 if quick else 12)],
        "switch_n": 200 if quick else 2000,
        "train_batch": 4 if quick or tiny else 8,
        "train_repeats": 2 if quick else 12,  # one pair's ratio strays +-5 % here
        "calib": (16, 32, 2) if quick else (32, 64, 4),  # batch, images, repeats
        "calib_cases": [(0.5, "NCHW"), (0.5, "channels-last")]
        if quick
        else [(0.35, "NCHW"), (0.5, "NCHW"), (1.0, "NCHW"), (0.5, "channels-last")],
        "memory_batch": 4 if quick or tiny else 8,
        "compiled_widths": [0.35, 1.0] if quick else [0.35, 0.5, 1.0],
        "compiled": [(1, 5 if quick else 20), (big, 2 if quick else 5)],
    }
    if tiny:  # tiny inputs: repeat more, the runs are microseconds
        plan["inference"] = [(1, 20), (big, 10)]
    selected = args.only or ["inference", "switch", "training", "calibration", "memory"]
    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **machine()}
    env["clock"], env["malloc"] = args.clock, args.malloc
    if args.malloc == "keep":
        keep_freed_memory()
    clock = CLOCKS[args.clock]
    print(
        f"usnet benchmarks: model {args.model}{' (quick)' if quick else ''}; {env['cpu']}, "
        f"{env['cores']} cores, {env['threads']} torch threads, torch {env['torch']}, "
        f"{args.clock} clock, {args.malloc} malloc, load {env['load']}",
        flush=True,
    )
    start = time.perf_counter()
    model = build(args.model)
    results: list[Result] = []
    if "inference" in selected:
        results += bench_inference(model, plan["widths"], plan["inference"], clock)
    if "switch" in selected:
        results += bench_switch(model, plan["switch_n"], clock)
    if "training" in selected:
        results += bench_training(model, plan["train_batch"], plan["train_repeats"], clock)
    if "calibration" in selected:
        batch, num, repeats = plan["calib"]
        results += bench_calibration(model, plan["calib_cases"], batch, num, repeats, clock)
    if "memory" in selected:
        results += bench_memory(args.model, plan["memory_batch"], args.threads)
    if "compiled" in selected:
        results += bench_compiled(
            model, plan["compiled_widths"], plan["compiled"], clock, args.compile_backend
        )
    seconds = time.perf_counter() - start
    env["load_after"] = [round(v, 2) for v in os.getloadavg()]
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    met = sum(r.met for r in results)
    print(
        f"{met} of {len(results)} measurements meet their target ({seconds:.0f} s; load "
        f"after {env['load_after']})"
    )
    if not args.no_write:
        write(args.out, markdown(results, env, command.strip(), seconds))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
