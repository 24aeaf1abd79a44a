"""Saving over a checkpoint that another process calibrated meanwhile keeps its widths.

Two ``usnet calibrate`` runs on one checkpoint each load it, calibrate their widths and save:
the second save must not drop the first one's statistics. So a save into a folder that holds
these very weights (statistics aside) adds the widths calibrated there but not in the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .folder import complete
from .format import WEIGHTS, check_weights, parse_info

STATS = "stats_"  # USBatchNorm2d's buffer prefix: stats_<key> per calibrated width


def is_stats(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith(STATS)


def merge_calibrated(path: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bool:
    """If checkpoint ``path`` holds these very weights (statistics aside), add the widths
    calibrated there but not here to ``doc`` and ``tensors``; returns whether it does. A
    damaged or unreadable checkpoint holds nothing to keep."""
    try:
        old = parse_info(path) if complete(path) else None
        if old is None or (old["arch"], old["arch_kwargs"]) != (doc["arch"], doc["arch_kwargs"]):
            return False
        check_weights(path / WEIGHTS, old)
        with safe_open(str(path / WEIGHTS), framework="pt", device="cpu") as f:
            keys, ours = set(f.keys()), {k for k in tensors if not is_stats(k)}
            same = (f.metadata() or {}).get("usnet_save_id") == old["save_id"]
            if not same or {k for k in keys if not is_stats(k)} != ours:
                return False
            for k in sorted(ours):
                t = f.get_tensor(k)
                if t.dtype != tensors[k].dtype or not torch.equal(t, tensors[k]):
                    return False
            _add_widths(f, keys, old, doc, tensors)
    except (ValueError, OSError, SafetensorError):
        return False  # an unreadable checkpoint is simply replaced
    return True


def _add_widths(
    f: Any, keys: set[str], old: dict[str, Any], doc: dict[str, Any], tensors: dict
) -> None:
    have = {entry["key"] for entry in doc["calibrated"]}
    configs = {json.dumps(entry["width"], sort_keys=True) for entry in doc["calibrated"]}
    for entry in old["calibrated"]:
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str) or "width" not in entry:
            continue
        if json.dumps(entry["width"], sort_keys=True) in configs:
            continue  # calibrated again here: ours is newer
        stats = {k for k in keys if k.rsplit(".", 1)[-1] == STATS + key}
        if key not in have and stats:
            tensors.update({k: f.get_tensor(k) for k in stats})
            have.add(key)
        if key in have:
            doc["calibrated"].append({"width": entry["width"], "key": key})
