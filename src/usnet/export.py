"""The dense network a width selects, built of standard torch layers (design.md, "export.py").

:func:`extract` deep-copies a US model at one width and swaps every slimmable module for its
dense equivalent: ``USConv2d`` -> ``nn.Conv2d`` and ``USLinear`` -> ``nn.Linear`` with sliced
weights, ``USBatchNorm2d`` -> ``nn.BatchNorm2d`` with that width's calibrated statistics as its
running statistics, a switchable BN -> the switch's own ``nn.BatchNorm2d``. Containers become
``nn.Sequential``; residual blocks become :class:`Residual`. Model families teach it their own
blocks with :func:`register_dense`, or give a module a ``to_dense()`` method (no import of this
module needed); a module neither way is kept (deep-copied, children converted, still at the
extracted width), so new families export before they register.

:func:`save` writes that dense network to a file a deployment loads without usnet:

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

import copy
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .models.mobilenet_v1 import USMobileNetV1
from .models.mobilenet_v2 import InvertedResidual, USMobileNetV2
from .nn import (
    SwitchableBatchNorm2d,
    USBatchNorm2d,
    USConv2d,
    USLinear,
    WidthConfig,
    WidthSpace,
    format_width,
    width_space,
)
from .nn import width as at_width


class Residual(nn.Module):
    """``x + body(x)``: the one block standard torch lacks. Plain and TorchScript-able."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


#: A converter gets a deep copy of a module whose children are already dense, and returns its
#: dense replacement; ``stats`` says whether calibrated BN statistics are wanted.
Converter = Callable[[nn.Module, bool], nn.Module]
_CONVERTERS: dict[type, Converter] = {}


def register_dense(cls: type) -> Callable[[Converter], Converter]:
    """Register how ``cls`` (and its subclasses) becomes standard torch modules."""

    def deco(fn: Converter) -> Converter:
        _CONVERTERS[cls] = fn
        return fn

    return deco


def extract(model: nn.Module, width: WidthConfig | None, *, stats: bool = True) -> nn.Module:
    """The dense sub-network of ``model`` at ``width`` (``None``: its current width), in eval mode.

    Weights are sliced copies (the result shares no storage with ``model``); with ``stats`` (the
    default) every BN carries the width's calibrated statistics, so the result's eval output
    equals the US model's; an uncalibrated width raises the model's ``UncalibratedWidthError``.
    ``stats=False`` skips them (BN running statistics stay 0/1): the architecture and weights
    only, e.g. for counting parameters. The model's own width and modes are unchanged.
    """
    if width is None:
        dense = _copy(model)
    else:
        with at_width(model, width):
            dense = _copy(model)
    dense = _convert(dense, stats)
    _own(dense, model)
    if isinstance(getattr(dense, "width_space", None), WidthSpace):
        del dense.width_space  # no longer a US model: the width is fixed
    if getattr(model, "input_size", None) is not None:
        dense.input_size = tuple(model.input_size)
    return dense.eval()


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy of the US model's modules (unwrapped from DDP / torch.compile).

    Parameters, buffers and attached data sets are shared with ``model`` rather than copied:
    converters slice and clone what they keep, and :func:`_own` clones whatever is left shared.
    """
    space = width_space(model)  # a clear TypeError for a model that is not slimmable
    while getattr(model, "width_space", None) is not space:
        model = getattr(model, "module", None) or model._orig_mod
    memo: dict[int, object] = {}
    for m in model.modules():
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None:
                memo[id(t)] = t
        for value in vars(m).values():
            if isinstance(value, (torch.utils.data.DataLoader, torch.utils.data.Dataset)):
                memo[id(value)] = value
        cache = vars(m).get("_slice_cache")
        if cache is not None:
            memo[id(cache)] = {}
    return copy.deepcopy(model, memo)


def _own(dense: nn.Module, model: nn.Module) -> None:
    """Clone every tensor ``dense`` still shares with ``model``, so the two never alias."""
    shared = {id(t) for t in (*model.parameters(), *model.buffers())}
    with torch.no_grad():
        for m in dense.modules():
            for store in (m._parameters, m._buffers):
                for name, t in store.items():
                    if t is not None and id(t) in shared:
                        store[name] = _param(t) if isinstance(t, nn.Parameter) else t.clone()


def _convert(module: nn.Module, stats: bool) -> nn.Module:
    """Post-order: dense children first, then the module itself."""
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = _convert(child, stats)
    for cls in type(module).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls](module, stats)
    to_dense = getattr(module, "to_dense", None)
    if callable(to_dense):
        return to_dense()
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        # e.g. a named block type that only inherits Sequential's forward
        return nn.Sequential(OrderedDict(module._modules))
    return module


def _param(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)


@register_dense(USConv2d)
def _conv(m: USConv2d, stats: bool) -> nn.Conv2d:
    cin, cout = m.in_ref.active, m.out_ref.active
    groups = cout if m.depthwise else 1
    conv = nn.Conv2d(
        cin,
        cout,
        m.kernel_size,
        m.stride,
        m.padding,
        m.dilation,
        groups,
        bias=m.bias is not None,
        device=m.weight.device,
        dtype=m.weight.dtype,
    )
    conv.weight = _param(m.weight[:cout] if m.depthwise else m.weight[:cout, :cin])
    if m.bias is not None:
        conv.bias = _param(m.bias[:cout])
    return conv


@register_dense(USLinear)
def _linear(m: USLinear, stats: bool) -> nn.Linear:
    cin, cout = m.in_ref.active, m.out_ref.active
    linear = nn.Linear(
        cin, cout, bias=m.bias is not None, device=m.weight.device, dtype=m.weight.dtype
    )
    linear.weight = _param(m.weight[:cout, :cin])
    if m.bias is not None:
        linear.bias = _param(m.bias[:cout])
    return linear


@register_dense(USBatchNorm2d)
def _bn(m: USBatchNorm2d, stats: bool) -> nn.BatchNorm2d:
    c = m.ref.active
    bn = nn.BatchNorm2d(c, eps=m.eps, device=m.weight.device, dtype=m.weight.dtype)
    bn.weight, bn.bias = _param(m.weight[:c]), _param(m.bias[:c])
    if stats:
        found = m.get_stats(m.space.key)
        if found is None:  # let the layer raise its own error, which says how to calibrate
            m.eval()
            m(torch.zeros(1, c, 1, 1, device=m.weight.device, dtype=m.weight.dtype))
            raise AssertionError("USBatchNorm2d accepted an uncalibrated width")  # unreachable
        mean, var = found
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    return bn


@register_dense(SwitchableBatchNorm2d)
def _switchable(m: SwitchableBatchNorm2d, stats: bool) -> nn.BatchNorm2d:
    config = m.space.config
    if config not in m.switches:
        raise ValueError(
            f"width {format_width(config)} is not a switch of this model; "
            f"allowed: {list(m.switches)}"
        )
    return m.bn[m.switches.index(config)]


@register_dense(InvertedResidual)
def _inverted_residual(m: InvertedResidual, stats: bool) -> nn.Module:
    return Residual(m.body) if m.residual else m.body


@register_dense(USMobileNetV1)
@register_dense(USMobileNetV2)
def _mobilenet(m: USMobileNetV1 | USMobileNetV2, stats: bool) -> nn.Sequential:
    return nn.Sequential(m.features, m.pool, nn.Flatten(1), m.classifier)


# -- files ----------------------------------------------------------------------------------
#: Export formats, the file suffix each conventionally has, and how close a loaded file's output
#: must be to the US model's (the issue's tolerances).
FORMATS = ("pt", "torchscript", "onnx")
SUFFIXES = {"pt": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = {"pt": 1e-5, "torchscript": 1e-5, "onnx": 1e-4}
ONNX_OPSET = 17
META_FILE = "usnet.json"  # TorchScript / ExportedProgram extra file; ONNX metadata key "usnet"


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
        raise ValueError(f"export format {format!r} is unknown; allowed: {list(FORMATS)}")
    from .checkpoint import atomic_write  # checkpoint -> models; imported late to stay light
    from .profile import input_shape  # profile imports this module

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the file to write, e.g. {path / 'model'}")
    shape = input_shape(model, input_size)
    _calibrate_attached(model, width, shape)
    dense = extract(model, width).cpu().float().requires_grad_(False)
    x = _example(shape, 2)  # batch 2: a batch of 1 would let tracers specialise the batch axis
    with torch.no_grad():
        outputs = _flat(dense(x))
    info = _info(model, width, shape, format, len(outputs))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _WRITERS[format](dense, x, tmp, info))
    if verify:
        err = check(path, dense, shape, format)
        if err > TOLERANCE[format]:
            raise ValueError(
                f"{path}: the exported {format} network differs from the model by {err:.3g} "
                f"(allowed {TOLERANCE[format]:g}); the model's forward may not trace faithfully"
            )
    return path


def load_file(path: str | os.PathLike, format: str | None = None) -> Callable[[Tensor], Any]:
    """A callable running an exported file (format from the suffix when not given).

    What a deployment does without usnet: ``torch.export.load(f).module()``,
    ``torch.jit.load(f)`` or an ``onnxruntime.InferenceSession``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported file")
    if format is None:
        found = [f for f, s in SUFFIXES.items() if path.suffix == s]
        if not found:
            raise ValueError(
                f"{path}: cannot tell the format from suffix {path.suffix!r}; pass format= one of "
                f"{list(FORMATS)}"
            )
        format = found[0]
    if format == "pt":
        with open(path, "rb") as f:
            return torch.export.load(f).module()
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: maintenance mode
            return torch.jit.load(str(path), map_location="cpu")
    if format == "onnx":
        ort = _require("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: Tensor) -> Any:
            outs = [torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})]
            return outs[0] if len(outs) == 1 else tuple(outs)

        return run
    raise ValueError(f"export format {format!r} is unknown; allowed: {list(FORMATS)}")


def read_info(path: str | os.PathLike, format: str | None = None) -> dict[str, Any]:
    """The ``usnet.json`` record an exported file carries (architecture, width, input size)."""
    path = Path(path)
    format = format or next((f for f, s in SUFFIXES.items() if path.suffix == s), None)
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
        text = extra[META_FILE] or None
    else:
        raise ValueError(f"{path}: pass format= one of {list(FORMATS)}")
    if not text:
        raise ValueError(f"{path}: carries no usnet record (not written by usnet.export.save?)")
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
        x = _example(shape, n, g)
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


def _example(shape: tuple[int, ...], batch: int, g: torch.Generator | None = None) -> Tensor:
    return torch.randn(batch, *shape, generator=g)


def _flat(out: Any) -> list[Tensor]:
    """A forward's tensors in order (a tensor, or a tuple/list of them)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and all(isinstance(t, Tensor) for t in out):
        return list(out)
    raise ValueError(
        f"exporting needs a forward that returns a tensor or a tuple of tensors, got "
        f"{type(out).__name__}"
    )


def _calibrate_attached(model: nn.Module, width: WidthConfig | None, shape: tuple) -> None:
    """Calibrate ``width`` now if calibration data is attached (it calibrates on first eval use)."""
    if getattr(model, "_usnet_calibration_hook", None) is None:
        return
    from .calibration import is_calibrated

    space = width_space(model)
    config = space.config if width is None else width
    if is_calibrated(model, config):
        return
    modes = [(m, m.training) for m in model.modules()]
    p = next(model.parameters())
    try:
        with at_width(model, config), torch.no_grad():
            model.eval()
            model(torch.zeros(2, *shape, dtype=p.dtype, device=p.device))
    finally:
        for m, training in modes:
            m.training = training


def _info(
    model: nn.Module, width: WidthConfig | None, shape: tuple, format: str, outputs: int
) -> dict[str, Any]:
    from . import __version__

    space = width_space(model)
    config = space.config if width is None else space.canonical(width)
    return {
        "format": "usnet-export",
        "export_format": format,
        "arch": getattr(model, "arch", type(model).__name__),
        "arch_kwargs": dict(getattr(model, "arch_kwargs", {}) or {}),
        "width": dict(config) if isinstance(config, tuple) else config,
        "width_label": format_width(config),
        "channels": space.channels(config),
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


def _write_pt(dense: nn.Module, x: Tensor, path: Path, info: dict[str, Any]) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(dense, (x,), dynamic_shapes=({0: batch},))
    with open(path, "wb") as f:  # a file object: torch.export insists on a .pt2 path name
        torch.export.save(program, f, extra_files={META_FILE: _json(info)})


def _write_torchscript(dense: nn.Module, x: Tensor, path: Path, info: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is in maintenance mode
        traced = torch.jit.trace(dense, (x,), check_trace=False)  # save() verifies the file
        torch.jit.save(traced, str(path), _extra_files={META_FILE: _json(info)})


def _write_onnx(dense: nn.Module, x: Tensor, path: Path, info: dict[str, Any]) -> None:
    onnx = _require("onnx")
    n = info["outputs"]
    outputs = ["output"] if n == 1 else [f"output{i}" for i in range(n)]
    axes = {name: {0: "batch"} for name in ("input", *outputs)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            dense,
            (x,),
            str(path),
            dynamo=False,  # the torch.export-based exporter needs onnxscript; this one does not
            input_names=["input"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "usnet", _json(info)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


_WRITERS: dict[str, Callable[[nn.Module, Tensor, Path, dict[str, Any]], None]] = {
    "pt": _write_pt,
    "torchscript": _write_torchscript,
    "onnx": _write_onnx,
}


def _require(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"ONNX export needs the {name!r} package: pip install 'usnet[onnx]'"
        ) from None
