"""Moved to :mod:`usnet.spectrum.providers`; this name stays only while ``usnet.training.sr``
still imports it from here (remove it once that import is switched)."""

from .spectrum.providers import Metric, MetricProvider, ProviderOptions, register_metric_provider

__all__ = ["Metric", "MetricProvider", "ProviderOptions", "register_metric_provider"]
