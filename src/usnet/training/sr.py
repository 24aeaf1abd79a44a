"""Super-resolution training and evaluation (``task: sr``): the sandwich rule without BN.

Each step trains the widths :func:`~usnet.training.sample_widths` picks, largest first, with
gradients accumulated and one Adam step: the largest width learns L1 to the HR image; the others
learn L1 to the largest width's detached output (inplace distillation) or, with
``inplace_distillation: false``, L1 to the HR image too. SR models have no BN, so no
calibration is needed: every width is ready to evaluate. Quality is PSNR and SSIM on the Y
channel with a border of ``scale`` pixels cropped (:mod:`usnet.metrics`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .. import checkpoint
from ..config import ConfigError, build_config, setting, to_dict
from ..config.widths import check_width_sampling
from ..data.sr import (
    EMBEDDED_TEST,
    EMBEDDED_TRAIN,
    SRPatches,
    SRTestSet,
    bicubic_upscale,
    load_pairs,
)
from ..metric_providers import Metric, MetricProvider, ProviderOptions, register_metric_provider
from ..metrics import psnr_y, ssim_y
from ..models import create_model
from ..models import edsr as _edsr  # noqa: F401  (registers us_edsr)
from ..models import wdsr as _wdsr  # noqa: F401  (registers us_wdsr)
from ..nn import format_width, width_space
from ..nn import width as at_width
from .sampling import sample_widths
from .step import sandwich_step

SR_MODELS = ("us_edsr", "us_wdsr")


# -- config ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SRModelConfig:
    """``create_model(name, scale=<scale>, **kwargs)``."""

    name: Literal["us_edsr", "us_wdsr"] = "us_edsr"
    kwargs: dict[str, Any] = setting({}, doc="n_resblocks, n_feats, res_scale, width_min...")

    def __post_init__(self) -> None:
        if "scale" in self.kwargs:
            raise ConfigError("kwargs.scale", "set the top-level 'scale' instead")


@dataclass(frozen=True)
class SRDataConfig:
    """HR image folders (``null``: the embedded scikit-image photos) and training patches."""

    train_dir: str | None = setting(None, doc="folder of HR images, e.g. DIV2K/DIV2K_train_HR")
    test_dir: str | None = setting(None, doc="folder of HR images, e.g. DIV2K/DIV2K_valid_HR")
    patch_size: int = setting(32, ge=4, doc="LR patch side; the HR patch is scale times larger")
    batch_size: int = setting(16, ge=1)
    num_workers: int = setting(0, ge=0)
    augment: bool = True


@dataclass(frozen=True)
class SRTrainingConfig:
    """Width sampling as in classification (``sandwich``/``random``/``switches``/``fixed``)."""

    epochs: int = setting(12, ge=1)
    steps_per_epoch: int = setting(50, ge=1)
    sampling: Literal["sandwich", "random", "switches", "fixed"] = "sandwich"
    num_widths: int = setting(4, ge=1)
    widths: list[float] | None = setting(None, gt=0)
    inplace_distillation: bool = True
    lr: float = setting(5e-4, gt=0, doc="Adam; cosine decay per step to lr_min")
    lr_min: float = setting(1e-5, ge=0)
    betas: tuple[float, float] = setting((0.9, 0.999), ge=0, lt=1)
    seed: int = setting(0, ge=0)
    log_every: int = setting(25, ge=1)

    def __post_init__(self) -> None:
        check_width_sampling(self.sampling, self.num_widths, self.widths)


@dataclass(frozen=True)
class SREvalConfig:
    """Widths evaluated on the test images: every ``every`` epochs (smallest and largest) and
    all of ``widths`` at the end."""

    widths: list[float] = setting([0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0], gt=0)
    every: int = setting(4, ge=1)


@dataclass(frozen=True)
class SROutputConfig:
    dir: str = "runs/sr"


@dataclass(frozen=True)
class SRConfig:
    """A super-resolution run (``task: sr``); defaults are the CPU recipe ``configs/sr_default.yaml``."""

    task: Literal["sr"] = "sr"
    scale: Literal[2, 3, 4] = 2
    model: SRModelConfig = field(default_factory=SRModelConfig)
    data: SRDataConfig = field(default_factory=SRDataConfig)
    train: SRTrainingConfig = field(default_factory=SRTrainingConfig)
    eval: SREvalConfig = field(default_factory=SREvalConfig)
    output: SROutputConfig = field(default_factory=SROutputConfig)


# -- evaluation -----------------------------------------------------------------------------
def _pairs(data: Dataset | DataLoader | Iterable) -> Iterable[tuple[Tensor, Tensor]]:
    """(lr, hr) pairs with a batch axis, from a test set or a loader of batch size 1."""
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        for i in range(len(data)):  # type: ignore[arg-type]
            lr, hr = data[i]
            yield lr.unsqueeze(0), hr.unsqueeze(0)
    else:
        yield from data


@torch.no_grad()
def evaluate(
    model: nn.Module, width: Any, data: Dataset | DataLoader | Iterable
) -> dict[str, float]:
    """Mean PSNR and SSIM (Y channel, border = scale) of ``model`` at ``width`` over whole images.

    ``data`` is an :class:`~usnet.data.sr.SRTestSet` (or any dataset of ``(lr, hr)`` pairs) or a
    loader of batch size 1. The model's width and mode are restored afterwards.
    """
    scale = int(model.scale)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    try:
        with at_width(model, width):
            for lr, hr in _pairs(data):
                sr = model(lr.to(device)).cpu()
                for s, h in zip(sr, hr, strict=True):
                    psnrs.append(psnr_y(s, h, scale))
                    ssims.append(ssim_y(s, h, scale))
    finally:
        model.train(was_training)
    if not psnrs:
        raise ValueError("evaluate: the SR test data is empty")
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def bicubic_metrics(
    data: Dataset | DataLoader | Iterable, scale: int | None = None
) -> dict[str, float]:
    """PSNR/SSIM of Pillow's bicubic upscaling of the LR images: the reference every width must beat."""
    scale = (
        scale
        or getattr(data, "scale", None)
        or getattr(getattr(data, "dataset", None), "scale", None)
    )
    if not scale:
        raise ValueError("bicubic_metrics: pass scale= (the data has no 'scale' attribute)")
    psnrs, ssims = [], []
    for lr, hr in _pairs(data):
        for low, h in zip(lr, hr, strict=True):
            up = bicubic_upscale(low.mul(255).round().byte(), scale).float() / 255
            psnrs.append(psnr_y(up, h, scale))
            ssims.append(ssim_y(up, h, scale))
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


# -- the spectrum's metrics -----------------------------------------------------------------
@register_metric_provider("sr")
def _super_resolution(
    model: nn.Module, config: Mapping[str, Any], options: ProviderOptions
) -> MetricProvider:
    """PSNR/SSIM on the checkpoint's test images for ``usnet spectrum``; bicubic as reference."""
    cfg = build_config(SRConfig, config, source="checkpoint config")
    test_dir = options.data_root or cfg.data.test_dir
    test: Any = SRTestSet(load_pairs(test_dir, EMBEDDED_TEST, cfg.scale))
    if options.max_eval_samples is not None and options.max_eval_samples < len(test):
        test = Subset(test, range(options.max_eval_samples))
    return MetricProvider(
        task="sr",
        metrics=(
            Metric("psnr", "Y-channel PSNR", True, unit="dB"),
            Metric("ssim", "Y-channel SSIM", True),
        ),
        evaluate=lambda m, w: evaluate(m, w, test),
        dataset=test_dir or "embedded test images",
        references={"bicubic": bicubic_metrics(test, cfg.scale)},
    )


# -- training -------------------------------------------------------------------------------
class L1Loss:
    """L1 to the HR image; inplace distillation: L1 to the largest width's detached output."""

    def loss(self, sr_img: Tensor, hr_img: Tensor) -> Tensor:
        return F.l1_loss(sr_img, hr_img)

    def distill_loss(self, sr_img: Tensor, teacher: Tensor, hr_img: Tensor) -> Tensor:
        return F.l1_loss(sr_img, teacher)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_img: Tensor,
    hr_img: Tensor,
    widths: Sequence[float],
    inplace_distillation: bool,
) -> dict[float, float]:
    """One sandwich-rule step (:func:`~usnet.training.step.sandwich_step`); returns each
    width's L1 loss."""
    optimizer.zero_grad(set_to_none=True)
    parts = sandwich_step(model, lr_img, hr_img, widths, L1Loss(), inplace_distillation)
    optimizer.step()
    return {w: float(p["loss"]) for w, p in zip(widths, parts, strict=True)}


def _cosine(step: int, total: int, lr: float, lr_min: float) -> float:
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(step, total) / total))


def build_model(cfg: SRConfig) -> nn.Module:
    return create_model(cfg.model.name, scale=cfg.scale, **cfg.model.kwargs)


def build_data(cfg: SRConfig) -> tuple[SRPatches, SRTestSet]:
    train = load_pairs(cfg.data.train_dir, EMBEDDED_TRAIN, cfg.scale)
    test = load_pairs(cfg.data.test_dir, EMBEDDED_TEST, cfg.scale)
    length = cfg.train.steps_per_epoch * cfg.data.batch_size
    patches = SRPatches(train, cfg.data.patch_size, length, cfg.train.seed, cfg.data.augment)
    return patches, SRTestSet(test)


def train(
    cfg: SRConfig, resume: bool = False, device: str | None = None, log: Any = print
) -> dict[str, Any]:
    """Train as ``cfg`` says, saving ``<output.dir>/checkpoint`` each epoch; returns the results.

    ``resume`` continues from ``<output.dir>/resume.pt`` (optimizer, step, RNG state) and the
    checkpoint beside it; the resumed run draws the same patches and widths as an uninterrupted one.
    ``device``: default CUDA when available, else the CPU.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, state_file = out / "checkpoint", out / "resume.pt"
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    space = width_space(model)
    for w in cfg.eval.widths + (cfg.train.widths or []):
        space.canonical(w)  # a clear error for a width outside the model's range
    patches, test = build_data(cfg)
    model.to(dev)
    t = cfg.train
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=t.betas)
    generator = torch.Generator().manual_seed(t.seed)
    start_epoch, history, elapsed = 0, [], 0.0
    if resume:
        if not state_file.is_file():
            raise FileNotFoundError(f"cannot resume: {state_file} does not exist")
        loaded = checkpoint.load(ckpt, map_location=dev)
        model.load_state_dict(loaded.state_dict())
        state = checkpoint.load_state(state_file, map_location=dev)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        start_epoch, elapsed = int(state["epoch"]), float(state["elapsed"])
        history = json.loads(state["history"])
        log(f"resumed from {state_file} at epoch {start_epoch}")
    loader = DataLoader(
        patches, batch_size=cfg.data.batch_size, shuffle=False, num_workers=cfg.data.num_workers
    )
    total = t.epochs * t.steps_per_epoch
    config_data = to_dict(cfg)
    for epoch in range(start_epoch, t.epochs):
        tic = time.perf_counter()
        model.train()
        patches.set_epoch(epoch)
        running = 0.0
        for i, (lr_img, hr_img) in enumerate(loader):
            step = epoch * t.steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = _cosine(step, total, t.lr, t.lr_min)
            widths = sample_widths(
                t.sampling, space.width_min, space.width_max, t.num_widths, t.widths, generator
            )
            lr_img, hr_img = lr_img.to(dev, non_blocking=True), hr_img.to(dev, non_blocking=True)
            losses = train_step(model, optimizer, lr_img, hr_img, widths, t.inplace_distillation)
            running += losses[widths[0]]
            if (i + 1) % t.log_every == 0:
                mean = running / (i + 1)
                log(
                    f"epoch {epoch + 1} step {i + 1}/{t.steps_per_epoch} L1 (first width) {mean:.4f}"
                )
        elapsed += time.perf_counter() - tic
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": round(running / t.steps_per_epoch, 5),
            "time_s": round(elapsed, 1),
        }
        if (epoch + 1) % cfg.eval.every == 0 or epoch + 1 == t.epochs:
            check = sorted(
                {space.width_min, space.width_max} if t.sampling != "fixed" else {t.widths[0]}
            )
            for w in check:
                record[f"psnr@{w:g}"] = round(evaluate(model, w, test)["psnr"], 3)
        history.append(record)
        log(" ".join(f"{k} {v}" for k, v in record.items()))
        meta = {
            "task": "sr",
            "scale": cfg.scale,
            "config": config_data,
            "epoch": epoch + 1,
            "history": history,
        }
        checkpoint.save(model, ckpt, meta)
        checkpoint.save_state(
            {
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch + 1,
                "elapsed": elapsed,
                "history": json.dumps(history),
            },
            state_file,
        )
    results = final_eval(model, test, cfg.eval.widths)
    results.update(train_time_s=round(elapsed, 1), history=history, checkpoint=str(ckpt))
    checkpoint.update_meta(ckpt, results={k: v for k, v in results.items() if k != "history"})
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def final_eval(model: nn.Module, test: SRTestSet, widths: Sequence[float]) -> dict[str, Any]:
    """PSNR, SSIM and MACs (per LR pixel x the profiling input) at every width, with bicubic."""
    from ..profile import macs

    rows = []
    for w in widths:
        m = evaluate(model, w, test)
        rows.append({"width": w, "macs": macs(model, w), **{k: round(v, 4) for k, v in m.items()}})
    bic = {k: round(v, 4) for k, v in bicubic_metrics(test).items()}
    return {
        "input_size": list(model.input_size),
        "bicubic": bic,
        "widths": rows,
        "test_images": list(test.pairs.names),
    }


def format_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (width, MACs, PSNR, SSIM, bicubic)."""
    bic = results["bicubic"]
    h = results["input_size"][1:]
    lines = [
        f"| width | MACs ({h[0]}x{h[1]} LR) | PSNR (dB) | SSIM | bicubic PSNR / SSIM |",
        "|---|---|---|---|---|",
    ]
    for r in results["widths"]:
        lines.append(
            f"| {format_width(r['width'])} | {r['macs'] / 1e6:.1f} M | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{bic['psnr']:.2f} / {bic['ssim']:.4f} |"
        )
    return "\n".join(lines)


def run(
    raw: dict[str, Any],
    overrides: Sequence[str] = (),
    resume: bool = False,
    source: str = "",
    device: str | None = None,
) -> int:
    """``usnet train CONFIG`` for ``task: sr``: validate, train, print the results table."""
    cfg = build_config(SRConfig, raw, overrides, source=source)
    results = train(cfg, resume=resume, device=device)
    print(format_table(results))
    print(f"checkpoint: {results['checkpoint']}  results: {Path(cfg.output.dir) / 'results.json'}")
    return 0
