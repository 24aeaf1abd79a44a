"""The training loop of every task trained from a data loader (classification, super-resolution):
the sandwich step, DDP, autocast, per-iteration schedules, atomic checkpoints, exact resume.

The task (:class:`LoopTask`) supplies the model, the data, the loss and the evaluation; the loop
owns the rest. Run folder (``output.dir``)::

    checkpoint/      the model (model.safetensors + usnet.json), written at the end of every epoch
    resume.pt        everything a resumed run needs (weights, optimizer, schedule, RNG, epoch),
                     one atomic file, so a crash never leaves weights and optimizer out of step
    metrics.csv      one row per epoch
    config.yaml      the resolved config
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import checkpoint
from ..calibration import clear_calibration
from ..config import dump_yaml, to_dict
from ..config.sections import check_amp
from ..config.widths import check_model_widths
from ..data.loader import EpochLoader
from ..io import atomic_write
from ..nn import WidthSpace, width_space
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .grid import evaluate_widths
from .optim import create_optimizer, create_scheduler
from .resume import CHECKPOINT, ResumeState, check_run_folder, clear_run_folder
from .sampling import step_widths, width_size
from .step import SandwichLoss, sandwich_step


class LoopTask(Protocol):
    """What the loop needs from a task (``cfg`` is the task's validated config)."""

    name: str
    #: The metric logged for the smallest and largest width after each evaluated epoch.
    primary: str

    def build_model(self, cfg: Any) -> nn.Module: ...

    def train_loader(
        self, cfg: Any, world_size: int, distributed: bool, device: torch.device
    ) -> EpochLoader:
        """This rank's share of ``data.batch_size``; batches are ``(inputs, target)``."""
        ...

    def steps_per_epoch(self, cfg: Any, loader: EpochLoader) -> int: ...

    def loss(self, cfg: Any) -> SandwichLoss: ...

    def evaluate(
        self, model: nn.Module, cfg: Any, widths: Sequence[float], device: torch.device
    ) -> dict[float, dict[str, float]]:
        """Metrics per width (calibrating BN first where the model has it)."""
        ...

    def report(
        self,
        model: nn.Module,
        cfg: Any,
        results: dict[float, dict[str, float]],
        out: Path,
        history: list[dict[str, Any]],
    ) -> tuple[Any, str]:
        """The final results as stored in the checkpoint's metadata, and as printed."""
        ...


class TrainedByLoop:
    """Base of the tasks this loop trains (classification, SR): their ``train`` is the loop."""

    def train(
        self,
        cfg: Any,
        resume: bool = False,
        device: str | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> Path:
        """Train ``cfg`` with the shared loop; returns the checkpoint folder."""
        return train(cfg, cast(LoopTask, self), resume, device, progress, overwrite)


def final_widths(cfg: Any) -> list[float]:
    """The widths evaluated after training: ``eval.widths``, or the trained list of a model
    trained at fixed widths (``fixed``/``switches`` sampling)."""
    return cfg.eval.grid if cfg.train.trains_range else sorted(cfg.train.widths or [])


def _epoch_widths(cfg: Any, space: WidthSpace) -> list[float]:
    tc = cfg.train
    ends = {space.width_min, space.width_max} if tc.trains_range else set(tc.widths or [])
    return sorted(ends)


def _autocast(amp: str | None, device: torch.device) -> Callable[[], Any]:
    if amp is None:
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def train(
    cfg: Any,
    task: LoopTask,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train ``cfg`` (under ``torchrun``: on every rank), then evaluate its width grid.

    Returns the checkpoint folder. ``resume=True`` continues from ``output.dir/resume.pt``
    exactly where the last finished epoch left off. A folder that already holds a run is
    refused unless ``resume`` or ``overwrite`` (which starts afresh). ``device`` overrides
    ``train.device``.
    """
    out = Path(cfg.output.dir)
    check_run_folder(out, resume, overwrite)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info, dev = init_distributed(device or cfg.train.device)
    check_amp(cfg.train.amp, dev.type)
    try:
        if overwrite and info.is_main:
            clear_run_folder(out)
        return _train(cfg, task, resume, info, dev, progress)
    finally:
        cleanup(info)


def _train(
    cfg: Any, task: LoopTask, resume: bool, info: DistInfo, dev: torch.device, progress: bool
) -> Path:
    out = Path(cfg.output.dir)
    tc = cfg.train
    if cfg.data.batch_size % info.world_size:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} must divide evenly over {info.world_size} ranks"
        )
    torch.manual_seed(tc.seed)
    model = task.build_model(cfg).to(dev)
    check_model_widths(model, {"train.widths": tc.widths or [], "eval.widths": cfg.eval.grid})
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    space = width_space(model)
    loader = task.train_loader(cfg, info.world_size, info.enabled, dev)
    steps = task.steps_per_epoch(cfg, loader)
    if steps == 0:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} is larger than the training set "
            f"({len(loader.dataset)})"  # type: ignore[arg-type]
        )
    optimizer = create_optimizer(cfg.optim, model)
    scheduler = create_scheduler(cfg.schedule, optimizer, steps, tc.epochs)
    scaler = torch.amp.GradScaler(dev.type, enabled=tc.amp == "fp16")
    widths_gen = torch.Generator().manual_seed(tc.seed)  # identical on every rank
    meta = {"task": task.name, "config": to_dict(cfg)}
    state = ResumeState(
        out, model, optimizer, scheduler, scaler, {"widths": widths_gen}, meta["config"]
    )
    start_epoch, history = 0, list[dict[str, Any]]()
    if resume:
        counters, history = state.load(log=print if info.is_main else _quiet)
        start_epoch = int(counters["epoch"])
    if start_epoch > tc.epochs or (start_epoch == tc.epochs and _has_results(out)):
        raise ValueError(
            f"{out} already finished {start_epoch} epochs (train.epochs {tc.epochs}); raise "
            f"train.epochs to train longer"
        )
    # (all epochs trained but the final evaluation cut off: the loop below is empty and the
    # resumed run only evaluates)
    ddp = (
        DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=getattr(model, "switches", None) is not None,
        )
        if info.enabled
        else model
    )
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_yaml(to_dict(cfg)))
    writer = _tensorboard(out) if cfg.output.tensorboard and info.is_main else None
    autocast = _autocast(tc.amp, dev)
    backward = scaler.scale if tc.amp == "fp16" else None
    loss_fn = task.loss(cfg)
    for epoch in range(start_epoch, tc.epochs):
        clear_calibration(model)  # statistics of the old weights are stale
        model.train()
        loader.set_epoch(epoch)
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{tc.epochs}",
            disable=not (progress and info.is_main),
        )
        sums = torch.zeros(3, device=dev)  # loss at the first (largest) width, smallest, mean
        seen, t0 = 0, time.perf_counter()
        for i, (x, y) in enumerate(loader):
            if i == steps:
                break
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            widths = step_widths(tc, model, widths_gen)
            optimizer.zero_grad(set_to_none=True)
            parts = sandwich_step(
                ddp,
                x,
                y,
                widths,
                loss_fn,
                tc.inplace_distillation,
                autocast,
                (lambda loss: backward(loss).backward()) if backward else torch.Tensor.backward,
                tc.smallest_weight,
            )
            losses = [p["loss"] for p in parts]
            if tc.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            sums += torch.stack(
                [
                    losses[0],
                    losses[min(range(len(widths)), key=lambda j: width_size(widths[j]))],
                    torch.stack(losses).mean(),
                ]
            )
            seen += len(x) * info.world_size
            if (i + 1) % tc.log_every == 0 or i + 1 == steps:
                bar.set_postfix(
                    loss=f"{losses[0].item():.3f}",
                    lr=f"{scheduler.get_last_lr()[0]:.4f}",
                    img_s=f"{seen / (time.perf_counter() - t0):.0f}",
                )
            bar.update(1)
        bar.close()
        space.set(space.width_max)
        elapsed = time.perf_counter() - t0
        row: dict[str, float | int | str] = {
            "epoch": epoch + 1,
            "lr": float(scheduler.get_last_lr()[0]),
            "loss_first": (sums[0] / steps).item(),
            "loss_smallest": (sums[1] / steps).item(),
            "loss_mean": (sums[2] / steps).item(),
            "images_per_s": seen / elapsed,
            "seconds": elapsed,
        }
        if (epoch + 1) % cfg.eval.every == 0 or epoch + 1 == tc.epochs:  # on every rank
            ends = evaluate_widths(task, model, cfg, _epoch_widths(cfg, space), info, dev)
            for w, m in ends.items():
                row[f"{task.primary}@{w:g}"] = m[task.primary]
        if info.is_main:
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
            _write_csv(out / "metrics.csv", history)
            checkpoint.save(
                model, out / CHECKPOINT, meta={**meta, "epoch": epoch + 1, "history": history}
            )
            state.save({"epoch": epoch + 1}, history)  # after the checkpoint, paired with it
            tqdm.write(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
        barrier(info)
    results = evaluate_widths(task, model, cfg, final_widths(cfg), info, dev)  # shared
    if info.is_main:
        summary, text = task.report(model, cfg, results, out, history)
        checkpoint.save(
            model,
            out / CHECKPOINT,
            meta={**meta, "epoch": tc.epochs, "history": history, "results": summary},
        )
        state.save({"epoch": tc.epochs}, history)
        print(text)
    barrier(info)
    return out / CHECKPOINT


def _has_results(out: Path) -> bool:
    """Whether the run's checkpoint holds its final evaluation (the run is finished)."""
    try:
        return "results" in checkpoint.read_meta(out / CHECKPOINT)
    except (FileNotFoundError, ValueError):
        return False


def _quiet(message: str) -> None:
    """Ranks other than 0 keep quiet."""


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "output.tensorboard: true needs the tensorboard package (pip install tensorboard)"
        ) from None
    return SummaryWriter(str(out / "tensorboard"))


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
