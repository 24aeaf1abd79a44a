"""Export files of the dense network a width selects.

:func:`save` writes the network :func:`~usnet.export.dense.extract` builds to a file a
deployment loads without usnet:

- ``"pt"``: a ``torch.export`` ExportedProgram (``.pt2``; ``torch.export.load(f).module()``).
  PyTorch's own portable module format: a graph of standard ATen ops plus weights, so it needs
  no class definitions (a pickled ``nn.Module`` would need usnet's classes to unpickle, and
  unpickling runs code).
- ``"torchscript"``: ``torch.jit.trace`` (``torch.jit.load(f)``), for C++/mobile runtimes.
- ``"onnx"``: the TorchScript-based ONNX exporter (works offline without onnxscript), with a
  dynamic batch axis, for onnxruntime and other ONNX runtimes.

Every file has a dynamic batch axis, records what it is (``usnet.json``: architecture, width,
input size, versions) and is checked after writing against the network it stands for.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..io import make_parent, writable_target, write_bytes
from ..nn import WidthConfig, format_width, modes_kept, width_space
from ..nn import width as at_width
from ..shapes import example_input
from ..version import __version__
from .dense import extract

#: Export formats, the file suffix each conventionally has, and how close a loaded file's output
#: must be to the US model's (the issue's tolerances).
FORMATS = ("pt", "torchscript", "onnx")
SUFFIXES = {"pt": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = {"pt": 1e-5, "torchscript": 1e-5, "onnx": 1e-4}
ONNX_OPSET = 17
META_FILE = "usnet.json"  # TorchScript / ExportedProgram extra file; ONNX metadata key "usnet"


def format_of(path: str | os.PathLike) -> str | None:
    """The export format a file name's suffix conventionally means (``None``: no known one)."""
    return next((f for f, s in SUFFIXES.items() if Path(path).suffix == s), None)


def save(
    model: nn.Module,
    width: WidthConfig | None,
    path: str | os.PathLike,
    format: str = "pt",
    input_size: int | tuple[int, ...] | None = None,
    *,
    verify: bool = True,
) -> Path:
    """Write the dense network of ``model`` at ``width`` to ``path`` as ``format`` (see module doc).

    ``width``: a float or ``{group: width}`` (``None``: the current width); it must be calibrated,
    or calibration data attached (:func:`usnet.attach_calibration_data`), which calibrates it now.
    ``input_size``: the example input's shape without batch (default: the model's
    ``input_size``; an int replaces the image side). The file is traced on CPU with a dynamic
    batch axis and written atomically; with ``verify`` it is loaded back and must reproduce the
    dense network at batch sizes 1 and 3 within :data:`TOLERANCE`, else ``ValueError``.
    """
    if format not in FORMATS:
        raise UsageError(f"export format {format!r} is unknown; allowed: {list(FORMATS)}")
    from ..shapes import input_shape

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give the file to write, e.g. {path / 'model'}")
    writable_target(path)  # not /dev/null or a FIFO: refused before the work, not after
    shape = input_shape(model, input_size)
    _check_fits(model, width, shape)  # before calibrating runs a forward at that size
    _calibrate_attached(model, width, shape)
    dense = extract(model, width).cpu().float().requires_grad_(False)
    # batch 2: a batch of 1 would let tracers specialise the batch axis
    x = example_input(dense, 2, shape, "cpu", random=True)
    with torch.no_grad():
        outputs = _flat(dense(x))
    info = _info(model, width, shape, format, len(outputs))
    make_parent(path, "export file")
    # serialised in memory, then written by Python: a full disk is an OSError naming the
    # file (torch's C++ writers abort the process or raise without the path)
    with _unfused_attention():
        write_bytes(path, _WRITERS[format](dense, x, info))
    if verify:
        err = check(path, dense, shape, format)
        if err > TOLERANCE[format]:
            raise UsageError(
                f"{path}: the exported {format} network differs from the model by {err:.3g} "
                f"(allowed {TOLERANCE[format]:g}); the model's forward may not trace faithfully"
            )
    return path


def _check_fits(model: nn.Module, width: WidthConfig | None, shape: tuple) -> None:
    """Refuse an input size (``--input-size``, a hand-edited ``usnet.json``) whose forward at
    the check's batch of 3 would not fit in memory, before anything is allocated. Measured on
    the slimmable model at ``width`` in training mode (batch statistics: no calibration
    needed), whose activations are the dense network's."""
    from ..devices import physical_memory
    from ..shapes import activation_bytes

    with at_width(model, _config(model, width)), modes_kept(model):
        model.train()
        need = activation_bytes(model, shape, 3)
    have = physical_memory()
    if need > have // 2:
        raise UsageError(
            f"input size {'x'.join(map(str, shape))}: exporting and checking it needs about "
            f"{need / 2**30:.3g} GiB of activations, more than half of this machine's "
            f"{have / 2**30:.3g} GiB; give a smaller --input-size"
        )


def load_file(path: str | os.PathLike, format: str | None = None) -> Callable[[Tensor], Any]:
    """A callable running an exported file (format from the suffix when not given).

    What a deployment does without usnet: ``torch.export.load(f).module()``,
    ``torch.jit.load(f)`` or an ``onnxruntime.InferenceSession``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported file")
    format = format or format_of(path)
    if format is None:
        raise UsageError(
            f"{path}: cannot tell the format from suffix {path.suffix!r}; pass format= one of "
            f"{list(FORMATS)}"
        )
    if format == "pt":
        with open(path, "rb") as f:
            return torch.export.load(f).module()
    if format == "torchscript":
        with _quiet_jit():
            return torch.jit.load(str(path), map_location="cpu")
    if format == "onnx":
        ort = _require("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: Tensor) -> Any:
            outs = [torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})]
            return outs[0] if len(outs) == 1 else tuple(outs)

        return run
    raise UsageError(f"export format {format!r} is unknown; allowed: {list(FORMATS)}")


def read_info(path: str | os.PathLike, format: str | None = None) -> dict[str, Any]:
    """The ``usnet.json`` record an exported file carries (architecture, width, input size)."""
    path = Path(path)
    format = format or format_of(path)
    if format == "onnx":
        onnx = _require("onnx")
        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        text = props.get("usnet")
    elif format in ("pt", "torchscript"):
        extra = {META_FILE: ""}
        if format == "pt":
            with open(path, "rb") as f:
                torch.export.load(f, extra_files=extra)
        else:
            with _quiet_jit():
                torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
        text = extra[META_FILE] or None
    else:
        raise UsageError(f"{path}: pass format= one of {list(FORMATS)}")
    if not text:
        raise UsageError(f"{path}: carries no usnet record (not written by usnet.export.save?)")
    return json.loads(text)


def check(
    path: str | os.PathLike,
    reference: nn.Module,
    shape: tuple[int, ...],
    format: str | None = None,
    batch_sizes: tuple[int, ...] = (1, 3),
) -> float:
    """Largest difference between the file's outputs and ``reference``'s, relative to ``max(1, |ref|)``.

    Runs seeded random inputs at each batch size (1 and 3: the dynamic batch axis).
    """
    run = load_file(path, format)
    g = torch.Generator().manual_seed(0)
    err = 0.0
    for n in batch_sizes:
        x = example_input(reference, n, shape, "cpu", g, random=True)
        with torch.no_grad():
            want, got = _flat(reference(x)), _flat(run(x))
        if len(got) != len(want):
            return float("inf")
        for a, b in zip(got, want, strict=True):
            if a.shape != b.shape:
                return float("inf")
            scale = max(1.0, b.abs().max().item())
            err = max(err, (a.float() - b.float()).abs().max().item() / scale)
    return err


def _flat(out: Any) -> list[Tensor]:
    """A forward's tensors in order (a tensor, or a tuple/list of them)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and all(isinstance(t, Tensor) for t in out):
        return list(out)
    raise UsageError(
        f"exporting needs a forward that returns a tensor or a tuple of tensors, got "
        f"{type(out).__name__}"
    )


def _calibrate_attached(model: nn.Module, width: WidthConfig | None, shape: tuple) -> None:
    """Calibrate ``width`` now if calibration data is attached (it calibrates on first eval use)."""
    if getattr(model, "_usnet_calibration_hook", None) is None:
        return
    from ..calibration import is_calibrated

    config = _config(model, width)
    if is_calibrated(model, config):
        return
    with at_width(model, config), modes_kept(model), torch.no_grad():
        model.eval()
        model(example_input(model, 2, shape))


def _config(model: nn.Module, width: WidthConfig | None) -> WidthConfig:
    """The width to export: ``width``, or the model's current one."""
    current = width_space(model).config
    return width if width is not None else dict(current) if isinstance(current, tuple) else current


def _info(
    model: nn.Module, width: WidthConfig | None, shape: tuple, format: str, outputs: int
) -> dict[str, Any]:

    space = width_space(model)
    config = space.config if width is None else space.canonical(width)
    plain = dict(config) if isinstance(config, tuple) else config
    return {
        "format": "usnet-export",
        "export_format": format,
        "arch": getattr(model, "arch", type(model).__name__),
        "arch_kwargs": dict(getattr(model, "arch_kwargs", {}) or {}),
        "width": plain,
        "width_label": format_width(config),
        "channels": space.channels(plain),
        "input_size": list(shape),
        "dynamic_axes": {"input": [0], "output": [0]},
        "outputs": outputs,
        "usnet": __version__,
        "torch": torch.__version__,
    }


def _json(info: dict[str, Any]) -> str:
    try:
        return json.dumps(info)
    except (TypeError, ValueError):  # arch_kwargs of a custom model may hold anything
        return json.dumps({**info, "arch_kwargs": repr(info["arch_kwargs"])})


def _write_pt(dense: nn.Module, x: Tensor, info: dict[str, Any]) -> bytes:
    batch = torch.export.Dim("batch")
    program = torch.export.export(dense, (x,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={META_FILE: _json(info)})
    return buffer.getvalue()


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch.jit is deprecated (DeprecationWarning, and FutureWarning since torch 2.14): the
    TorchScript format is what the user asked for, so its warnings are no news to them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _write_torchscript(dense: nn.Module, x: Tensor, info: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with _quiet_jit():
        traced = torch.jit.trace(dense, (x,), check_trace=False)  # save() verifies the file
        torch.jit.save(traced, buffer, _extra_files={META_FILE: _json(info)})
    return buffer.getvalue()


def _write_onnx(dense: nn.Module, x: Tensor, info: dict[str, Any]) -> bytes:
    onnx = _require("onnx")
    n = info["outputs"]
    outputs = ["output"] if n == 1 else [f"output{i}" for i in range(n)]
    axes = {name: {0: "batch"} for name in ("input", *outputs)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            dense,
            (x,),
            buffer,  # type: ignore[arg-type]  # the TorchScript-based exporter takes a file object
            dynamo=False,  # the torch.export-based exporter needs onnxscript; this one does not
            input_names=["input"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "usnet", _json(info)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


_WRITERS: dict[str, Callable[[nn.Module, Tensor, dict[str, Any]], bytes]] = {
    "pt": _write_pt,
    "torchscript": _write_torchscript,
    "onnx": _write_onnx,
}


@contextlib.contextmanager
def _unfused_attention() -> Iterator[None]:
    """torch's attention modules without their fused inference kernels while a file is written:
    in eval mode without gradients ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
    run ``_native_multi_head_attention`` / ``_transformer_encoder_layer_fwd``, which ONNX has no
    form for; their other path computes the same with exportable operations. (The switch is
    torch's process-wide one: it is set back at once.)"""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"ONNX export needs the {name!r} package: pip install 'usnet[onnx]'"
        ) from None
