"""The classification training schema (``task: classification``); defaults = the CPU recipe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from .typed import ConfigError, _show, _suggest, build_config, setting
from .widths import WidthGrid, check_width_sampling
from .yaml_io import load_yaml

T = TypeVar("T")

#: Datasets :mod:`usnet.data` reads.
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")


@dataclass(frozen=True)
class ModelConfig:
    """Which registered model to build: ``create_model(name, **kwargs)``."""

    name: str = "us_mobilenet_v1_small"
    kwargs: dict[str, Any] = setting({}, doc="passed to create_model (in_chans, switches...)")

    def __post_init__(self) -> None:
        from ..models import is_known_model, list_models  # imported late: config stays light

        known = list_models()
        if not is_known_model(self.name):
            raise ConfigError(
                "name",
                f"unknown model {self.name!r}; available: {', '.join(known)}"
                + _suggest(self.name, known),
            )


@dataclass(frozen=True)
class DataConfig:
    """The dataset. ``batch_size`` is the global batch: under torchrun each of the N ranks
    loads ``batch_size / N`` images per step, so the recipe means the same on any machine."""

    name: Literal["fashion_mnist", "cifar10", "cifar100", "imagefolder"] = "fashion_mnist"
    root: str | None = setting(None, doc="data folder; null = the dataset's default folder")
    batch_size: int = setting(128, ge=1, doc="global batch size, split across ranks")
    val_batch_size: int = setting(500, ge=1)
    num_workers: int = setting(0, ge=0, doc="DataLoader workers per process")
    augment: bool = False


@dataclass(frozen=True)
class TrainingConfig:
    """The ``train:`` section: how each step picks widths, and the loop's options.

    ``sampling``: ``sandwich`` (largest, smallest and ``num_widths - 2`` random widths; the
    paper), ``random`` (``num_widths`` random widths; the ablation), ``switches`` (every width in
    ``widths``; the 4-switch baseline) or ``fixed`` (the one width in ``widths``; an individually
    trained model). ``amp``: null (fp32), ``bf16`` (CPU or CUDA) or ``fp16`` (CUDA only).
    """

    epochs: int = setting(4, ge=1)
    sampling: Literal["sandwich", "random", "switches", "fixed"] = "sandwich"
    num_widths: int = setting(4, ge=1)
    widths: list[float] | None = setting(None, gt=0)
    inplace_distillation: bool = True
    label_smoothing: float = setting(0.0, ge=0, lt=1, doc="for the largest width's label loss")
    amp: Literal["bf16", "fp16"] | None = None
    channels_last: bool = True
    seed: int = setting(0, ge=0)
    log_every: int = setting(50, ge=1)
    max_steps_per_epoch: int | None = setting(None, ge=1)
    grad_clip: float | None = setting(None, gt=0, doc="max gradient norm; null = no clipping")

    def __post_init__(self) -> None:
        check_width_sampling(self.sampling, self.num_widths, self.widths)


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer. SGD uses ``momentum``/``nesterov``; AdamW uses ``betas``. BN weights and
    biases get no weight decay; ``no_weight_decay_depthwise`` also exempts depthwise conv
    weights (the paper)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = setting(0.2, gt=0, doc="peak learning rate for the global batch")
    momentum: float = setting(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = setting(1.0e-4, ge=0)
    no_weight_decay_depthwise: bool = True
    betas: tuple[float, float] = setting((0.9, 0.999), ge=0, lt=1)

    def __post_init__(self) -> None:
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov", "needs momentum > 0; set nesterov: false or a momentum")


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule, evaluated per iteration at fractional epoch ``e``:
    ``linear`` (to 0 at the end; the paper), ``cosine`` (to 0), ``multistep`` (times ``gamma`` at
    each of ``milestones``, in epochs), ``exponential`` (times ``gamma`` once per epoch: the
    4-switch recipe's 0.98) or ``constant``; after ``warmup_epochs`` of linear warm-up from 0."""

    name: Literal["linear", "cosine", "multistep", "exponential", "constant"] = "linear"
    warmup_epochs: float = setting(0.0, ge=0)
    milestones: list[float] = setting([], gt=0)
    gamma: float = setting(0.1, gt=0, le=1)

    def __post_init__(self) -> None:
        if self.name == "multistep":
            if not self.milestones:
                raise ConfigError("milestones", "'multistep' needs at least one milestone epoch")
            if list(self.milestones) != sorted(set(self.milestones)):
                raise ConfigError(
                    "milestones", f"must be strictly increasing, got {self.milestones}"
                )
        elif self.milestones:
            raise ConfigError(
                "milestones",
                f"is only used by the 'multistep' schedule, not {self.name!r}; set it to []",
            )


@dataclass(frozen=True)
class CalibrateConfig(WidthGrid):
    """Post-training BN calibration: which widths, from how many training images.

    ``widths`` is a grid string (``"start:stop:step"`` or ``"0.35,0.5,1.0"``) or a list; it must
    lie in the model's width range (and among its switches, if any). The default covers the
    default model's range [0.35, 1.0].
    """

    widths: str | list[float] = "0.25,0.5,1.0"
    num_samples: int = setting(2000, ge=1)
    batch_size: int = setting(200, ge=1)
    method: Literal["exact", "single_pass"] = "exact"


@dataclass(frozen=True)
class OutputConfig:
    """Where the run writes its checkpoints, CSV metrics and (optionally) TensorBoard logs."""

    dir: str = "runs/default"
    tensorboard: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """A classification training run (``task: classification``); the defaults are the
    Fashion-MNIST CPU recipe. Load with :func:`load_config`."""

    task: Literal["classification"] = "classification"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if self.schedule.warmup_epochs >= self.train.epochs:
            raise ConfigError(
                "schedule.warmup_epochs",
                f"must be < train.epochs ({self.train.epochs}), got {self.schedule.warmup_epochs:g}",
            )
        if self.schedule.milestones and max(self.schedule.milestones) > self.train.epochs:
            raise ConfigError(
                "schedule.milestones",
                f"must lie within train.epochs ({self.train.epochs}), got {self.schedule.milestones}",
            )
        kw = self.model.kwargs
        switches = kw.get("switches")
        if switches is not None:
            if self.train.sampling not in ("switches", "fixed"):
                raise ConfigError(
                    "model.kwargs.switches",
                    f"a switchable-BN model trains with 'switches' sampling, not "
                    f"{self.train.sampling!r}",
                )
            if not isinstance(switches, (list, tuple)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in switches
            ):
                raise ConfigError(
                    "model.kwargs.switches", f"expected a list of numbers, got {_show(switches)}"
                )
            allowed = {round(float(w), 6) for w in switches}
            for path, ws in (
                ("train.widths", self.train.widths or []),
                ("calibrate.widths", self.calibrate.grid),
            ):
                extra = [w for w in ws if round(w, 6) not in allowed]
                if extra:
                    raise ConfigError(
                        path, f"{extra} not among model.kwargs.switches {list(switches)}"
                    )
        lo, hi = kw.get("width_min"), kw.get("width_max")
        for path, ws in (
            ("train.widths", self.train.widths or []),
            ("calibrate.widths", self.calibrate.grid),
        ):
            for w in ws:
                if (isinstance(lo, (int, float)) and w < lo - 1e-9) or (
                    isinstance(hi, (int, float)) and w > hi + 1e-9
                ):
                    raise ConfigError(
                        path, f"width {w:g} is outside model.kwargs' range [{lo}, {hi}]"
                    )

    def check_device(self, device_type: str) -> None:
        """Options that depend on the machine: call once the device is known ('cpu', 'cuda')."""
        if self.train.amp == "fp16" and device_type != "cuda":
            raise ConfigError(
                "train.amp",
                f"'fp16' autocast needs a CUDA device (this run is on {device_type!r}); "
                "use 'bf16' or null",
            )
        if self.train.amp == "bf16" and device_type not in ("cuda", "cpu"):
            raise ConfigError(
                "train.amp", f"'bf16' autocast runs on 'cpu' or 'cuda', not {device_type!r}"
            )


def load_config(path: str | Path, overrides: Sequence[str] = (), cls: type[T] = TrainConfig) -> T:
    """Read a YAML recipe, apply ``--set`` overrides and validate it against ``cls``
    (classification's :class:`TrainConfig` by default; SR and RL pass their own schema)."""
    return build_config(cls, load_yaml(path), overrides, source=str(path))
