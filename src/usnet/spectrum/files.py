"""A spectrum's files: ``spectrum.csv``, ``spectrum.json`` and ``spectrum.md``, written atomically
and read back validated."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError
from ..io import write_text
from .result import Spectrum
from .tables import format_table, to_markdown

FILES = ("spectrum.csv", "spectrum.json", "spectrum.md")


def save_spectrum(spectrum: Spectrum, out: str | os.PathLike) -> list[Path]:
    """Write the three files into folder ``out`` (each to a temporary name, then renamed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = (
        format_table(spectrum, "csv"),
        json.dumps(spectrum.to_dict(), indent=2) + "\n",
        to_markdown(spectrum),
    )
    return [write_text(out / name, text) for name, text in zip(FILES, texts, strict=True)]


def load_spectrum(path: str | os.PathLike) -> Spectrum:
    """Read a ``spectrum.json`` (or the one in folder ``path``); ``ValueError`` naming the file,
    the row and the field when it is not a valid spectrum."""
    path = Path(path)
    if path.is_dir():
        path = path / "spectrum.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such spectrum file")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UsageError(f"{path}: corrupt spectrum JSON ({e})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return Spectrum.from_dict(doc, str(path))
