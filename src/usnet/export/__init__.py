"""The dense network a width selects (:mod:`.dense`) and the files a deployment loads without
usnet (:mod:`.files`: ExportedProgram, TorchScript, ONNX)."""

from .dense import Residual, extract
from .files import FORMATS, SUFFIXES, TOLERANCE, check, format_of, load_file, read_info, save

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "TOLERANCE",
    "Residual",
    "check",
    "extract",
    "format_of",
    "load_file",
    "read_info",
    "save",
]
