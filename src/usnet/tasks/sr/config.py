"""The super-resolution schema (``task: sr``); defaults = the CPU recipe ``configs/sr_default.yaml``.

The shared sections with SR's defaults: Adam with a cosine decay to ``schedule.min_lr``, the
embedded photos, evaluation every 4 epochs over widths 0.25..1.0 in steps of 0.125.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ...config.sections import (
    EvalConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    check_schedule,
)
from ...config.typed import ConfigError, setting


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
    batch_size: int = setting(16, ge=1, doc="global batch size, split across ranks")
    num_workers: int = setting(0, ge=0)
    augment: bool = True


@dataclass(frozen=True)
class SRTrainingConfig(TrainingConfig):
    """The shared ``train:`` options; an epoch is ``steps_per_epoch`` batches of patches."""

    epochs: int = setting(12, ge=1)
    steps_per_epoch: int = setting(50, ge=1)
    channels_last: bool = False
    log_every: int = setting(25, ge=1)


@dataclass(frozen=True)
class SROptimConfig(OptimConfig):
    """Adam without weight decay (EDSR's)."""

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = setting(5e-4, gt=0)
    weight_decay: float = setting(0.0, ge=0)


@dataclass(frozen=True)
class SRScheduleConfig(ScheduleConfig):
    """Cosine decay per step to ``min_lr``."""

    name: Literal["linear", "cosine", "multistep", "exponential", "constant"] = "cosine"
    min_lr: float = setting(1e-5, ge=0)


@dataclass(frozen=True)
class SREvalConfig(EvalConfig):
    widths: str | list[float] = "0.25:1.0:0.125"
    every: int = setting(4, ge=1)


@dataclass(frozen=True)
class SROutputConfig(OutputConfig):
    dir: str = "runs/sr"


@dataclass(frozen=True)
class SRConfig:
    """A super-resolution run (``task: sr``)."""

    task: Literal["sr"] = "sr"
    scale: Literal[2, 3, 4] = 2
    model: SRModelConfig = field(default_factory=SRModelConfig)
    data: SRDataConfig = field(default_factory=SRDataConfig)
    train: SRTrainingConfig = field(default_factory=SRTrainingConfig)
    optim: SROptimConfig = field(default_factory=SROptimConfig)
    schedule: SRScheduleConfig = field(default_factory=SRScheduleConfig)
    eval: SREvalConfig = field(default_factory=SREvalConfig)
    output: SROutputConfig = field(default_factory=SROutputConfig)

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.train.epochs, self.optim.lr)
