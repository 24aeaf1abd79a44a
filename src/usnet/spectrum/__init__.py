"""The spectrum of a US model: measure a width grid, tabulate it, choose a width, plot it.

- :mod:`.compute`: :func:`compute_spectrum` measures every network of a width grid.
- :mod:`.result`: :class:`Spectrum` and :class:`SpectrumRow`, their JSON form, validated.
- :mod:`.files`: ``spectrum.csv/.json/.md`` (:func:`save_spectrum`, :func:`load_spectrum`).
- :mod:`.tables`: ONE table formatter (:func:`format_table`) for the terminal, Markdown, CSV.
- :mod:`.selection`: the best width under a MACs, latency or metric budget (:func:`select`).
- :mod:`.providers`: how a task's quality is measured (:class:`MetricProvider`); each task
  builds its own (``usnet.tasks.<name>.provider``).
- :mod:`.plot`: :func:`~usnet.spectrum.plot.plot_spectrum` (imported on its own: matplotlib).
"""

from .compute import (
    NOISY_SPREAD,
    baseline_points,
    check_trains_range,
    compute_spectrum,
    environment,
    measure_latency,
    trained_width,
)
from .files import load_spectrum, save_spectrum
from .providers import Metric, MetricProvider, ProviderOptions
from .result import Spectrum, SpectrumRow
from .selection import Selection, parse_count, parse_latency_ms, parse_target, select
from .tables import describe, format_table

__all__ = [
    "NOISY_SPREAD",
    "Metric",
    "MetricProvider",
    "ProviderOptions",
    "Selection",
    "Spectrum",
    "SpectrumRow",
    "baseline_points",
    "check_trains_range",
    "trained_width",
    "compute_spectrum",
    "describe",
    "environment",
    "format_table",
    "load_spectrum",
    "measure_latency",
    "parse_count",
    "parse_latency_ms",
    "parse_target",
    "save_spectrum",
    "select",
]
