"""Turn a user's device name into a ``torch.device``, with errors that say what is allowed."""

from __future__ import annotations

import torch


def resolve_device(name: str, field: str = "device") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``...; a CUDA device must be available here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"{field} {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field} {name!r}: no CUDA device is available here; use cpu")
    return device
