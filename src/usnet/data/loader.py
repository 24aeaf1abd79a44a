"""DataLoaders whose batches depend only on ``(seed, epoch)``: resumable and DDP-ready.

How the training loop uses them::

    loader = create_loader(ds, batch_size, shuffle=True, seed=seed, distributed=ddp)
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)            # before iterating, every epoch, on every rank
        for images, labels in loader: ...

``set_epoch(epoch)`` fixes the shuffle order (``seed + epoch``, as DistributedSampler does),
the augmentation (a function of ``(seed, epoch, index)``) and the worker seeds. A run resumed
at the start of epoch ``e`` therefore sees exactly the batches of an uninterrupted run; one
resumed after ``k`` finished batches of epoch ``e`` calls ``set_epoch(e, start_batch=k)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..errors import UsageError
from .memory import InMemoryImageDataset


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can skip the first ``start`` indices of its epoch (resume).

    Used with ``num_replicas=1, rank=0`` outside distributed runs too, so one code path
    decides the order everywhere.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        if not 0 <= start <= self.num_samples:
            raise UsageError(f"start index {start} outside [0, {self.num_samples}]")
        self.start = start

    def __iter__(self) -> Iterator[int]:
        it = super().__iter__()
        return iter(list(it)[self.start :]) if self.start else it

    def __len__(self) -> int:
        return self.num_samples - self.start


def _base(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The in-memory data sets build whole batches in ``__getitems__``: nothing to collate."""
    return batch


class EpochLoader(DataLoader):
    """A DataLoader with :meth:`set_epoch`; see the module docstring for the calling contract."""

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = int(seed)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Fix this epoch's order, augmentation and worker seeds; skip ``start_batch`` batches."""
        if epoch < 0 or start_batch < 0:
            raise UsageError(f"epoch and start_batch must be >= 0, got {epoch}, {start_batch}")
        sampler = self.sampler
        assert isinstance(sampler, ResumableSampler) and self.batch_size is not None
        sampler.set_epoch(epoch, start_batch * self.batch_size)
        base = _base(self.dataset)
        if hasattr(base, "set_epoch"):
            base.set_epoch(epoch)
        self.generator.manual_seed(self.seed + epoch)


def create_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    pin_memory: bool = False,
) -> EpochLoader:
    """A DataLoader over ``dataset``; call ``set_epoch(epoch)`` before each epoch.

    ``distributed`` shards the data over ``num_replicas`` ranks (default: the initialised
    process group); each rank gets ``ceil(len / replicas)`` samples, padded by repetition as
    DistributedSampler does. Workers are not persistent, so each epoch's ``set_epoch`` reaches
    them.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise UsageError(f"num_workers must be >= 0, got {num_workers}")
    if distributed:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise UsageError(
                    "distributed=True needs an initialised process group or num_replicas and rank"
                )
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
    else:
        num_replicas, rank = 1, 0
    sampler = ResumableSampler(
        dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
    )
    batched = isinstance(_base(dataset), InMemoryImageDataset)
    loader = EpochLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate_batch if batched else None,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        seed=seed,
    )
    loader.set_epoch(0)
    return loader
