"""Image classification (``task: classification``): config, data, loss, evaluation."""

from .config import CalibrateConfig, ClassificationTraining, DataConfig, TrainConfig
from .loss import ClassificationLoss, soft_cross_entropy
from .task import TASK, ClassificationTask

__all__ = [
    "TASK",
    "CalibrateConfig",
    "ClassificationLoss",
    "ClassificationTask",
    "ClassificationTraining",
    "DataConfig",
    "TrainConfig",
    "soft_cross_entropy",
]
