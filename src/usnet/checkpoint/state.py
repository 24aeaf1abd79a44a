"""Files ``torch.save`` writes (resume state: optimizer, schedule, RNG), read back with
``weights_only=True``, so nothing is ever unpickled."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ..io import write_bytes
from .format import CheckpointError


def save_state(obj: object, path: str | os.PathLike) -> Path:
    """Save tensors/containers of tensors and plain values (e.g. optimizer state) atomically.

    Serialised in memory first: ``torch.save`` to a full disk fails inside C++ with a message
    that names no file; the write of the bytes fails with an ``OSError`` naming ``path``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load what :func:`save_state` wrote, with ``weights_only=True``: nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such state file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"{path}: not a readable state file ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(e: Exception) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), "")[:200]
