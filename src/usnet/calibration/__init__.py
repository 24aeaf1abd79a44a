"""Post-statistics batch norm (paper, design.md): each width's BN statistics, computed after
training from a few thousand training samples as exact averages.

:mod:`.core` holds the public calls (:func:`calibrate`, :func:`is_calibrated`,
:func:`clear_calibration`); :mod:`.attach` calibrates on first use (:func:`attach_calibration_data`,
also from several threads at once); :mod:`.graph` runs a traced stage layer-major
for the ``exact`` estimator; :mod:`.moments` merges per-channel moments across batches.
"""

from .attach import attach_calibration_data
from .core import (
    METHODS,
    calibrate,
    clear_calibration,
    collect_batches,
    default_cache_bytes,
    is_calibrated,
    needs_calibration,
)

__all__ = [
    "METHODS",
    "attach_calibration_data",
    "calibrate",
    "clear_calibration",
    "collect_batches",
    "default_cache_bytes",
    "is_calibrated",
    "needs_calibration",
]
