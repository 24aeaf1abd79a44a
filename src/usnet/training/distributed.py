"""Process-group setup for ``torchrun`` (NCCL on GPUs, gloo on CPU) and rank helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str | None = None, local_rank: int = 0) -> torch.device:
    """The device a run trains on: ``name`` (``cpu``, ``cuda``, ``cuda:1``...; checked by
    :func:`usnet.devices.resolve_device`, so ``banana`` is an error), or CUDA when available.
    A plain ``cuda`` means this process's GPU (``LOCAL_RANK`` under torchrun)."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = resolve_device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group ``torchrun`` describes (env ``WORLD_SIZE`` etc.), pick the device
    (:func:`pick_device`). Without ``torchrun`` this is a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), dev


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
