"""A plan's results in numbers: mean and spread (min-max) over seeds, and each contender's
difference to the individually trained networks at the same schedule and width.

``summary.md`` (written by ``gather``) is the table the docs quote, so every number in them can
be rerun from the committed CSV.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any


def summarize(rows: Iterable[dict[str, Any]], by: tuple[str, ...]) -> dict[tuple, dict[str, float]]:
    """Mean, min, max, sample standard deviation (0 for one run) and count of top-1 (%), and mean
    training compute, per group of ``by``."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in by)].append(r)
    out = {}
    for key, members in groups.items():
        top1 = [100 * m["top1"] for m in members]
        out[key] = {
            "mean": statistics.fmean(top1),
            "lo": min(top1),
            "hi": max(top1),
            "sd": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "n": len(top1),
            "macs": statistics.fmean(m["train_macs"] for m in members),
        }
    return out


def summary_markdown(rows: list[dict[str, Any]], reference: str = "individual") -> str:
    """Top-1 per series, schedule and width from the trainer's own evaluation (``source`` train:
    one row per run and width), mean [min, max] over the seeds, and the mean's difference to
    the ``reference`` series at the same schedule and width with its standard error
    (sqrt(sd1^2/n1 + sd2^2/n2), when both have 2 seeds or more): a difference within about one
    standard error is a tie at this number of seeds."""
    train = [r for r in rows if r.get("source") == "train"]
    stats = summarize(train, ("series", "epochs", "width"))
    order = list(dict.fromkeys(r["series"] for r in train))
    lines = [
        f"| epochs | series | width | top-1 % mean [min, max] | seeds | minus {reference} | s.e. |",
        "|---:|---|---:|---|---:|---:|---:|",
    ]
    for (series, epochs, width), s in sorted(
        stats.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]), -kv[0][2])
    ):
        ref = stats.get((reference, epochs, width))
        diff = se = ""
        if ref and series != reference:
            diff = f"{s['mean'] - ref['mean']:+.2f}"
            se = _se(s, ref)
        spread = f" [{s['lo']:.2f}, {s['hi']:.2f}]" if s["n"] > 1 else ""
        lines.append(
            f"| {epochs} | {series} | {width:g} | {s['mean']:.2f}{spread} | {s['n']} | {diff} "
            f"| {se} |"
        )
    pairs = [
        (e, w, a, b)
        for e in sorted({k[1] for k in stats})
        for w in sorted({k[2] for k in stats if k[1] == e}, reverse=True)
        for i, a in enumerate(order)
        for b in order[i + 1 :]
        if stats.get((a, e, w), {}).get("n", 0) > 1 and stats.get((b, e, w), {}).get("n", 0) > 1
    ]
    if pairs:  # every pair of series with several seeds: the ablations' deciding comparisons
        lines += [
            "",
            "| epochs | width | series A | series B | A - B | s.e. |",
            "|---:|---:|---|---|---:|---:|",
        ]
        for e, w, a, b in pairs:
            sa, sb = stats[(a, e, w)], stats[(b, e, w)]
            lines.append(
                f"| {e} | {w:g} | {a} | {b} | {sa['mean'] - sb['mean']:+.2f} | {_se(sa, sb)} |"
            )
    return "\n".join(lines) + "\n"


def _se(a: dict[str, float], b: dict[str, float]) -> str:
    """The standard error of a difference of two means, or "" when either has one run."""
    if a["n"] < 2 or b["n"] < 2:
        return ""
    return f"{math.sqrt(a['sd'] ** 2 / a['n'] + b['sd'] ** 2 / b['n']):.2f}"


def training_gap_markdown(docs: list[dict[str, Any]], reference: str = "individual") -> str:
    """How the gap moves while both sides train: after each epoch, the trainer's validation top-1
    of each run at a width it validates, minus that of the ``reference`` run of the same schedule,
    seed and learning rate trained at that width (same learning-rate schedule), averaged over the
    seeds that have both. A gap that is still shrinking at the last epoch says undertrained.
    "" when no run has a reference to compare with."""
    refs = {_same_run(d, d["widths"][0]["width"]): d for d in docs if _is_reference(d, reference)}
    gaps: dict[tuple, list[list[float]]] = defaultdict(list)
    for d in (d for d in docs if d["family"] != reference):
        for width, mine in sorted(_validation(d).items()):
            ref = refs.get(_same_run(d, width))
            theirs = _validation(ref).get(width, []) if ref else []
            if len(mine) == len(theirs) == d["epochs"]:
                gaps[(d["series"], d["epochs"], width)].append(
                    [100 * (a - b) for a, b in zip(mine, theirs, strict=True)]
                )
    if not gaps:
        return ""
    lines = [
        f"| epochs | series | width | seeds | minus {reference}, after epoch 1, 2, ... (points) |",
        "|---:|---|---:|---:|---|",
    ]
    for (series, epochs, width), per_seed in sorted(
        gaps.items(), key=lambda kv: (kv[0][1], kv[0][0], -kv[0][2])
    ):
        mean = [statistics.fmean(g) for g in zip(*per_seed, strict=True)]
        cells = " ".join(f"{g:+.2f}" for g in mean)
        lines.append(f"| {epochs} | {series} | {width:g} | {len(per_seed)} | {cells} |")
    return "\n".join(lines) + "\n"


def training_loss_markdown(docs: list[dict[str, Any]], reference: str = "individual") -> str:
    """Whether a run fits its training set as well as the ``reference`` network trained alone at
    its widest width: the label loss of that width averaged over the last epoch, mean over the
    seeds that have both, and, per seed, the epoch after which the reference first got that low
    (``-``: never). A run many epochs behind on the training set is underfitting, not
    overfitting. Only runs that train their widest width first on labels (sandwich, switches)
    are compared, and only with a reference of the same label smoothing; "" when none has one."""
    refs = {_loss_key(d, d["widths"][0]["width"]): d for d in docs if _is_reference(d, reference)}
    pairs: dict[tuple, list[tuple[list[float], list[float]]]] = defaultdict(list)
    for d in docs:
        if d["family"] == reference or _train(d).get("sampling") not in ("sandwich", "switches"):
            continue
        ref = refs.get(_loss_key(d, max(w["width"] for w in d["widths"])))
        mine, theirs = _losses(d), _losses(ref) if ref else []
        if len(mine) == len(theirs) == d["epochs"]:
            pairs[(d["series"], d["epochs"])].append((mine, theirs))
    if not pairs:
        return ""
    lines = [
        f"| epochs | series | seeds | widest width's training loss, last epoch | {reference} "
        f"| {reference} first as low after epoch (per seed) |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for (series, epochs), per_seed in sorted(pairs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        reached = [
            next((str(i + 1) for i, x in enumerate(theirs) if x <= mine[-1]), "-")
            for mine, theirs in per_seed
        ]
        mine_end = statistics.fmean(m[-1] for m, _ in per_seed)
        theirs_end = statistics.fmean(t[-1] for _, t in per_seed)
        lines.append(
            f"| {epochs} | {series} | {len(per_seed)} | {mine_end:.3f} | {theirs_end:.3f} "
            f"| {', '.join(reached)} |"
        )
    return "\n".join(lines) + "\n"


def _is_reference(doc: dict[str, Any], reference: str) -> bool:
    return doc["family"] == reference and len(doc["widths"]) == 1


def _same_run(doc: dict[str, Any], width: float) -> tuple:
    """What a reference run shares with the run it is compared with: schedule, seed, lr, width."""
    return doc["epochs"], doc["seed"], doc.get("lr"), round(width, 4)


def _loss_key(doc: dict[str, Any], width: float) -> tuple:
    """As ``_same_run``, and the label smoothing, which changes what the label loss measures."""
    return *_same_run(doc, width), _train(doc).get("label_smoothing", 0.0)


def _train(doc: dict[str, Any]) -> dict[str, Any]:
    """The run's resolved ``train`` settings (empty in records without a config)."""
    return doc.get("config", {}).get("train", {})


def _losses(doc: dict[str, Any]) -> list[float]:
    """The label loss of the first width each step trains, averaged over each epoch (none in
    records whose trainer did not log it)."""
    return [h["loss_first"] for h in doc["training"]["history"] if "loss_first" in h]


def _validation(doc: dict[str, Any]) -> dict[float, list[float]]:
    """A run's validation top-1 after each epoch, per width (the trainer's ``top1@W`` keys; a
    per-group width's ``top1@stem=0.75,...`` under the number its result row orders it by)."""
    numbers = {w.get("width_config") or "": w["width"] for w in doc["widths"]}
    out: dict[float, list[float]] = defaultdict(list)
    for h in doc["training"]["history"]:
        for k, v in h.items():
            if k.startswith("top1@"):
                label = k[5:]
                width = numbers.get(label) if "=" in label else float(label)
                if width is not None:
                    out[round(width, 4)].append(v)
    return out
