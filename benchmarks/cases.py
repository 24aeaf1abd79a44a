"""The five benchmarks (docs/benchmarks.md): each returns its side-by-side :class:`Result` rows."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from measure import Result, build, calibrate_on_noise, inputs, interleaved
from torch import nn

import usnet
from usnet.calibration import calibrate
from usnet.export import extract
from usnet.nn import width_space
from usnet.tasks.classification.loss import ClassificationLoss, soft_cross_entropy
from usnet.training.step import sandwich_step

Clock = Callable[[], float]
RUN = Path(__file__).with_name("run.py")  # the memory probes run it in fresh processes


# -- 1. inference ------------------------------------------------------------------------------
def bench_inference(
    model: nn.Module, widths: list[float], plan: list[tuple[int, int]], clock: Clock
) -> list:
    """US model at width w vs ``extract(model, w)``, eval, ``torch.inference_mode``: as it
    runs by default (eval keeps views of the weights, checked on every call) and inside
    ``usnet.frozen(model)`` (contiguous, unchecked: the serving form)."""
    calibrate_on_noise(model, widths)
    model.eval()
    out = []
    for w in widths:
        dense = extract(model, w)
        for batch, repeats in plan:
            x = inputs(model, batch)
            usnet.set_width(model, w)
            for frozen in (False, True):
                with torch.inference_mode(), usnet.frozen(model) if frozen else nullcontext():
                    tu, td, pairs = interleaved(
                        partial(model, x), partial(dense, x), 2, repeats, clock
                    )
                out.append(
                    Result(
                        "inference",
                        f"w={w} batch={batch}" + (" frozen" if frozen else ""),
                        "us",
                        tu * 1e3,
                        "dense",
                        td * 1e3,
                        "ms",
                        "<= 1.05",
                        {"repeats": repeats},
                        pairs,
                    )
                )
                print(out[-1].line(), flush=True)
    usnet.set_width(model, 1.0)
    return out


# -- 2. width switch ---------------------------------------------------------------------------
def bench_switch(model: nn.Module, n: int, clock: Clock) -> list:
    """``usnet.set_width``: alternating two cached configs, and ``n`` never-seen widths."""
    space = width_space(model)
    lo, hi = space.width_min, space.width_max
    usnet.set_width(model, lo)
    usnet.set_width(model, hi)
    # cached: two known widths in turn (each call resolves from the cache)
    best_cached = float("inf")
    for _ in range(5):
        start = clock()
        for i in range(n):
            usnet.set_width(model, lo if i % 2 else hi)
        best_cached = min(best_cached, (clock() - start) / n)
    # first time: every width new (distinct at the 6 decimals widths are compared to)
    fresh = [round(lo + (hi - lo) * (i + 0.5) / (n + 1), 6) for i in range(n)]
    start = clock()
    for w in fresh:
        usnet.set_width(model, w)
    first = (clock() - start) / n
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


def bench_training(model: nn.Module, batch: int, repeats: int, clock: Clock) -> list:
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

    tu, td, pairs = interleaved(us, ref, 1, repeats, clock)
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
        "<= 1.02",
        {"widths": widths, "repeats": repeats},
        pairs,
    )
    print(r.line() + f"  widths {widths}", flush=True)
    return [r]


# -- 4. calibration ----------------------------------------------------------------------------
def bench_calibration(
    model: nn.Module,
    cases: list[tuple[float, str]],
    batch: int,
    num: int,
    repeats: int,
    clock: Clock,
) -> list:
    """Images/s of ``usnet.calibrate`` at one width vs an eval forward of the same images in the
    same batches and memory format, for each ``(width, "NCHW" | "channels-last")`` case."""
    calibrate_on_noise(model, sorted({w for w, _ in cases}))
    model.eval()
    out = []
    for w, layout in cases:
        batches = [inputs(model, batch)[: min(batch, num - i)] for i in range(0, num, batch)]
        if layout == "channels-last":
            batches = [x.contiguous(memory_format=torch.channels_last) for x in batches]
        for method in ("exact", "single_pass"):

            def cal(method: str = method, batches: list = batches, w: float = w) -> None:
                calibrate(model, batches, [w], num, method)

            def forward(batches: list = batches, w: float = w) -> None:
                with torch.inference_mode(), usnet.width(model, w):
                    for xb in batches:
                        model(xb)

            tc, tf, pairs = interleaved(cal, forward, 1, repeats, clock)
            r = Result(
                "calibration",
                f"w={w} {method}{' ' + layout if layout != 'NCHW' else ''}",
                "calib",
                num / tc,
                "eval",
                num / tf,
                "img/s",
                ">= 1.0",
                {"images": num, "batch": batch, "repeats": repeats, "layout": layout},
                [1 / r for r in pairs],  # images/s: the inverse of the times' ratio
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
            str(RUN),
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
