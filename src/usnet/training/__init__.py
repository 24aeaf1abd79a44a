"""Training: width sampling (the sandwich rule), the one sandwich step, schedules and the loop."""

from .sampling import STRATEGIES, sample_widths
from .step import SandwichLoss, sandwich_step

__all__ = ["STRATEGIES", "SandwichLoss", "sample_widths", "sandwich_step"]
