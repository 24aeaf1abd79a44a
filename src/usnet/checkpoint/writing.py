"""Writing a checkpoint: :func:`save`, :func:`save_statistics`, :func:`update_meta`.

A save builds the new folder under a temporary name with every entry of the existing folder
that is not one of the checkpoint's two files (spectrum files, exports, a user's subfolders),
then renames it into place (:func:`usnet.io.replace_folder`), so the folder appears complete or
not at all. Weights are serialised in memory and written with Python, so a full disk is an
``OSError`` naming the file; their checksum goes into ``usnet.json``.
"""

from __future__ import annotations

import datetime
import errno
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save as serialise
from torch import nn

from .. import io as _io
from ..nn import USBatchNorm2d, Width, unwrap_model, width_space
from .folder import existing_folder, locked, real_folder
from .format import (
    CHECKSUM,
    FORMAT,
    FORMAT_VERSION,
    INFO,
    WEIGHTS,
    WEIGHTS_ID,
    CheckpointError,
    check_json,
    checksum,
    parse_info,
    versions,
    weights_id,
    write_info,
)
from .merge import merge_calibrated


def save(model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Save ``model`` (built by ``usnet.create_model``) and JSON-able ``meta`` into folder ``path``.

    The folder appears complete or not at all, and keeps every entry it does not own (a
    spectrum, an ``exports/`` folder). Concurrent writers take turns (:func:`locked`). If the
    folder holds these very weights, the widths calibrated there that ``model`` lacks are kept:
    two processes calibrating different widths of one checkpoint both keep their statistics,
    and with ``meta=None`` its metadata too (the training config that ``usnet calibrate``,
    ``spectrum`` and ``export`` read; pass ``meta={}`` to clear it). Returns ``path`` as given.
    """
    _save(model, Path(path), meta, same_weights=False)
    return Path(path)


def save_statistics(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the calibrated widths of ``model``, loaded from checkpoint ``path``, back into it.

    For commands that calibrate a checkpoint (``usnet calibrate``, ``--save-stats``): the
    folder keeps its metadata and the widths others calibrated meanwhile; if it was saved with
    other weights since ``model`` was loaded, ``CheckpointError`` (its statistics would not fit
    them).
    """
    with locked(path) as folder:
        _save(model, folder, parse_info(folder)["meta"], same_weights=True)
    return Path(path)


def update_meta(path: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the checkpoint's user metadata (atomically); returns the new metadata."""
    with locked(existing_folder(path)) as folder:
        doc = parse_info(folder)
        doc["meta"].update(fields)
        check_json("meta", doc["meta"])
        write_info(folder, doc)
    return doc["meta"]


def _width_to_json(config: Width) -> float | dict[str, float]:
    return dict(config) if isinstance(config, tuple) else config


def _save(model: nn.Module, path: Path, meta: Mapping[str, Any] | None, same_weights: bool) -> None:
    model = unwrap_model(model)
    arch = getattr(model, "arch", None)
    if arch is None:
        raise CheckpointError(
            f"{type(model).__name__} has no registry name: build it with usnet.create_model(name, "
            f"...) so that {path / INFO} can rebuild it"
        )
    check_json("arch_kwargs", getattr(model, "arch_kwargs", {}))
    check_json("meta", meta or {})
    folder = real_folder(path)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{path}: exists and is not a checkpoint folder")
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
        "conversion": getattr(model, "conversion", None),  # a converted source's, to rebuild it
        "versions": versions(),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _io.make_parent(folder, "checkpoint")
    with locked(folder):
        same = merge_calibrated(folder, doc, tensors)
        if same_weights and not same:
            raise CheckpointError(
                f"{path}: was saved with other weights since this model was loaded from it, so "
                "its batch-norm statistics would not fit them; load it and calibrate again"
            )
        if same:
            old = parse_info(folder)
            doc[WEIGHTS_ID] = weights_id(old)
            if meta is None:  # a loaded checkpoint saved back keeps its training config
                doc["meta"] = old["meta"]
        else:
            doc[WEIGHTS_ID] = save_id
        data = serialise(tensors, metadata={"usnet_save_id": save_id})
        doc[CHECKSUM] = checksum(data)

        def write(tmp: Path) -> None:
            _io.write_bytes(tmp / WEIGHTS, data)
            write_info(tmp, doc)  # last: it names the weights it belongs to

        try:
            _io.replace_folder(folder, write, own=lambda entry: entry.name in (WEIGHTS, INFO))
        except OSError as e:
            if e.errno in _FULL:  # it names a temporary folder: name the checkpoint
                raise OSError(e.errno, e.strerror, str(path)) from None
            raise


_FULL = (errno.ENOSPC, errno.EDQUOT)


__all__ = ["save", "save_statistics", "update_meta"]
