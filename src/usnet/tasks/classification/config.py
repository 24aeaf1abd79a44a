"""The classification training schema (``task: classification``); defaults = the CPU recipe
with the paper's whole training rule, ``configs/fashion_mnist_paper.yaml`` (the README's
``configs/fashion_mnist.yaml`` turns inplace distillation off)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...config.errors import ConfigError
from ...config.sections import (
    EvalConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    check_schedule,
)
from ...config.typed import Section

#: Datasets :mod:`usnet.data` reads.
DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")


class DataConfig(Section):
    """The dataset. ``batch_size`` is the global batch: under torchrun each of the N ranks
    loads ``batch_size / N`` images per step, so the recipe means the same on any machine.
    ``val_size`` training images (a seeded choice, ``val_seed``) are held out of training and
    calibration: ``usnet search`` measures candidates on them, never on the test set."""

    name: Literal["fashion_mnist", "cifar10", "cifar100", "imagefolder"] = "fashion_mnist"
    root: str | None = Field(None, description="data folder; null = the dataset's default folder")
    batch_size: int = Field(128, ge=1, description="global batch size, split across ranks")
    val_batch_size: int = Field(500, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader workers per process")
    augment: bool = False
    val_size: int = Field(
        0, ge=0, description="training images held out of training for validation (search)"
    )
    val_seed: int = Field(0, ge=0, description="which images are held out (a seeded choice)")


class ClassificationTraining(TrainingConfig):
    """The shared ``train:`` options, plus label smoothing and a cap on steps per epoch."""

    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="for the largest width's label loss"
    )
    max_steps_per_epoch: int | None = Field(None, ge=1)


class CalibrateConfig(Section):
    """Post-training BN calibration of the evaluated widths: from how many training images,
    in batches of which size, with which estimator (docs/design-notes.md)."""

    num_samples: int = Field(2000, ge=1)
    batch_size: int = Field(200, ge=1)
    method: Literal["exact", "single_pass"] = "exact"


class TrainConfig(Section):
    """A classification training run (``task: classification``); the defaults are the
    Fashion-MNIST CPU recipe. Load with :func:`usnet.config.load_config`."""

    task: Literal["classification"] = "classification"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: ClassificationTraining = Field(default_factory=ClassificationTraining)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    def check(self) -> None:
        super().check()
        check_schedule(self.schedule, self.train.epochs, self.optim.lr)
        if "switches" in self.model.kwargs and self.train.trains_range:
            raise ConfigError(
                "model.kwargs.switches",
                f"a switchable-BN model trains with 'switches' sampling, not "
                f"{self.train.sampling!r}",
            )
