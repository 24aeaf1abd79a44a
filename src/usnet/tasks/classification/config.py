"""The classification training schema (``task: classification``); defaults = the CPU recipe
``configs/fashion_mnist.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config.sections import (
    EvalConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    check_schedule,
)
from ...config.typed import ConfigError, setting

#: Datasets :mod:`usnet.data` reads.
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")


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
class ClassificationTraining(TrainingConfig):
    """The shared ``train:`` options, plus label smoothing and a cap on steps per epoch."""

    label_smoothing: float = setting(0.0, ge=0, lt=1, doc="for the largest width's label loss")
    max_steps_per_epoch: int | None = setting(None, ge=1)


@dataclass(frozen=True)
class CalibrateConfig:
    """Post-training BN calibration of the evaluated widths: from how many training images,
    in batches of which size, with which estimator (docs/design-notes.md)."""

    num_samples: int = setting(2000, ge=1)
    batch_size: int = setting(200, ge=1)
    method: Literal["exact", "single_pass"] = "exact"


@dataclass(frozen=True)
class TrainConfig:
    """A classification training run (``task: classification``); the defaults are the
    Fashion-MNIST CPU recipe. Load with :func:`usnet.config.load_config`."""

    task: Literal["classification"] = "classification"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: ClassificationTraining = field(default_factory=ClassificationTraining)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.train.epochs, self.optim.lr)
        if "switches" in self.model.kwargs and self.train.trains_range:
            raise ConfigError(
                "model.kwargs.switches",
                f"a switchable-BN model trains with 'switches' sampling, not "
                f"{self.train.sampling!r}",
            )
