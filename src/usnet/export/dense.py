"""The dense network a width selects, built of standard torch layers (design.md, "export.py").

:func:`extract` deep-copies a US model at one width and swaps every slimmable module for its
dense equivalent: ``USConv2d`` -> ``nn.Conv2d`` and ``USLinear`` -> ``nn.Linear`` with sliced
weights, ``USBatchNorm2d`` -> ``nn.BatchNorm2d`` with that width's calibrated statistics as its
running statistics, a switchable BN -> the switch's own ``nn.BatchNorm2d``. Containers become
``nn.Sequential``; residual blocks become :class:`Residual`. Model families teach it their own
blocks with :func:`register_dense`, or give a module a ``to_dense()`` method (no import of this
module needed); a module neither way is kept (deep-copied, children converted, still at the
extracted width), so new families export before they register.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..models.mobilenet_v1 import USMobileNetV1
from ..models.mobilenet_v2 import InvertedResidual, USMobileNetV2
from ..nn import (
    SwitchableBatchNorm2d,
    USBatchNorm2d,
    USConv2d,
    USLinear,
    WidthConfig,
    WidthSpace,
    format_width,
)
from ..nn import width as at_width
from ..nn.width import unwrap_model


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
    hook = dense.__dict__.pop("_usnet_calibration_hook", None)
    if hook is not None:  # attached calibration data belongs to the US model
        dense._forward_pre_hooks.pop(hook.id, None)
    if getattr(model, "input_size", None) is not None:
        dense.input_size = tuple(model.input_size)
    return dense.eval()


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy of the US model's modules (unwrapped from DDP / torch.compile).

    Parameters, buffers and attached data sets are shared with ``model`` rather than copied:
    converters slice and clone what they keep, and :func:`_own` clones whatever is left shared.
    """
    model = unwrap_model(model)  # a clear TypeError for a model that is not slimmable
    memo: dict[int, object] = {}
    for m in model.modules():
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None:
                memo[id(t)] = t
        for value in vars(m).values():
            if isinstance(value, (torch.utils.data.DataLoader, torch.utils.data.Dataset)):
                memo[id(value)] = value
        for name in ("_slice_cache", "_eval_cache"):  # eval-mode caches: not worth copying
            cache = vars(m).get(name)
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
