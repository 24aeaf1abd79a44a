"""usnet performance benchmarks (issue 4): is a switched US-Net as cheap as the network it stands for?

    python benchmarks/run.py                 # all five, US-MobileNet v2 at 224 px (~2 min, 1 thread)
    python benchmarks/run.py --quick         # a faster smoke run (fewer widths, repeats, images)
    python benchmarks/run.py --model tiny --quick --out /tmp/b.md   # seconds; what the test runs

Each benchmark times two contenders side by side, interleaved, so that load from other jobs hits
both alike, and reports the medians after warm-up and their ratio:

1. inference: the US model switched to width w (eval, calibrated) vs its exported dense model.
2. switch: ``usnet.set_width`` (a cached width config, and a first-time one).
3. training: one sandwich-rule step (n=4, inplace distillation) vs the same four forward and
   backward passes on four separately built dense models of those widths.
4. calibration: images/s calibrating one width (``exact`` and ``single_pass``) vs a plain eval
   forward at that width.
5. memory: peak RSS growth of a sandwich-rule step vs one full-width step of the dense model,
   each in a fresh process (CPU: torch allocations are invisible to tracemalloc).

The results replace the block between the markers in ``--out`` (default docs/benchmarks.md);
text outside the markers (the analysis) is kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import usnet
from usnet.calibration import calibrate
from usnet.export import extract
from usnet.nn import width_space
from usnet.tasks.classification.loss import ClassificationLoss, soft_cross_entropy
from usnet.training.step import sandwich_step

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
TINY = {"input_size": 16, "blocks": ((1, 8, 1, 1), (6, 16, 2, 2)), "last_channels": 64}


@dataclass
class Result:
    """One side-by-side measurement: ``a`` (the US-Net) against ``b`` (the reference)."""

    bench: str
    case: str
    a_label: str
    a: float
    b_label: str
    b: float
    unit: str
    target: str  # e.g. "<= 1.05" on a / b
    extra: dict = field(default_factory=dict)
    paired: float | None = None  # median of per-pair ratios, when the runs were paired

    @property
    def ratio(self) -> float:
        if self.paired is not None:
            return self.paired
        return self.a / self.b if self.b > 0 else float("inf")

    @property
    def met(self) -> bool:
        op, value = self.target.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def line(self) -> str:
        return (
            f"{self.bench:<11} {self.case:<24} {self.a_label} {self.a:9.3f} {self.unit:<5} "
            f"{self.b_label} {self.b:9.3f} {self.unit:<5} ratio {self.ratio:6.3f} "
            f"(target {self.target}: {'met' if self.met else 'MISSED'})"
        )


# -- set-up -----------------------------------------------------------------------------------
def build(name: str) -> nn.Module:
    """US-MobileNet v2 (224 px, ImageNet) or a tiny one (16 px) with random weights."""
    torch.manual_seed(0)
    if name == "mobilenet":
        return usnet.create_model("us_mobilenet_v2")
    if name == "tiny":
        return usnet.create_model("us_mobilenet_v2_small", **TINY)
    raise ValueError(f"--model {name!r} is unknown; allowed: mobilenet, tiny")


def calibrate_on_noise(model: nn.Module, widths: list) -> None:
    """Calibrated statistics for ``widths`` from random inputs: their values do not matter for speed."""
    calibrate(model, [inputs(model, 2)], widths, 2, "single_pass", progress=False)


def inputs(model: nn.Module, batch: int) -> torch.Tensor:
    return torch.randn(batch, *model.input_size, generator=torch.Generator().manual_seed(1))


def interleaved(
    a: Callable[[], object], b: Callable[[], object], warmup: int, repeats: int
) -> tuple[float, float, float]:
    """Median seconds of ``a`` and ``b`` over ``repeats`` back-to-back pairs after ``warmup``,
    and the median of the pairs' ratios ``a/b``.

    The order within a pair alternates, and a pair's two runs see the same machine load, so the
    paired ratio stays stable on a busy machine where the medians of each side drift.
    """
    ta: list[float] = []
    tb: list[float] = []
    for i in range(warmup + repeats):
        for f, times in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            start = time.perf_counter()
            f()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
    ratio = statistics.median(x / y for x, y in zip(ta, tb, strict=True))
    return statistics.median(ta), statistics.median(tb), ratio


# -- 1. inference ------------------------------------------------------------------------------
def bench_inference(model: nn.Module, widths: list[float], plan: list[tuple[int, int]]) -> list:
    """US model at width w vs ``extract(model, w)``, eval, ``torch.inference_mode``."""
    calibrate_on_noise(model, widths)
    model.eval()
    out = []
    for w in widths:
        dense = extract(model, w)
        for batch, repeats in plan:
            x = inputs(model, batch)
            usnet.set_width(model, w)
            with torch.inference_mode():
                tu, td, ratio = interleaved(
                    lambda x=x: model(x), lambda x=x, d=dense: d(x), 2, repeats
                )
            out.append(
                Result(
                    "inference",
                    f"w={w} batch={batch}",
                    "us",
                    tu * 1e3,
                    "dense",
                    td * 1e3,
                    "ms",
                    "<= 1.05",
                    {"repeats": repeats},
                    ratio,
                )
            )
            print(out[-1].line(), flush=True)
    usnet.set_width(model, 1.0)
    return out


# -- 2. width switch ---------------------------------------------------------------------------
def bench_switch(model: nn.Module, n: int) -> list:
    """``usnet.set_width``: alternating two cached configs, and ``n`` never-seen widths."""
    space = width_space(model)
    lo, hi = space.width_min, space.width_max
    usnet.set_width(model, lo)
    usnet.set_width(model, hi)
    # cached: two known widths in turn (each call resolves from the cache)
    best_cached = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            usnet.set_width(model, lo if i % 2 else hi)
        best_cached = min(best_cached, (time.perf_counter() - start) / n)
    # first time: every width new (distinct at the 6 decimals widths are compared to)
    fresh = [round(lo + (hi - lo) * (i + 0.5) / (n + 1), 6) for i in range(n)]
    start = time.perf_counter()
    for w in fresh:
        usnet.set_width(model, w)
    first = (time.perf_counter() - start) / n
    usnet.set_width(model, hi)
    out = [
        Result(
            "switch",
            "cached config",
            "set_width",
            best_cached * 1e6,
            "target",
            100.0,
            "us",
            "<= 1.0",
            {"groups": len(space.groups)},
        ),
        Result(
            "switch",
            "first-time config",
            "set_width",
            first * 1e6,
            "target",
            100.0,
            "us",
            "<= 1.0",
            {"groups": len(space.groups)},
        ),
    ]
    for r in out:
        print(r.line(), flush=True)
    return out


# -- 3. training -------------------------------------------------------------------------------
def dense_step(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
    """The sandwich step's four passes on separate dense models: labels, then distillation."""
    teacher = None
    for m in models:
        logits = m(x)
        if teacher is None:
            loss = F.cross_entropy(logits, y)
            teacher = F.softmax(logits.detach(), dim=-1)
        else:
            loss = soft_cross_entropy(logits, teacher)
        loss.backward()


def bench_training(model: nn.Module, batch: int, repeats: int) -> list:
    space = width_space(model)
    rng = random.Random(0)
    widths = [space.width_max, space.width_min] + sorted(
        round(rng.uniform(space.width_min, space.width_max), 3) for _ in range(2)
    )
    dense = [extract(model, w, stats=False).train() for w in widths]
    model.train()
    x = inputs(model, batch)
    classes = model(x[:2]).shape[-1]
    y = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(2))

    def us() -> None:
        model.zero_grad(set_to_none=True)
        sandwich_step(model, x, y, widths, ClassificationLoss())

    def ref() -> None:
        for m in dense:
            m.zero_grad(set_to_none=True)
        dense_step(dense, x, y)

    tu, td, ratio = interleaved(us, ref, 1, repeats)
    model.eval()
    usnet.set_width(model, space.width_max)
    r = Result(
        "training",
        f"batch={batch} n=4",
        "us",
        tu * 1e3,
        "dense",
        td * 1e3,
        "ms",
        "<= 1.05",
        {"widths": widths, "repeats": repeats},
        ratio,
    )
    print(r.line() + f"  widths {widths}", flush=True)
    return [r]


# -- 4. calibration ----------------------------------------------------------------------------
def bench_calibration(model: nn.Module, w: float, batch: int, num: int, repeats: int) -> list:
    """Images/s of ``usnet.calibrate`` at one width vs an eval forward of the same images."""
    calibrate_on_noise(model, [w])
    model.eval()
    batches = [inputs(model, batch)[: min(batch, num - i)] for i in range(0, num, batch)]
    out = []
    for method in ("exact", "single_pass"):

        def cal(method: str = method) -> None:
            calibrate(model, batches, [w], num, method, progress=False)

        def forward() -> None:
            with torch.inference_mode(), usnet.width(model, w):
                for xb in batches:
                    model(xb)

        tc, tf, ratio = interleaved(cal, forward, 1, repeats)
        r = Result(
            "calibration",
            f"w={w} {method}",
            "calib",
            num / tc,
            "eval",
            num / tf,
            "img/s",
            ">= 0.9",
            {"images": num, "batch": batch, "repeats": repeats},
            1 / ratio,
        )
        print(r.line(), flush=True)
        out.append(r)
    return out


# -- 5. memory ---------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_probe(name: str, which: str, batch: int) -> dict:
    """In a fresh process: RSS before one step and the peak RSS after it (MiB)."""
    model = build(name)
    space = width_space(model)
    x = inputs(model, batch)
    y = torch.zeros(batch, dtype=torch.long)
    if which == "sandwich":
        model.train()
        lo, hi = space.width_min, space.width_max
        widths = [hi, lo, 0.5 * (lo + hi), hi - 0.1 * (hi - lo)]
        loss = ClassificationLoss()
        step: Callable[[], object] = lambda: sandwich_step(model, x, y, widths, loss)  # noqa: E731
    elif which == "dense":
        dense = extract(model, space.width_max, stats=False).train()
        del model
        step = lambda: F.cross_entropy(dense(x), y).backward()  # noqa: E731
    else:
        raise ValueError(f"memory probe {which!r}: allowed sandwich, dense")
    before = _rss_mb()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"before_mb": before, "peak_mb": peak, "step_mb": peak - before}


def bench_memory(name: str, batch: int, threads: int) -> list:
    probes = {}
    for which in ("sandwich", "dense"):
        cmd = [
            sys.executable,
            __file__,
            "--model",
            name,
            "--threads",
            str(threads),
            "--memory-probe",
            which,
            "--memory-batch",
            str(batch),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory probe {which} failed:\n{done.stderr[-2000:]}")
        probes[which] = json.loads(done.stdout.strip().splitlines()[-1])
    s, d = probes["sandwich"], probes["dense"]
    r = Result(
        "memory",
        f"batch={batch} step",
        "us",
        s["step_mb"],
        "dense",
        max(d["step_mb"], 1e-3),
        "MiB",
        "<= 1.05",
        {f"{side}_{k}": v for side, p in probes.items() for k, v in p.items()},
    )
    print(r.line() + f"  (peak RSS {s['peak_mb']:.0f} vs {d['peak_mb']:.0f} MiB)", flush=True)
    return [r]


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
        f"- machine: {env['cpu']}, {env['cores']} cores; torch threads {env['threads']}",
        f"- torch {env['torch']}, Python {env['python']}, usnet {env['usnet']}",
        f"- load average (1/5/15 min) before: {env['load']}, after: {env['load_after']}",
        "",
        "| benchmark | case | US-Net | reference | unit | ratio | target | met |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.bench} | {r.case} | {r.a_label} {r.a:.3f} | {r.b_label} {r.b:.3f} | {r.unit} "
            f"| {r.ratio:.3f} | {r.target} | {'yes' if r.met else '**no**'} |"
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
    p.add_argument("--model", default="mobilenet", choices=("mobilenet", "tiny"))
    p.add_argument("--quick", action="store_true", help="fewer widths, repeats and images")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the "
        "machine is shared, and one thread gives repeatable ratios)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=("inference", "switch", "training", "calibration", "memory"),
        help="run only these benchmarks",
    )
    default_out = Path(__file__).parent.parent / "docs/benchmarks.md"
    p.add_argument("--out", type=Path, default=default_out)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    p.add_argument("--memory-batch", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.model, args.memory_probe, args.memory_batch)))
        return 0

    tiny, quick = args.model == "tiny", args.quick
    big = 8 if quick else 32
    plan = {
        "widths": [0.35, 1.0] if quick else [0.35, 0.5, 0.75, 1.0],
        "inference": [(1, 5 if quick else 20), (big, 2 if quick else 5)],
        "switch_n": 200 if quick else 2000,
        "train_batch": 4 if quick or tiny else 8,
        "train_repeats": 2 if quick else 4,
        "calib": (16, 32, 2) if quick else (32, 64, 3),  # batch, images, repeats
        "memory_batch": 4 if quick or tiny else 8,
    }
    if tiny:  # tiny inputs: repeat more, the runs are microseconds
        plan["inference"] = [(1, 20), (big, 10)]
    selected = args.only or ["inference", "switch", "training", "calibration", "memory"]
    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **machine()}
    print(
        f"usnet benchmarks: model {args.model}{' (quick)' if quick else ''}; {env['cpu']}, "
        f"{env['cores']} cores, {env['threads']} torch threads, torch {env['torch']}, "
        f"load {env['load']}",
        flush=True,
    )
    start = time.perf_counter()
    model = build(args.model)
    results: list[Result] = []
    if "inference" in selected:
        results += bench_inference(model, plan["widths"], plan["inference"])
    if "switch" in selected:
        results += bench_switch(model, plan["switch_n"])
    if "training" in selected:
        results += bench_training(model, plan["train_batch"], plan["train_repeats"])
    if "calibration" in selected:
        batch, num, repeats = plan["calib"]
        results += bench_calibration(model, 0.5, batch, num, repeats)
    if "memory" in selected:
        results += bench_memory(args.model, plan["memory_batch"], args.threads)
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
