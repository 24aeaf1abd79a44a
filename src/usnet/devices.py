"""Turn a user's device name into a ``torch.device``, with errors that say what is allowed."""

from __future__ import annotations

import os

import torch

from .errors import UsageError

#: The most CPU threads usnet asks torch for: more (--threads 100000) aborts inside OpenMP.
MAX_THREADS = 1024


def resolve_device(name: str | torch.device, field: str = "device") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``: a device that exists on this machine.

    ``ValueError`` naming ``field`` otherwise (an unknown name, no CUDA, a GPU index too high),
    instead of the assertion or runtime error torch raises at first use.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"{field} {str(name)!r} is not a torch device (allowed: cpu, cuda, cuda:N, mps)"
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{field} {str(name)!r}: no CUDA device is available here; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"{field} {str(name)!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"{field} {str(name)!r}: no MPS device is available here; use cpu")
        return device
    raise UsageError(
        f"{field} {str(name)!r}: usnet runs on cpu, cuda, cuda:N or mps, not {device.type!r}"
    )


def physical_memory() -> int:
    """Physical memory in bytes (a generous 1 TiB where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**40
