"""Training: width sampling (the sandwich rule), losses, schedules and the loop."""

from .losses import soft_cross_entropy
from .sampling import STRATEGIES, sample_widths

__all__ = ["STRATEGIES", "sample_widths", "soft_cross_entropy"]
