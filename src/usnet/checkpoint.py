"""Checkpoints: a folder of ``model.safetensors`` and ``usnet.json`` (design.md, "Checkpoints").

``model.safetensors`` holds every weight and every calibrated width's BN statistics (buffers
``...stats_<key>``); ``usnet.json`` holds what rebuilds the model through the registry (its
name and arguments), the width range, the calibrated width configs, the user's metadata
(training config, metrics) and versions. Nothing is ever unpickled. Every file is written to a
temporary name and renamed into place, so an interrupted save leaves the previous checkpoint
readable; the two files carry a shared save id, so a pair from different saves is detected.
Writers of a folder take turns (:func:`locked`), and the next write or load finishes what a
crash cut off (:func:`recover`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import io as _io
from .convert import recorded
from .io import atomic_write
from .models.checked import build_model
from .nn import USBatchNorm2d, Width, format_width, unwrap_model, width_space
from .nn import width as at_width

WEIGHTS = "model.safetensors"
INFO = "usnet.json"
FORMAT = "usnet-checkpoint"
FORMAT_VERSION = 1
_STATS = "stats_"  # USBatchNorm2d's buffer prefix: stats_<key> per calibrated width
_REQUIRED = {  # the fields of usnet.json and their types
    **{"format": str, "format_version": int, "save_id": str, "arch": str, "arch_kwargs": dict},
    **{"width_range": list, "calibrated": list, "meta": dict},
}


# -- locking and crash recovery -------------------------------------------------------------
@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[Path]:
    """Hold checkpoint ``path``'s lock for a read-modify-write, after finishing a cut-off save.

    Every writer of a checkpoint folder holds it (:func:`save`, :func:`save_statistics`,
    :func:`update_meta`, commands writing their outputs into the folder), so their changes never
    interleave; a second writer waits for the first, with a message. Re-entrant.
    """
    path = folder_of(path)
    with _io.locked(path, f"waiting for another usnet process writing checkpoint {path} ..."):
        _io.recover_folder(path, _complete)
        yield path


def recover(path: str | os.PathLike) -> None:
    """Restore the checkpoint a crash between :func:`save`'s two renames left as ``.NAME.old``
    (outputs written since into a new ``NAME`` folder are moved into it), and remove leftover
    ``.NAME.*.tmp`` folders of crashed saves. Every write, and a load that needs it, does this.
    """
    with locked(path):
        pass


def folder_of(path: str | os.PathLike) -> Path:
    """The checkpoint folder ``path`` names: a path to one of its two files means the folder."""
    path = Path(path)
    if path.name in (WEIGHTS, INFO) and path.is_file():
        path = path.parent  # a path to one of the two files means its checkpoint
    return path


def _complete(folder: Path) -> bool:
    return (folder / INFO).is_file() and (folder / WEIGHTS).is_file()


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

    The folder appears complete or not at all (:func:`usnet.io.replace_folder`: built under a
    temporary name with the other files of an existing folder, e.g. a spectrum, then renamed
    into place). Concurrent writers take turns (:func:`locked`). If the folder holds these very
    weights, the widths calibrated there that ``model`` lacks are kept: two processes
    calibrating different widths of one checkpoint both keep their statistics.
    """
    return _save(model, Path(path), meta, same_weights=False)


def save_statistics(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the calibrated widths of ``model``, loaded from checkpoint ``path``, back into it.

    For commands that calibrate a checkpoint (``usnet calibrate``, ``--save-stats``): the
    folder keeps its metadata and the widths others calibrated meanwhile; if it was saved with
    other weights since ``model`` was loaded, ``ValueError`` (its statistics would not fit them).
    """
    with locked(path) as folder:
        return _save(model, folder, read_meta(folder), same_weights=True)


def _save(
    model: nn.Module, path: Path, meta: Mapping[str, Any] | None, same_weights: bool
) -> Path:
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
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a checkpoint folder")
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

    _io.make_parent(path, "checkpoint")
    with locked(path):
        same = _merge_calibrated(path, doc, tensors)
        if same_weights and not same:
            raise ValueError(
                f"{path}: was saved with other weights since this model was loaded from it, so "
                "its batch-norm statistics would not fit them; load it and calibrate again"
            )
        _io.replace_folder(path, write, keep=lambda f: f.name not in (WEIGHTS, INFO))
    return path


def _merge_calibrated(path: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bool:
    """If checkpoint ``path`` holds these very weights (statistics aside), add the widths
    calibrated there but not here to ``doc`` and ``tensors``; returns whether it does."""
    try:
        old = read_info(path) if _complete(path) else None
        if old is None or (old["arch"], old["arch_kwargs"]) != (doc["arch"], doc["arch_kwargs"]):
            return False
        with safe_open(str(path / WEIGHTS), framework="pt", device="cpu") as f:
            keys, ours = set(f.keys()), {k for k in tensors if not _is_stats(k)}
            same = (f.metadata() or {}).get("usnet_save_id") == old["save_id"]
            if not same or {k for k in keys if not _is_stats(k)} != ours:
                return False
            for k in sorted(ours):
                t = f.get_tensor(k)
                if t.dtype != tensors[k].dtype or not torch.equal(t, tensors[k]):
                    return False
            have = {entry["key"] for entry in doc["calibrated"]}
            configs = {json.dumps(entry["width"], sort_keys=True) for entry in doc["calibrated"]}
            for entry in old["calibrated"]:
                key = entry.get("key") if isinstance(entry, dict) else None
                if not isinstance(key, str) or "width" not in entry:
                    continue
                if json.dumps(entry["width"], sort_keys=True) in configs:
                    continue  # calibrated again here: ours is newer
                stats = {k for k in keys if k.rsplit(".", 1)[-1] == _STATS + key}
                if key not in have and stats:
                    tensors.update({k: f.get_tensor(k) for k in stats})
                    have.add(key)
                if key in have:
                    doc["calibrated"].append({"width": entry["width"], "key": key})
    except (ValueError, OSError, SafetensorError):
        return False  # an unreadable checkpoint is simply replaced
    return True


def _is_stats(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith(_STATS)


def _versions() -> dict[str, str]:
    from . import __version__

    return {"usnet": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__}


# -- load -----------------------------------------------------------------------------------
def _folder(path: str | os.PathLike) -> Path:
    path = folder_of(path)
    if not _complete(path) and _io.aside(path).is_dir():
        try:  # a save was cut off between its two renames: restore the previous checkpoint
            recover(path)
        except OSError:  # e.g. a read-only folder: read it where it lies
            if _complete(_io.aside(path)):
                path = _io.aside(path)
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
    with locked(_folder(path)) as folder:
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
    tensors = _read_weights(weights_file, doc["save_id"])
    # what usnet.json asks for is bounded by the weights it names: an absurd num_classes is
    # refused before it allocates (the model holds no more than the file, statistics aside)
    budget = 2 * weights_file.stat().st_size + 2**26
    limit = f"the size of {WEIGHTS} allows"
    with recorded(doc.get("conversion")):  # a converted source rebuilds without tracing
        model = build_model(doc["arch"], doc["arch_kwargs"], budget, str(info_file), limit)
    _check_shapes(model, tensors, weights_file, doc["arch"])
    result = model.load_state_dict(tensors, strict=False)
    wrong = [(what, keys) for what, keys in zip(_WRONG, result, strict=True) if keys]
    if wrong:
        raise ValueError(
            f"{weights_file}: does not match model {doc['arch']!r}: "
            + "; ".join(f"{what} {_few(keys)}" for what, keys in wrong)
        )
    space = width_space(model)
    space.calibrated = _calibrated(model, doc["calibrated"], info_file, weights_file)
    return model.to(map_location).eval()


_WRONG = ("missing weights", "unexpected weights")  # what load_state_dict's two lists hold


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
                shape = (bn.span.active,)
                if stats is None or stats[0].shape != shape or stats[1].shape != shape:
                    got = "missing" if stats is None else f"of shape {tuple(stats[0].shape)}"
                    raise ValueError(
                        f"{weights_file}: batch-norm statistics of {name} for calibrated width "
                        f"{format_width(config)} are {got}, expected {bn.span.active} channels"
                    )
        calibrated[config] = key
    return calibrated
