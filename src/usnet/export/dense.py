"""The dense network a width selects, built of standard torch layers (design.md, "export").

:func:`extract` deep-copies a US model at one width and replaces, children first, every module
that has a ``to_dense(stats)`` method by what that method returns: the one hook through which
layers and models describe their dense form (``USConv2d`` -> ``nn.Conv2d`` with sliced weights,
``USBatchNorm2d`` -> ``nn.BatchNorm2d`` with the width's calibrated statistics, a MobileNet v2
block -> :class:`~usnet.nn.Residual`, ...). Containers that only inherit ``nn.Sequential``'s forward
become ``nn.Sequential``; any other module is kept (deep-copied, children converted, still at the
extracted width), so new families export before they describe themselves.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from ..nn import Residual, WidthConfig, WidthSpace, dense_param, unwrap_model, width_space


def extract(model: nn.Module, width: WidthConfig | None, *, stats: bool = True) -> nn.Module:
    """The dense sub-network of ``model`` at ``width`` (``None``: its current width), in eval mode.

    Weights are sliced copies (the result shares no storage with ``model``); with ``stats`` (the
    default) every BN carries the width's calibrated statistics, so the result's eval output
    equals the US model's; an uncalibrated width raises the model's ``UncalibratedWidthError``.
    ``stats=False`` skips them (BN running statistics stay 0/1): the architecture and weights
    only, e.g. for counting parameters. The model's own width and modes are unchanged.
    """
    space = width_space(model)
    config = space.config if width is None else space.canonical(width)
    dense = _copy(model)
    width_space(dense).set(config)  # the copy's own space: its default is the extracted width
    dense = _convert(dense, stats)
    _own(dense, model)
    if isinstance(getattr(dense, "width_space", None), WidthSpace):
        del dense.width_space  # no longer a US model: the width is fixed
    hook = dense.__dict__.pop("_usnet_calibration_hook", None)
    if hook is not None:  # attached calibration data belongs to the US model
        dense._forward_pre_hooks.pop(hook.id, None)
    done = dense.__dict__.pop("_usnet_calibration_done_hook", None)
    if done is not None:
        dense._forward_hooks.pop(done.id, None)
        dense._forward_hooks_always_called.pop(done.id, None)
    input_size = getattr(model, "input_size", None)
    if input_size is not None:
        dense.input_size = tuple(input_size)  # type: ignore[assignment]  # plain attribute
    return dense.eval()


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy of the US model's modules (unwrapped from DDP / torch.compile).

    Parameters, buffers and attached data sets are shared with ``model`` rather than copied:
    ``to_dense`` hooks slice and clone what they keep, and :func:`_own` clones whatever is left shared.
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
        for name in ("_eval_cache",):  # eval-mode caches: not worth copying
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
                        store[name] = dense_param(t) if isinstance(t, nn.Parameter) else t.clone()  # type: ignore[assignment]


def _convert(module: nn.Module, stats: bool) -> nn.Module:
    """Post-order: dense children first, then the module itself (its ``to_dense`` hook)."""
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = _convert(child, stats)
    to_dense = getattr(module, "to_dense", None)
    if callable(to_dense):
        return to_dense(stats)
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        # e.g. a named block type that only inherits Sequential's forward
        return nn.Sequential(OrderedDict(module._modules))
    return module

__all__ = ["Residual", "extract"]
