"""Training: the one trainer (:func:`train`), what a task gives it (:mod:`.task`), width sampling
(the sandwich rule), the one sandwich step, schedules, resume and distributed evaluation."""

from .sampling import STRATEGIES, sample_widths
from .step import SandwichLoss, sandwich_step
from .task import BatchSource, Plan, Run, RunConfig, TrainResult, TrainTask
from .trainer import Trainer, final_widths, train

__all__ = [
    "STRATEGIES",
    "BatchSource",
    "Plan",
    "Run",
    "RunConfig",
    "SandwichLoss",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "final_widths",
    "sample_widths",
    "sandwich_step",
    "train",
]
