"""Latency models of devices and backends: predicted latency of any width from measured layer
timings (:mod:`.model`), the layers a width runs (:mod:`.layers`) and where they are timed
(:mod:`.backends`: eager PyTorch, ONNX Runtime)."""

from .backends import BACKENDS, Backend, backend
from .layers import Layer, layers
from .model import LatencyModel, build, load_for, random_widths, summary, validate

__all__ = [
    "BACKENDS",
    "Backend",
    "LatencyModel",
    "Layer",
    "backend",
    "build",
    "layers",
    "load_for",
    "random_widths",
    "summary",
    "validate",
]
