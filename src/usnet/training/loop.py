"""The classification training loop: sandwich rule, DDP, autocast, atomic checkpoints, exact resume.

Run folder (``output.dir``)::

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
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import checkpoint
from ..calibration import calibrate, clear_calibration
from ..config import TrainConfig, dump_yaml, to_dict
from ..data import calibration_loader, create_dataset, create_loader, dataset_info
from ..models import create_model
from ..nn import format_width, width_space
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .evaluate import evaluate
from .losses import ClassificationLoss
from .optim import create_optimizer, create_scheduler
from .sampling import sample_widths
from .step import sandwich_step

RESUME = "resume.pt"
CHECKPOINT = "checkpoint"


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg``, sized from the data set unless ``model.kwargs`` says otherwise."""
    info = dataset_info(cfg.data.name, cfg.data.root)
    return create_model(cfg.model.name, **{**info, **cfg.model.kwargs})


def _autocast(cfg: TrainConfig, device: torch.device):  # noqa: ANN202
    if cfg.train.amp is None:
        return contextlib.nullcontext
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def validate_widths(
    model: nn.Module,
    cfg: TrainConfig,
    widths: list[float],
    device: torch.device,
    max_samples: int | None = None,
) -> dict[float, dict[str, float]]:
    """Calibrate ``widths`` on training images, then evaluate them on the test split."""
    calib = calibration_loader(
        cfg.data.name,
        cfg.data.root,
        cfg.calibrate.num_samples,
        cfg.calibrate.batch_size,
        seed=cfg.train.seed,
    )
    calibrate(model, calib, widths, cfg.calibrate.num_samples, cfg.calibrate.method, progress=False)
    val = create_dataset(cfg.data.name, cfg.data.root, "test")
    if max_samples is not None and max_samples < len(val):
        val = torch.utils.data.Subset(val, range(max_samples))
    loader = create_loader(
        val, cfg.data.val_batch_size, shuffle=False, num_workers=cfg.data.num_workers
    )
    return {w: evaluate(model, loader, w, device) for w in widths}


def train(
    cfg: TrainConfig, resume: bool = False, device: str | None = None, progress: bool = True
) -> Path:
    """Train ``cfg`` (under ``torchrun``: on every rank), then calibrate and evaluate its width grid.

    Returns the checkpoint folder. ``resume=True`` continues from ``output.dir/resume.pt``
    exactly where the last finished epoch left off.
    """
    info, dev = init_distributed(device)
    cfg.check_device(dev.type)
    try:
        return _train(cfg, resume, info, dev, progress)
    finally:
        cleanup(info)


def _train(
    cfg: TrainConfig, resume: bool, info: DistInfo, dev: torch.device, progress: bool
) -> Path:
    out = Path(cfg.output.dir)
    tc = cfg.train
    if cfg.data.batch_size % info.world_size:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} must divide evenly over {info.world_size} ranks"
        )
    torch.manual_seed(tc.seed)
    model = build_model(cfg).to(dev)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    space = width_space(model)
    train_set = create_dataset(
        cfg.data.name, cfg.data.root, "train", augment=cfg.data.augment, seed=tc.seed
    )
    loader = create_loader(
        train_set,
        cfg.data.batch_size // info.world_size,
        shuffle=True,
        num_workers=cfg.data.num_workers,
        seed=tc.seed,
        distributed=info.enabled,
        drop_last=True,
        pin_memory=dev.type == "cuda",
    )
    steps = (
        len(loader) if tc.max_steps_per_epoch is None else min(len(loader), tc.max_steps_per_epoch)
    )
    if steps == 0:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} is larger than the training set ({len(train_set)})"
        )
    optimizer = create_optimizer(cfg.optim, model)
    scheduler = create_scheduler(cfg.schedule, optimizer, steps, tc.epochs)
    scaler = torch.amp.GradScaler(dev.type, enabled=tc.amp == "fp16")
    widths_gen = torch.Generator().manual_seed(tc.seed)  # identical on every rank
    start_epoch, history = 0, []
    if resume:
        state = checkpoint.load_state(out / RESUME, map_location=dev)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        widths_gen.set_state(state["widths_generator"])
        _set_rng_state(state["rng"])
        start_epoch, history = int(state["epoch"]), list(state.get("history", []))
    if start_epoch >= tc.epochs:
        raise ValueError(f"{out / RESUME} already finished all {tc.epochs} epochs")
    ddp = (
        DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=model.switches is not None,
        )
        if info.enabled
        else model
    )
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_yaml(to_dict(cfg)))
    writer = _tensorboard(out) if cfg.output.tensorboard and info.is_main else None
    autocast = _autocast(cfg, dev)
    backward = scaler.scale if tc.amp == "fp16" else None
    loss_fn = ClassificationLoss(tc.label_smoothing)
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
            widths = sample_widths(
                tc.sampling, space.width_min, space.width_max, tc.num_widths, tc.widths, widths_gen
            )
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
                    losses[min(range(len(widths)), key=widths.__getitem__)],
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
            "lr": scheduler.get_last_lr()[0],
            "loss_first": (sums[0] / steps).item(),
            "loss_smallest": (sums[1] / steps).item(),
            "loss_mean": (sums[2] / steps).item(),
            "images_per_s": seen / elapsed,
            "seconds": elapsed,
        }
        if info.is_main:
            ends = sorted(
                {space.width_min, space.width_max}
                if tc.sampling in ("sandwich", "random")
                else set(tc.widths or [])
            )
            for w, m in validate_widths(model, cfg, ends, dev).items():
                row[f"top1@{w:g}"] = m["top1"]
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
            _write_csv(out / "metrics.csv", history)
            checkpoint.save_state(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "widths_generator": widths_gen.get_state(),
                    "rng": _rng_state(),
                    "epoch": epoch + 1,
                    "history": history,
                },
                out / RESUME,
            )
            checkpoint.save(
                model,
                out / CHECKPOINT,
                meta={"config": to_dict(cfg), "epoch": epoch + 1, "history": history},
            )
            tqdm.write(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                )
            )
        barrier(info)
    if info.is_main:
        grid = (
            cfg.calibrate.grid if tc.sampling in ("sandwich", "random") else sorted(tc.widths or [])
        )
        results = validate_widths(model, cfg, grid, dev)
        summary = [{"width": w, **m} for w, m in results.items()]
        checkpoint.save(
            model,
            out / CHECKPOINT,
            meta={
                "config": to_dict(cfg),
                "epoch": tc.epochs,
                "history": history,
                "results": summary,
            },
        )
        print(format_results(model, results, cfg))
    barrier(info)
    return out / CHECKPOINT


def format_results(
    model: nn.Module, results: dict[float, dict[str, float]], cfg: TrainConfig
) -> str:
    """The per-width validation summary as a Markdown table."""
    from ..profile import macs

    lines = ["| width | MMACs | top-1 % | top-5 % |", "|---:|---:|---:|---:|"]
    for w, m in sorted(results.items(), reverse=True):
        lines.append(
            f"| {format_width(w)} | {macs(model, w) / 1e6:.2f} | "
            f"{100 * m['top1']:.2f} | {100 * m['top5']:.2f} |"
        )
    return "\n".join(lines)


def _tensorboard(out: Path):  # noqa: ANN202
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

    checkpoint.atomic_write(path, write)
