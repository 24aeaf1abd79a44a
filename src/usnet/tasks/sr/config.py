"""The super-resolution schema (``task: sr``); defaults = the CPU recipe ``configs/sr_default.yaml``.

The shared sections with SR's defaults: Adam with a cosine decay to ``schedule.min_lr``, the
embedded photos, evaluation every 4 epochs over widths 0.25..1.0 in steps of 0.125.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...config.errors import ConfigError
from ...config.sections import (
    EvalConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    check_schedule,
)
from ...config.typed import Section


class SRModelConfig(Section):
    """``create_model(name, scale=<scale>, **kwargs)``."""

    name: Literal["us_edsr", "us_wdsr"] = "us_edsr"
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="n_resblocks, n_feats, res_scale, width_min..."
    )

    def check(self) -> None:
        super().check()
        if "scale" in self.kwargs:
            raise ConfigError("kwargs.scale", "set the top-level 'scale' instead")


class SRDataConfig(Section):
    """HR image folders (``null``: the embedded scikit-image photos) and training patches."""

    train_dir: str | None = Field(
        None, description="folder of HR images, e.g. DIV2K/DIV2K_train_HR"
    )
    test_dir: str | None = Field(None, description="folder of HR images, e.g. DIV2K/DIV2K_valid_HR")
    patch_size: int = Field(
        32, ge=4, description="LR patch side; the HR patch is scale times larger"
    )
    batch_size: int = Field(16, ge=1, description="global batch size, split across ranks")
    num_workers: int = Field(0, ge=0)
    augment: bool = True


class SRTrainingConfig(TrainingConfig):
    """The shared ``train:`` options; an epoch is ``steps_per_epoch`` batches of patches."""

    epochs: int = Field(12, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    channels_last: bool = False
    log_every: int = Field(25, ge=1)


class SROptimConfig(OptimConfig):
    """Adam without weight decay (EDSR's)."""

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class SRScheduleConfig(ScheduleConfig):
    """Cosine decay per step to ``min_lr``."""

    name: Literal["linear", "cosine", "multistep", "exponential", "constant"] = "cosine"
    min_lr: float = Field(1e-5, ge=0)


class SREvalConfig(EvalConfig):
    widths: str | list[float] = "0.25:1.0:0.125"
    every: int = Field(4, ge=1)


class SROutputConfig(OutputConfig):
    dir: str = "runs/sr"


class SRConfig(Section):
    """A super-resolution run (``task: sr``)."""

    task: Literal["sr"] = "sr"
    scale: Literal[2, 3, 4] = 2
    model: SRModelConfig = Field(default_factory=SRModelConfig)
    data: SRDataConfig = Field(default_factory=SRDataConfig)
    train: SRTrainingConfig = Field(default_factory=SRTrainingConfig)
    optim: SROptimConfig = Field(default_factory=SROptimConfig)
    schedule: SRScheduleConfig = Field(default_factory=SRScheduleConfig)
    eval: SREvalConfig = Field(default_factory=SREvalConfig)
    output: SROutputConfig = Field(default_factory=SROutputConfig)

    def check(self) -> None:
        super().check()
        check_schedule(self.schedule, self.train.epochs, self.optim.lr)
