"""What a checkpoint's two files hold: ``usnet.json`` (validated on reading) and the weights'
checksum it records.

``model.safetensors`` holds every weight and every calibrated width's BN statistics (buffers
``...stats_<key>``); ``usnet.json`` holds what rebuilds the model through the registry (its
name and arguments), the width range, the calibrated width configs, the user's metadata
(training config, metrics), versions, and the SHA-256 of ``model.safetensors``, so flipped or
lost bytes are refused on loading instead of computing something else. The two files carry a
shared save id, so a pair from different saves is detected; the weights id names the save that
wrote the weights (kept by saves that only add statistics).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch

from ..errors import UsageError
from ..io import write_text

WEIGHTS = "model.safetensors"
INFO = "usnet.json"
FORMAT = "usnet-checkpoint"
FORMAT_VERSION = 1
CHECKSUM = "weights_sha256"  # optional: checkpoints written before it was recorded lack it
WEIGHTS_ID = "weights_id"  # optional: before it was recorded, every save had new weights


def weights_id(doc: Mapping[str, Any]) -> str:
    """Which weights a checkpoint holds (statistics aside): the save id of the save that wrote
    them. A save of the same weights with other statistics (``usnet calibrate``) keeps it, so
    ``resume.pt`` still recognises its checkpoint after the user calibrated more widths."""
    found = doc.get(WEIGHTS_ID)
    return found if isinstance(found, str) else doc["save_id"]
_REQUIRED = {  # the fields of usnet.json and their types
    **{"format": str, "format_version": int, "save_id": str, "arch": str, "arch_kwargs": dict},
    **{"width_range": list, "calibrated": list, "meta": dict},
}
#: usnet.json is small; anything larger is not one (and is not read into memory whole).
MAX_INFO_BYTES = 64 * 2**20


class CheckpointError(UsageError):
    """A checkpoint folder or file that cannot be read as one (missing, damaged, from another
    save or version), or a model that cannot be saved as one. Its message is one line naming
    the file and what to do."""


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(2**22):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights(file: Path, doc: Mapping[str, Any]) -> None:
    """``CheckpointError`` when ``file`` does not hash to the checksum ``usnet.json`` records."""
    expected = doc.get(CHECKSUM)
    if expected is not None and file_checksum(file) != expected:
        raise CheckpointError(
            f"{file}: damaged: its bytes do not match the checksum recorded in {INFO}; restore "
            "the checkpoint from a copy (or save the model again)"
        )


def parse_info(folder: Path) -> dict[str, Any]:
    """The validated contents of ``folder/usnet.json`` (no recovery: see :func:`.reading`)."""
    file = folder / INFO
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (a checkpoint folder holds {WEIGHTS} and {INFO})")
    if file.stat().st_size > MAX_INFO_BYTES:
        raise CheckpointError(f"{file}: {file.stat().st_size} bytes, too large for a {INFO}")
    try:
        doc = json.loads(file.read_text())
    except UnicodeDecodeError:
        raise CheckpointError(f"{file}: not a text file (corrupt?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: corrupt or truncated JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{file}: nested too deeply to be a {INFO}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(doc).__name__}")
    for field, kind in _REQUIRED.items():
        if field not in doc:
            raise CheckpointError(f"{file}: missing field {field!r}")
        if not isinstance(doc[field], kind):
            raise CheckpointError(
                f"{file}: field {field!r} must be a {kind.__name__}, got {_short(doc[field])}"
            )
    if doc["format"] != FORMAT or doc["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: format {_short(doc['format'])} version {doc['format_version']} is not one "
            f"this usnet reads ({FORMAT!r} up to version {FORMAT_VERSION}); upgrade usnet"
        )
    if not isinstance(doc.get(CHECKSUM, ""), str):
        raise CheckpointError(f"{file}: field {CHECKSUM!r} must be a string")
    return doc


def write_info(folder: Path, doc: Mapping[str, Any]) -> None:
    write_text(folder / INFO, json.dumps(doc, indent=2) + "\n")


def check_json(field: str, value: Any) -> None:
    """``CheckpointError`` unless ``value`` (``arch_kwargs``, ``meta``) can go into usnet.json."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {field} must be JSON-serialisable: {e}") from None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("usnet")
    except PackageNotFoundError:  # run from a source tree
        ours = "unknown"
    return {"usnet": ours, "torch": torch.__version__, "safetensors": safetensors.__version__}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

