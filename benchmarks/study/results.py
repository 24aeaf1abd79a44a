"""A finished run's per-width results, its training compute, and the plan's CSV of them.

Per-width results come from the checkpoint ``usnet train`` writes at the end (``usnet.json``:
``meta.results``, a list of ``{width, top1, top5, loss}``), plus, for a US-Net, the extra widths
of ``usnet spectrum`` (``spectrum/spectrum.json``) when the plan asks for them.

Training compute counts the multiply-accumulates of the training steps only (not calibration
or evaluation): per image, the forward MACs of every width the step trains, times 3 (the
backward pass costs about twice the forward), times the images trained. For the sandwich rule
the ``n - 2`` random widths (and all ``n`` for ``random``) count at their *expected* MACs under
the uniform distribution the trainer draws from. Over the hundreds of steps of a run the
realised mean differs from it by well under 1%, and the number stays exact for the rule rather
than depending on the trainer's generator, which it does not log.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

COLUMNS = (
    "plan", "run", "method", "family", "series", "kind", "model", "sampling", "num_widths",
    "inplace_distillation", "label_smoothing", "epochs", "seed", "lr", "width", "width_config",
    "top1", "top5",
    "loss", "macs", "source", "train_macs", "train_seconds", "wall_seconds", "cpu_seconds",
    "images_per_s", "images", "commit", "dirty", "cpu", "threads",
)  # fmt: skip

KINDS = {"sandwich": "us", "random": "us", "switches": "snet", "fixed": "individual"}
GRID_POINTS = 1000  # midpoints over the width range for the expected MACs of a random width


def expected_macs(model: Any, width_min: float, width_max: float) -> float:
    """Mean forward MACs per image of a width drawn uniformly from ``[width_min, width_max]``.

    MACs are a step function of the width (channel counts round to multiples of 8): the mean
    over ``GRID_POINTS`` midpoints, counting each distinct network once.
    """
    import usnet
    from usnet.nn import width_space

    space = width_space(model)
    span = width_max - width_min
    widths = [width_min + span * (i + 0.5) / GRID_POINTS for i in range(GRID_POINTS)]
    by_key: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for w in widths:
        key = space.resolve(w)[1]
        counts[key] += 1
        by_key.setdefault(key, w)
    return sum(n * usnet.macs(model, by_key[k]) for k, n in counts.items()) / GRID_POINTS


def step_macs(model: Any, train: dict[str, Any], width_range: list[float]) -> float:
    """Forward MACs per image of one training step under the run's width sampling rule."""
    import usnet

    sampling, n = train["sampling"], int(train["num_widths"])
    lo, hi = width_range
    if sampling == "fixed":
        return float(usnet.macs(model, train["widths"][0]))
    if sampling == "switches":
        return float(sum(usnet.macs(model, w) for w in train["widths"]))
    random = expected_macs(model, lo, hi)
    if sampling == "random":
        return n * random
    if sampling == "sandwich":
        return usnet.macs(model, hi) + usnet.macs(model, lo) + (n - 2) * random
    raise ValueError(f"unknown train.sampling {sampling!r} in the checkpoint's config")


def trained_width(width: float | dict[str, float]) -> dict[str, Any]:
    """A result's width as the CSV holds it: ``width`` a number the plots and tables order by,
    ``width_config`` the per-group configuration as text (empty for a uniform width). A per-group
    width (``train.sampling: fixed`` at ``{group: width}``) counts as the mean of its groups'
    widths, the trainer's own order of widths (``usnet.training.sampling.width_size``); its MACs
    say what it costs."""
    from usnet.nn import format_width
    from usnet.training.sampling import width_size

    if isinstance(width, dict):
        config = tuple((g, float(w)) for g, w in width.items())
        return {"width": round(width_size(width), 6), "width_config": format_width(config)}
    return {"width": float(width), "width_config": ""}


def committed(results_dir: Path, plan: str, run: str) -> Path:
    """Where a finished run's results are committed: RESULTS/PLAN/RUN.json."""
    return results_dir / plan / f"{run}.json"


def collect(folder: Path) -> dict[str, Any]:
    """Per-width results and training numbers of the finished run in ``folder``."""
    import usnet
    from usnet import checkpoint

    ckpt = folder / "checkpoint"
    info = checkpoint.read_info(ckpt)
    meta = info["meta"]
    if not meta.get("results"):
        raise ValueError(
            f"{ckpt}/usnet.json has no meta.results: usnet train did not finish its final evaluation"
        )
    config, history = meta["config"], meta.get("history") or []
    model = checkpoint.load(ckpt)
    widths = []
    for r in meta["results"]:
        widths.append({**trained_width(r["width"]), "top1": r["top1"], "top5": r["top5"],
                       "loss": r["loss"], "macs": usnet.macs(model, r["width"]),
                       "source": "train"})  # fmt: skip
    spectrum = folder / "spectrum" / "spectrum.json"
    if spectrum.is_file():
        import json

        have = {round(x["width"], 6) for x in widths}
        for row in json.loads(spectrum.read_text())["rows"]:
            w = row["width"]
            if isinstance(w, float | int) and round(w, 6) not in have and row.get("metrics"):
                m = row["metrics"]
                widths.append({"width": float(w), "top1": m["top1"], "top5": m["top5"],
                               "loss": m["loss"], "macs": row["macs"], "source": "spectrum"})  # fmt: skip
    widths.sort(key=lambda x: x["width"])
    images = sum(round(h["images_per_s"] * h["seconds"]) for h in history)
    train_seconds = sum(h["seconds"] for h in history)
    per_image = step_macs(model, config["train"], info["width_range"])
    return {
        "config": config,
        "widths": widths,
        "training": {
            "epochs_done": len(history),
            "images": images,
            "train_seconds": round(train_seconds, 2),
            "images_per_s": round(images / train_seconds, 1) if train_seconds else None,
            "step_macs_per_image": per_image,
            "train_macs": 3 * per_image * images,
            "history": history,
        },
    }


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The CSV rows (one per width) of one run's results document."""
    cfg, tr = doc["config"], doc["training"]
    train = [a for a in doc["attempts"] if a["phase"] == "train"]
    last = train[-1] if train else {}
    base = {
        "plan": doc["plan"], "run": doc["run"], "method": doc["method"], "family": doc["family"],
        "series": doc["series"],
        "kind": KINDS.get(cfg["train"]["sampling"], ""), "model": cfg["model"]["name"],
        "sampling": cfg["train"]["sampling"], "num_widths": cfg["train"]["num_widths"],
        "inplace_distillation": cfg["train"]["inplace_distillation"],
        "label_smoothing": cfg["train"]["label_smoothing"], "epochs": cfg["train"]["epochs"],
        "seed": cfg["train"]["seed"], "lr": cfg["optim"]["lr"], "train_macs": tr["train_macs"],
        "train_seconds": tr["train_seconds"],
        "wall_seconds": round(sum(a.get("wall_seconds") or 0 for a in train), 1),
        "cpu_seconds": round(sum(a.get("cpu_seconds") or 0 for a in train), 1),
        "images_per_s": tr["images_per_s"], "images": tr["images"],
        "commit": (last.get("git") or {}).get("commit"),
        "dirty": any((a.get("git") or {}).get("dirty") for a in train),
        "cpu": (last.get("machine") or {}).get("cpu"), "threads": last.get("threads"),
    }  # fmt: skip
    return [{**base, **w} for w in doc["widths"]]


def write_csv(path: Path, table: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> None:
    """All rows in ``columns`` order, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a plan's CSV with numbers as numbers (what the plots read)."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = dict(r)
            for k in ("top1", "top5", "loss", "width", "train_macs", "train_seconds", "lr",
                      "wall_seconds", "cpu_seconds", "images_per_s", "macs"):  # fmt: skip
                row[k] = float(r[k]) if r[k] not in ("", None) else None
            for k in ("epochs", "seed", "num_widths"):
                row[k] = int(r[k])
            out.append(row)
    return out
