"""The converted copy of a model, with weight reparametrisations folded into plain weights.

``weight_norm``, ``spectral_norm`` and ``torch.nn.utils.prune`` (forward pre-hooks that
recompute ``weight`` before every call) and ``torch.nn.utils.parametrize`` (weight_norm,
spectral_norm, orthogonal and custom parametrizations) all compute a weight from other tensors.
A slimmable layer slices a plain weight, so the copy gets the weight those compute *now* (eval
mode: no power iteration) as an ordinary parameter: at width 1.0 the copy computes exactly what
the model computes in eval mode; the model itself keeps its reparametrisations. Other hooks on
a module that gets replaced would be lost with it, so :func:`hooked` names them.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize, prune
from torch.nn.utils.spectral_norm import SpectralNorm, remove_spectral_norm
from torch.nn.utils.weight_norm import WeightNorm, remove_weight_norm

_HOOKS = (WeightNorm, SpectralNorm, prune.BasePruningMethod)


def _hook_name(hook: object) -> str | None:
    if isinstance(hook, (WeightNorm, SpectralNorm)):
        return hook.name
    if isinstance(hook, prune.BasePruningMethod):
        return getattr(hook, "_tensor_name", None)
    return None


def folded_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``model`` with every reparametrisation folded; and what was folded
    (``"weight_norm of 'body.0'"``, ...). ``model`` is not changed."""
    memo: dict[int, object] = {}
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            name = _hook_name(hook)
            computed = getattr(m, name, None) if name else None
            if computed is not None and hasattr(computed, "detach"):  # not a graph leaf
                memo[id(computed)] = computed.detach().clone()
    result = copy.deepcopy(model, memo)
    return result, fold(result)


def fold(model: nn.Module) -> list[str]:
    """Fold ``model``'s reparametrisations into plain weights, in place; what was folded."""
    folded = []
    for path, m in model.named_modules():
        where = f"'{path}'" if path else "the model"
        for key, hook in list(m._forward_pre_hooks.items()):
            name = _hook_name(hook)
            if name is None:
                continue
            if isinstance(hook, WeightNorm):
                remove_weight_norm(m, name)
                folded.append(f"weight_norm of {where}")
            elif isinstance(hook, SpectralNorm):
                remove_spectral_norm(m, name)
                folded.append(f"spectral_norm of {where}")
            else:
                prune.remove(m, name)
                folded.append(f"pruning of {where}")
            m._forward_pre_hooks.pop(key, None)
        if parametrize.is_parametrized(m):
            folded += _unparametrize(m, where)
    return folded


@torch.no_grad()
def _unparametrize(m: nn.Module, where: str) -> list[str]:
    """``m`` as its own class again with plain tensors holding what its parametrizations
    compute. Not ``remove_parametrizations``: that edits the class parametrize made, which a
    deep copy shares with the original."""
    plist: Any = m.parametrizations
    names = list(plist.keys())
    values = {name: getattr(m, name).detach().clone() for name in names}
    is_param = {
        name: isinstance(getattr(plist[name], "original", None), nn.Parameter)
        or isinstance(getattr(plist[name], "original0", None), nn.Parameter)
        for name in names
    }
    kinds = {name: "+".join(type(p).__name__ for p in plist[name]) for name in names}
    del m._modules["parametrizations"]
    m.__class__ = type(m).__bases__[0]  # the class parametrize derived this one from
    for name in names:
        if is_param[name]:
            setattr(m, name, nn.Parameter(values[name]))
        else:
            m.register_buffer(name, values[name])
    return [f"{kinds[name]} parametrization of {where}.{name}" for name in names]


def hooked(m: nn.Module) -> list[str]:
    """The hooks of ``m`` that a replacement layer would not run (by function name)."""
    found = []
    for hooks in (m._forward_pre_hooks, m._forward_hooks, m._backward_hooks):
        for hook in hooks.values():
            found.append(getattr(hook, "__name__", type(hook).__name__))
    return found
