"""Loading a checkpoint: rebuild its model through the registry, check and load its weights.

A checkpoint is data: loading it never imports a module the user did not allow. Its ``arch``
may name a ``package.module:factory`` (a user's own network); that module is imported only if
the user imported it already or passed ``trust_code=True``. And what ``usnet.json`` asks for is
bounded by the weights it names: an absurd ``num_classes`` is refused before it allocates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..convert import recorded
from ..models.checked import build_model
from ..models.sources import SOURCES, is_source_name
from ..nn import USBatchNorm2d, Width, format_width, width_space
from ..nn import width as at_width
from .folder import existing_folder
from .format import INFO, WEIGHTS, CheckpointError, check_weights, parse_info

_WRONG = ("missing weights", "unexpected weights")  # what load_state_dict's two lists hold


def load(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    trust_code: bool = False,
) -> nn.Module:
    """Rebuild the model of checkpoint ``path`` through the registry and load its weights.

    Works whatever widths were calibrated (their statistics and the record of them come back).
    Returns the model in eval mode at its full width, on ``map_location``. ``trust_code``
    allows importing the module of a ``package.module:factory`` model that is not imported yet
    (it runs that module's code): only for checkpoints you trust.
    """
    folder = existing_folder(path)
    doc = parse_info(folder)
    info_file, weights_file = folder / INFO, folder / WEIGHTS
    check_trusted(doc["arch"], trust_code, info_file)
    tensors = _read_weights(weights_file, doc)
    # the model holds no more than the file, statistics aside
    budget = 2 * weights_file.stat().st_size + 2**26
    limit = f"the size of {WEIGHTS} allows"
    with recorded(doc.get("conversion")):  # a converted source rebuilds without tracing
        model = build_model(doc["arch"], doc["arch_kwargs"], budget, str(info_file), limit)
    _check_shapes(model, tensors, weights_file, doc["arch"])
    result = model.load_state_dict(tensors, strict=False)
    wrong = [(what, keys) for what, keys in zip(_WRONG, result, strict=True) if keys]
    if wrong:
        raise CheckpointError(
            f"{weights_file}: does not match model {doc['arch']!r}: "
            + "; ".join(f"{what} {_few(keys)}" for what, keys in wrong)
        )
    space = width_space(model)
    space.calibrated = _calibrated(model, doc["calibrated"], info_file, weights_file)
    return model.to(map_location).eval()


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The validated contents of a checkpoint's ``usnet.json`` (``path``: the folder or one of
    its files)."""
    return parse_info(existing_folder(path))


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The user metadata saved with the checkpoint (training config, metrics, ...)."""
    return read_info(path)["meta"]


def check_trusted(arch: str, trust_code: bool, where: object) -> None:
    """``CheckpointError`` when building ``arch`` would import a module the user did not allow:
    a ``package.module:factory`` whose module is not imported yet, without ``trust_code``."""
    module = arch.partition(":")[0]
    if trust_code or not is_source_name(arch) or module in SOURCES or module in sys.modules:
        return
    raise CheckpointError(
        f"{where}: model {arch!r} is built by module {module!r}, and importing it runs its code; "
        f"a checkpoint is data, so usnet imports no module it names unless you allow it: "
        f"import {module} first, or pass trust_code=True (usnet: --trust-code) if you trust "
        "this checkpoint"
    )


def _few(keys: list[str], n: int = 5) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _read_weights(file: Path, doc: Mapping) -> dict[str, torch.Tensor]:
    """The tensors of ``file``, after checking it belongs to ``doc``'s save and is undamaged."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (a checkpoint folder holds {WEIGHTS} and {INFO})")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            found = (f.metadata() or {}).get("usnet_save_id")
            if found != doc["save_id"]:
                raise CheckpointError(
                    f"{file}: belongs to a different save than {INFO} (save id {found!r}, "
                    f"expected {doc['save_id']!r}); a save was interrupted or files were mixed, "
                    "save the model again"
                )
            check_weights(file, doc)
            return {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({e})") from None


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
        raise CheckpointError(
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
            raise CheckpointError(
                f"{info_file}: calibrated entry {entry!r} needs 'width' and 'key'"
            )
        try:
            config = space.canonical(entry["width"])
        except ValueError as e:
            raise CheckpointError(
                f"{info_file}: calibrated width {entry['width']!r}: {e}"
            ) from None
        key = space.resolve(entry["width"])[1]
        if key != entry["key"]:
            raise CheckpointError(
                f"{info_file}: calibrated width {format_width(config)} has network key "
                f"{entry['key']!r} but this usnet computes {key!r} (channel rounding changed?)"
            )
        with at_width(model, entry["width"]):
            for name, bn in norms:
                stats = bn.get_stats(key)
                shape = (bn.span.active,)
                if stats is None or stats[0].shape != shape or stats[1].shape != shape:
                    got = "missing" if stats is None else f"of shape {tuple(stats[0].shape)}"
                    raise CheckpointError(
                        f"{weights_file}: batch-norm statistics of {name} for calibrated width "
                        f"{format_width(config)} are {got}, expected {bn.span.active} channels"
                    )
        calibrated[config] = key
    return calibrated
