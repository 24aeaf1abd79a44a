"""Where :mod:`usnet.metric_providers` finds classification's evaluation until the spectrum
package takes the providers over; the code lives in :mod:`usnet.tasks.classification.evaluate`."""

from ..tasks.classification.evaluate import evaluate

__all__ = ["evaluate"]
