"""``usnet search CKPT --max-macs 1M [--method greedy|evolution]``: the best non-uniform network."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .. import checkpoint
from ..errors import UsageError
from ..latency import LatencyModel, backend, build, load_for, summary
from ..search import (
    METHODS,
    Budget,
    EvolutionSettings,
    SearchData,
    SearchSettings,
    search_checkpoint,
)
from ..search import read as read_search
from ..search.space import describe
from ..spectrum import check_trains_range, parse_count, parse_latency_ms
from ._args import positive_int
from .latency import default_path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "search",
        help="search per-group widths: the best network of a checkpoint for a budget",
        description="Search the checkpoint's per-group widths on its validation images "
        "(data.val_size; else a seeded subset of training images, and the output says so): "
        "greedy slimming (AutoSlim; one pass gives the front for every budget) or evolution "
        "(Once-for-All) under the budget. Uniform widths are candidates too. Writes "
        "CKPT/search.json (the front with test metrics, the chosen network), search.md and "
        "search.png. Resumable: a killed search continues from CKPT/search_cache/.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CKPT", help="checkpoint folder")
    p.add_argument("--max-macs", metavar="N", help="MACs budget, e.g. 1M, 150M")
    p.add_argument("--max-params", metavar="N", help="parameter budget, e.g. 50k")
    p.add_argument("--max-latency-ms", metavar="MS", help="predicted batch-1 latency budget")
    p.add_argument("--method", choices=METHODS, default="greedy", help="(default: %(default)s)")
    p.add_argument("--step", type=float, default=0.05, help="width step of each group's levels")
    p.add_argument("--seed", type=int, default=0, help="evolution's seed (default 0)")
    p.add_argument(
        "--min-gain",
        type=float,
        metavar="G",
        help="the least validation lead over the best uniform width for which another network "
        "is chosen, in the metric's units (0.005: half a point of top-1; default: two standard "
        "errors of the uniform width's validation top-1; 0: the best, however slight its lead)",
    )
    p.add_argument("--population", type=positive_int, default=24, metavar="N")
    p.add_argument("--generations", type=int, default=10, metavar="N")
    p.add_argument(
        "--val-samples",
        type=positive_int,
        default=2000,
        metavar="N",
        help="validation images each candidate is measured on (default %(default)s)",
    )
    p.add_argument(
        "--calibration-samples",
        type=positive_int,
        default=500,
        metavar="N",
        help="training images calibrating each candidate's BN (default %(default)s)",
    )
    p.add_argument(
        "--calibration-method",
        choices=("exact", "single_pass"),
        default="single_pass",
        help="(default: %(default)s; docs/search.md measured it as good as exact)",
    )
    p.add_argument(
        "--latency-model",
        type=Path,
        metavar="FILE",
        help="for --max-latency-ms (default: CKPT/latency_eager.json, built if missing)",
    )
    p.add_argument(
        "--no-test", action="store_true", help="do not measure the front on the test set"
    )
    p.add_argument("--data-root", metavar="DIR", help="data folder, if not the checkpoint config's")
    p.add_argument(
        "--threads", type=positive_int, metavar="N", help="CPU threads (default torch's)"
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="default: CKPT/search.json")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a search file written by another method or budget",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the log lines stay)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    return p


def _latency(args: argparse.Namespace, path: Path) -> LatencyModel | None:
    if args.latency_model is not None:
        return load_for(args.latency_model)
    if args.max_latency_ms is None:
        return None
    file = default_path(path, "eager")
    if file.is_file():
        return load_for(file)
    print(f"building a latency model of this machine ({file}; `usnet latency` rebuilds it)")
    lm = build(checkpoint.load(path), backend("eager"))
    print(summary(lm.validation))
    with checkpoint.locked(path):
        lm.save(file)
    return lm


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = checkpoint.folder_of(args.checkpoint)
    check_trains_range(checkpoint.read_meta(path), "search")
    budget = Budget(
        parse_count(args.max_macs, "--max-macs") if args.max_macs is not None else None,
        parse_count(args.max_params, "--max-params") if args.max_params is not None else None,
        parse_latency_ms(args.max_latency_ms) if args.max_latency_ms is not None else None,
    )
    settings = SearchSettings(
        args.method,
        budget,
        args.step,
        seed=args.seed,
        evolution=EvolutionSettings(args.population, args.generations),
        min_gain=args.min_gain,
    )
    data = SearchData(
        args.val_samples,
        args.calibration_samples,
        args.calibration_method,
        args.data_root,
        test=not args.no_test,
    )
    out = args.out or path / "search.json"
    if out.is_file() and not args.overwrite:  # before minutes of work, not after
        old = read_search(out)
        if (old.get("method"), old.get("budget"), old.get("seed")) != (
            settings.method,
            budget.to_dict(),
            settings.seed,
        ):
            raise UsageError(
                f"{out} holds a {old.get('method')} search with budget {old.get('budget')} "
                f"(seed {old.get('seed')}); give --out FILE or --overwrite to replace it"
            )
    latency = _latency(args, path)
    doc = search_checkpoint(path, settings, data, latency, out)
    if isinstance(latency, LatencyModel) and latency.added:
        file = args.latency_model or default_path(path, "eager")
        with checkpoint.locked(path):
            latency.save(file)
    _print(doc, out)
    return 0


def _print(doc: dict, out: Path) -> None:
    v = doc["validation"]
    print(f"validation: {v['note']}")
    if v["split"] != "validation":
        print("  (the checkpoint holds no validation split: these images were trained on)")
    print(
        f"{doc['method']}: {doc['candidates']} networks measured ({doc['resumed']} resumed), "
        f"front of {len(doc['front'])}, {doc['seconds']:.0f} s"
    )
    metric, groups = doc["metric"], doc["groups"]
    best = doc.get("best")
    if (
        best is not None
        and doc["chosen"] is not None
        and best["network"] != doc["chosen"]["network"]
    ):
        print(
            f"best on validation: {describe(best['width'], groups)}  {best['macs'] / 1e6:.3f} M "
            f"MACs, {metric} {100 * best['metrics'][metric]:.2f} %: its lead over the best uniform "
            f"width is under --min-gain {100 * doc['min_gain']:.2f} points, so that width is chosen"
        )
    for label in ("chosen", "best_uniform"):
        e = doc.get(label)
        if e is None:
            print(f"{label.replace('_', ' ')}: none within the budget")
            continue
        test = e["test_metrics"].get(metric)
        print(
            f"{label.replace('_', ' ')}: {describe(e['width'], groups)}  {e['macs'] / 1e6:.3f} M "
            f"MACs, {metric} {100 * e['metrics'][metric]:.2f} % validation"
            + ("" if test is None else f", {100 * test:.2f} % test")
        )
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    if doc.get("chosen") is not None:
        print(f"  export it: usnet export {doc['checkpoint']} --width @{out}")
