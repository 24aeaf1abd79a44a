"""Which rule carries channels through each module and function: one table that users extend.

usnet knows the layers of torch, torchvision and timm by *kind* (:func:`kind_of`: a conv, a batch
norm, ...), and measures parameter-free operations it has no rule for. A module with parameters
or a functional layer it does not know stops the channels it sees; :func:`register_rule` tells it
what your own module or function does instead:

- ``"channelwise"`` (:class:`Channelwise`): channel ``c`` of the output depends on channel ``c``
  of the input only (a custom activation, an affine per channel); the per-channel parameters
  named in ``params`` are sliced with the channels;
- ``"fixed"`` (:class:`Fixed`): it never slims; the channels of its inputs and outputs stay
  whole (the conversion goes on and says how much of the network that leaves whole).

The table is keyed by class (a subclass inherits the rule unless it defines its own
``forward``) or by function object.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from ..errors import UsageError


@dataclass(frozen=True)
class Channelwise:
    """Output channel ``c`` depends on input channel ``c`` only; channels on ``dim``.

    ``params`` names the module's per-channel parameters or buffers (their channels on their
    dimension 0), which run sliced to the active channels.
    """

    dim: int = 1
    params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fixed:
    """Never slims: the channels of its inputs and outputs stay whole."""


Rule = Channelwise | Fixed
T = TypeVar("T")

_RULES: dict[Any, Rule] = {}
_NAMES: dict[str, Rule] = {"channelwise": Channelwise(), "fixed": Fixed()}


def register_rule(target: T, rule: str | Rule = "channelwise") -> T:
    """Tell :func:`usnet.convert` how ``target`` (an ``nn.Module`` subclass or a function) carries
    channels; returns ``target``, so ``@register_rule`` marks a class or function as channel-wise.

    A function is recognised where a forward calls it by its global name. Registering again
    replaces the rule.
    """
    found = _NAMES.get(rule) if isinstance(rule, str) else rule
    if not isinstance(found, (Channelwise, Fixed)):
        raise UsageError(
            f"register_rule: rule must be 'channelwise', 'fixed', Channelwise(...) or Fixed(), "
            f"got {rule!r}"
        )
    is_module = isinstance(target, type) and issubclass(target, nn.Module)
    if not is_module and not callable(target):
        raise UsageError(
            f"register_rule: target must be an nn.Module subclass or a function, got {target!r}"
        )
    if isinstance(found, Channelwise) and found.params and not is_module:
        raise UsageError(
            f"register_rule: params={found.params!r} names parameters of a module, but "
            f"{getattr(target, '__name__', target)!r} is a function"
        )
    _RULES[target] = found
    return target


def module_rule(m: nn.Module) -> Rule | None:
    """The registered rule of ``m``'s class, or of a base class whose ``forward`` it runs."""
    for cls in type(m).__mro__:
        if cls in _RULES:
            return _RULES[cls]
        if "forward" in vars(cls):
            return None
    return None


def function_rule(target: object) -> Rule | None:
    try:
        return _RULES.get(target)
    except TypeError:  # unhashable
        return None


def registered_functions() -> tuple[Callable, ...]:
    """Registered Python functions: the tracer records calls to them as single nodes."""
    return tuple(t for t in _RULES if isinstance(t, types.FunctionType))


_TIMM_LINEAR = "timm.layers.linear.Linear"
_TIMM_CONV_SAME = "timm.layers.conv2d_same.Conv2dSame"
_TIMM_BN_ACT = "timm.layers.norm_act.BatchNormAct2d"
_FROZEN_BN = "torchvision.ops.misc.FrozenBatchNorm2d"
_TIMM_GN = ("timm.layers.norm.GroupNorm", "timm.layers.norm.GroupNorm1")
_TIMM_GN_ACT = ("timm.layers.norm_act.GroupNormAct", "timm.layers.norm_act.GroupNorm1Act")
_LAYER_NORM = "timm.layers.norm.LayerNorm"
_LAYER_NORM_2D = ("timm.layers.norm.LayerNorm2d", "torchvision.models.convnext.LayerNorm2d")
_TIMM_ATTENTION = "timm.layers.attention.Attention"
_SWIN = "torchvision.models.swin_transformer.ShiftedWindowAttention"
_SWIN_V2 = "torchvision.models.swin_transformer.ShiftedWindowAttentionV2"
#: Attention modules that become one slimmable layer (whole heads, head_dim kept).
ATTENTION_KINDS = ("attn", "mha", "swin")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def kind_of(m: nn.Module) -> str | None:
    """Which converted layer replaces ``m`` (``None``: none; the tracer looks inside it)."""
    cls = type(m)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(m, _CONVS) and cls.forward in (c.forward for c in _CONVS):
        return {1: "conv1d", 2: "conv", 3: "conv3d"}[len(m.kernel_size)]
    if isinstance(m, _TRANSPOSED) and cls.forward in (c.forward for c in _TRANSPOSED):
        return "conv_transpose"
    if name == _TIMM_CONV_SAME:
        return "conv_same"
    if isinstance(m, nn.Linear) and (cls.forward is nn.Linear.forward or name == _TIMM_LINEAR):
        return "linear"
    if isinstance(m, _BatchNorm) and cls.forward is _BatchNorm.forward:
        return "bn3d" if isinstance(m, nn.BatchNorm3d) else "bn"
    if name == _TIMM_BN_ACT:
        return "bnact"
    if name == _FROZEN_BN:  # a batch norm whose statistics and affine do not train
        return "bn"
    if isinstance(m, nn.LayerNorm) and (cls.forward is nn.LayerNorm.forward or name == _LAYER_NORM):
        return "ln"
    if name in _LAYER_NORM_2D:
        return "ln2d"
    if isinstance(m, nn.GroupNorm) and (cls.forward is nn.GroupNorm.forward or name in _TIMM_GN):
        return "gn1" if m.num_groups == 1 else "gn"
    if name in _TIMM_GN_ACT:
        return "gnact"
    if isinstance(m, _InstanceNorm) and (m.affine or m.track_running_stats):
        return "in"
    if isinstance(m, nn.PReLU) and cls.forward is nn.PReLU.forward:
        return "prelu"
    if isinstance(m, nn.MultiheadAttention) and cls.forward is nn.MultiheadAttention.forward:
        return "mha"
    if isinstance(m, nn.Embedding) and cls.forward is nn.Embedding.forward:
        return "embedding"
    if _runs(cls, _TIMM_ATTENTION):
        return "attn"
    if name in (_SWIN, _SWIN_V2):
        return "swin"
    return None


def _runs(cls: type, qualified: str) -> bool:
    """Whether ``cls`` is the class named ``qualified`` or a subclass running its forward."""
    for base in cls.__mro__:
        if f"{base.__module__}.{base.__qualname__}" == qualified:
            return cls.forward is base.forward  # type: ignore[attr-defined]
    return False


def is_leaf(m: nn.Module) -> bool:
    """Modules the tracer records as one call: those of a kind or with a registered rule."""
    return kind_of(m) is not None or module_rule(m) is not None
