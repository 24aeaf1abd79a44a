"""Universally slimmable super-resolution (``task: sr``): config, data, loss, evaluation."""

from .config import SRConfig
from .evaluate import bicubic_metrics
from .loss import L1Loss
from .task import TASK, SRTask, format_results

__all__ = ["TASK", "L1Loss", "SRConfig", "SRTask", "bicubic_metrics", "format_results"]
