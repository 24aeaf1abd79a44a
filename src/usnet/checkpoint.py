"""Checkpoints: a folder of ``model.safetensors`` and ``usnet.json`` (design.md, "Checkpoints").

``model.safetensors`` holds every weight and every calibrated width's BN statistics (buffers
``...stats_<key>``); ``usnet.json`` holds what rebuilds the model through the registry (its
name and arguments), the width range, the calibrated width configs, the user's metadata
(training config, metrics) and versions. Nothing is ever unpickled. Every file is written to a
temporary name and renamed into place, so an interrupted save leaves the previous checkpoint
readable; the two files carry a shared save id, so a pair from different saves is detected.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .models import create_model
from .nn import USBatchNorm2d, Width, format_width, width_space
from .nn import width as at_width
from .nn.space import unwrap_model

WEIGHTS = "model.safetensors"
INFO = "usnet.json"
FORMAT = "usnet-checkpoint"
FORMAT_VERSION = 1
_REQUIRED = {
    "format": str,
    "format_version": int,
    "save_id": str,
    "arch": str,
    "arch_kwargs": dict,
    "width_range": list,
    "calibrated": list,
    "meta": dict,
}


# -- atomic files ---------------------------------------------------------------------------
def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    A crash before the rename leaves the old file untouched; the temporary file is removed when
    ``write`` fails.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's private 0600 is not what a user expects
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_state(obj: object, path: str | os.PathLike) -> Path:
    """Save tensors/containers of tensors and plain values (e.g. optimizer state) atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load what :func:`save_state` wrote, with ``weights_only=True``: nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such state file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise ValueError(f"{path}: not a readable state file ({type(e).__name__}: {e})") from None


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


# -- save -----------------------------------------------------------------------------------
def _width_to_json(config: Width) -> float | dict[str, float]:
    return dict(config) if isinstance(config, tuple) else config


def save(model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` (built by ``usnet.create_model``) and JSON-able ``meta`` into folder ``path``.

    The folder appears complete or not at all: it is built under a temporary name (with the
    other files of an existing folder copied in, e.g. a spectrum), then renamed into place; an
    existing folder is first renamed aside to ``.NAME.old``, which :func:`load` falls back to if
    a crash comes between the two renames.
    """
    path = Path(path)
    model = unwrap_model(model)
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ValueError(
            f"{type(model).__name__} has no registry name: build it with usnet.create_model(name, "
            f"...) so that {path / INFO} can rebuild it"
        )
    for field, value in (("arch_kwargs", getattr(model, "arch_kwargs", {})), ("meta", meta or {})):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {field} must be JSON-serialisable: {e}") from None
    space = width_space(model)
    save_id = uuid.uuid4().hex
    bns = [m for m in model.modules() if isinstance(m, USBatchNorm2d)]
    # widths whose statistics are really there (a load_state_dict may have replaced them)
    present = set(bns[0].calibrated_keys()) if bns else set(space.calibrated.values())
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "save_id": save_id,
        "arch": arch,
        "arch_kwargs": dict(getattr(model, "arch_kwargs", {})),
        "width_range": [space.width_min, space.width_max],
        "calibrated": [
            {"width": _width_to_json(config), "key": key}
            for config, key in space.calibrated.items()
            if key in present
        ],
        "meta": dict(meta or {}),
        "versions": _versions(),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    def write(folder: Path) -> None:
        atomic_write(
            folder / WEIGHTS,
            lambda tmp: save_file(tensors, tmp, metadata={"usnet_save_id": save_id}),
        )
        _write_json(folder / INFO, doc)  # last: it names the weights it belongs to

    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a checkpoint folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        old = _aside(path)
        source = path if path.is_dir() else old if old.is_dir() else None
        if source is not None:  # keep what else the folder holds (spectrum files, exports...)
            for f in source.iterdir():
                if f.is_file() and f.name not in (WEIGHTS, INFO):
                    shutil.copy2(f, tmp / f.name)
        write(tmp)
        if path.is_dir():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _aside(path: Path) -> Path:
    """Where :func:`save` moves the previous checkpoint while it renames the new one in."""
    return path.with_name(f".{path.name}.old")


def _versions() -> dict[str, str]:
    from . import __version__

    return {
        "usnet": __version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
    }


# -- load -----------------------------------------------------------------------------------
def _folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS, INFO):
        path = path.parent  # a path to one of the two files means its checkpoint
    if not path.exists() and _aside(path).is_dir():
        path = _aside(path)  # a save was cut off between its two renames: the previous one
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if not path.is_dir():
        raise ValueError(f"{path}: not a checkpoint folder (expected {WEIGHTS} and {INFO} in it)")
    return path


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The validated contents of a checkpoint's ``usnet.json``."""
    file = _folder(path) / INFO
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (a checkpoint folder holds {WEIGHTS} and {INFO})")
    try:
        doc = json.loads(file.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{file}: not a text file (corrupt?)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: corrupt or truncated JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(doc).__name__}")
    for field, kind in _REQUIRED.items():
        if field not in doc:
            raise ValueError(f"{file}: missing field {field!r}")
        if not isinstance(doc[field], kind):
            raise ValueError(
                f"{file}: field {field!r} must be a {kind.__name__}, got {doc[field]!r}"
            )
    if doc["format"] != FORMAT or doc["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{file}: format {doc['format']!r} version {doc['format_version']} is not one this "
            f"usnet reads ({FORMAT!r} up to version {FORMAT_VERSION}); upgrade usnet"
        )
    return doc


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The user metadata saved with the checkpoint (training config, metrics, ...)."""
    return read_info(path)["meta"]


def update_meta(path: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the checkpoint's user metadata (atomically); returns the new metadata."""
    folder = _folder(path)
    doc = read_info(folder)
    doc["meta"].update(fields)
    try:
        json.dumps(doc["meta"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint meta must be JSON-serialisable: {e}") from None
    _write_json(folder / INFO, doc)
    return doc["meta"]


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of checkpoint ``path`` through the registry and load its weights.

    Works whatever widths were calibrated (their statistics and the record of them come back).
    Returns the model in eval mode at its full width, on ``map_location``.
    """
    folder = _folder(path)
    doc = read_info(folder)
    info_file, weights_file = folder / INFO, folder / WEIGHTS
    try:
        model = create_model(doc["arch"], **doc["arch_kwargs"])
    except ValueError as e:
        raise ValueError(f"{info_file}: {e}") from None
    tensors = _read_weights(weights_file, doc["save_id"])
    _check_shapes(model, tensors, weights_file, doc["arch"])
    result = model.load_state_dict(tensors, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights_file}: does not match model {doc['arch']!r}: "
            + "; ".join(
                f"{what} {_few(keys)}"
                for what, keys in (
                    ("missing weights", result.missing_keys),
                    ("unexpected weights", result.unexpected_keys),
                )
                if keys
            )
        )
    space = width_space(model)
    space.calibrated = _calibrated(model, doc["calibrated"], info_file, weights_file)
    return model.to(map_location).eval()


def _few(keys: list[str], n: int = 5) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _read_weights(file: Path, save_id: str) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (a checkpoint folder holds {WEIGHTS} and {INFO})")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            found = (f.metadata() or {}).get("usnet_save_id")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"{file}: corrupt or truncated safetensors file ({e})") from None
    if found != save_id:
        raise ValueError(
            f"{file}: belongs to a different save than {INFO} (save id {found!r}, expected "
            f"{save_id!r}); a save was interrupted or files were mixed, save the model again"
        )
    return tensors


def _check_shapes(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], file: Path, arch: str
) -> None:
    expected = model.state_dict()
    wrong = [
        f"{k} has shape {tuple(t.shape)}, expected {tuple(expected[k].shape)}"
        for k, t in tensors.items()
        if k in expected and t.shape != expected[k].shape
    ]
    if wrong:
        raise ValueError(
            f"{file}: weights of the wrong shape for model {arch!r} with the arguments in "
            f"{INFO}: {_few(wrong, 3)}"
        )


def _calibrated(
    model: nn.Module, entries: list, info_file: Path, weights_file: Path
) -> dict[Width, str]:
    """Restore the record of calibrated widths and check every BN has their statistics."""
    space = width_space(model)
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, USBatchNorm2d)]
    calibrated: dict[Width, str] = {}
    for entry in entries:
        if not (isinstance(entry, dict) and {"width", "key"} <= set(entry)):
            raise ValueError(f"{info_file}: calibrated entry {entry!r} needs 'width' and 'key'")
        try:
            config = space.canonical(entry["width"])
        except ValueError as e:
            raise ValueError(f"{info_file}: calibrated width {entry['width']!r}: {e}") from None
        key = space.resolve(entry["width"])[1]
        if key != entry["key"]:
            raise ValueError(
                f"{info_file}: calibrated width {format_width(config)} has network key "
                f"{entry['key']!r} but this usnet computes {key!r} (channel rounding changed?)"
            )
        with at_width(model, entry["width"]):
            for name, bn in norms:
                stats = bn.get_stats(key)
                shape = (bn.ref.active,)
                if stats is None or stats[0].shape != shape or stats[1].shape != shape:
                    got = "missing" if stats is None else f"of shape {tuple(stats[0].shape)}"
                    raise ValueError(
                        f"{weights_file}: batch-norm statistics of {name} for calibrated width "
                        f"{format_width(config)} are {got}, expected {bn.ref.active} channels"
                    )
        calibrated[config] = key
    return calibrated
