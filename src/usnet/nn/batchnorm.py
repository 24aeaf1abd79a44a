"""Batch norm for US-Nets: batch statistics in training, calibrated statistics per width in eval.

One class for inputs of any rank (``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ...); its dense
form is the ``BatchNorm1d``/``2d``/``3d`` it was built as. Also here: the batch norm that only
training reaches (auxiliary heads) and switchable batch norm (the 4-switch S-Net baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .groups import Counts, Span, as_span
from .rounding import active_channels
from .shared_grad import narrow
from .sliced import Sliced, dense_param
from .space import WidthSpace
from .widths import format_width

_PREFIX = "stats_"


class UncalibratedWidthError(RuntimeError):
    """Eval at a width whose batch-norm statistics were never computed."""


def adopt(module: nn.Module, name: str, tensor: Tensor | None) -> None:
    """Make ``tensor`` ``module.<name>``: a parameter stays one, a plain tensor (a frozen
    norm's affine, e.g. ``FrozenBatchNorm2d``'s) becomes a buffer, ``None`` stays absent."""
    module._parameters.pop(name, None)
    module._buffers.pop(name, None)
    if isinstance(tensor, nn.Parameter) or tensor is None:
        module.register_parameter(name, tensor)
    else:
        module.register_buffer(name, tensor)


class USBatchNorm(Sliced):
    """Batch norm over a span of channel groups, with post-statistics per width (design.md).

    Affine parameters are shared by all widths (their active channels). Training normalises
    with batch statistics. Eval uses the statistics calibrated for the call's network, stored
    as buffers ``stats_<key>`` of shape ``(2, C_active)`` (mean; unbiased variance), one per
    calibrated network. A BN whose channel count is fixed (``int`` channels) still keeps
    statistics per width: its inputs change with the widths upstream.
    """

    space: WidthSpace
    weight: Tensor | None
    bias: Tensor | None

    def __init__(
        self,
        num_features: int | Span,
        space: WidthSpace,
        eps: float = 1e-5,
        affine: bool = True,
        dense_type: type[nn.modules.batchnorm._BatchNorm] = nn.BatchNorm2d,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.span = as_span(num_features)
        self.space = space
        self.num_features = self.span.full
        self.eps = eps
        self.dense_type = dense_type
        kw = {"device": device, "dtype": dtype}
        adopt(self, "weight", nn.Parameter(torch.ones(self.num_features, **kw)) if affine else None)
        adopt(self, "bias", nn.Parameter(torch.zeros(self.num_features, **kw)) if affine else None)
        self._views = self.span.prefix
        #: Set to a list by calibration (``single_pass``): every training forward then appends
        #: its batch's (count, mean, unbiased variance) per channel.
        self.batch_moments: list[tuple[int, Tensor, Tensor]] | None = None

    @classmethod
    def from_module(cls, bn: Any, span: Span | None, space: WidthSpace) -> USBatchNorm:
        """The US form of a batch norm (``BatchNorm1d/2d/3d``, ``FrozenBatchNorm2d``, timm's
        ``BatchNormAct2d``...): its affine tensors kept; its running statistics are the full
        width's (the caller stores them)."""
        dense: Any = next(
            (t for t in (nn.BatchNorm1d, nn.BatchNorm3d) if isinstance(bn, t)), nn.BatchNorm2d
        )
        weight = getattr(bn, "weight", None)
        layer = cls(
            span if span is not None else bn.num_features,
            space,
            bn.eps,
            affine=False,
            dense_type=dense,
            device="meta",
        )
        adopt(layer, "weight", weight)
        adopt(layer, "bias", getattr(bn, "bias", None))
        return layer

    # -- statistics storage ---------------------------------------------------------------
    def _reference(self) -> Tensor:
        """A tensor of this layer's device and dtype (statistics are stored so)."""
        if self.weight is not None:
            return self.weight
        stats = next((b for n, b in self._buffers.items() if n.startswith(_PREFIX)), None)
        return stats if stats is not None else torch.empty(0)

    def set_stats(self, key: str, mean: Tensor, var: Tensor) -> None:
        """Store the statistics of network ``key``, in this layer's dtype and on its device."""
        ref = self._reference()
        self.register_buffer(_PREFIX + key, torch.stack([mean, var]).to(ref.device, ref.dtype))
        self.forget_cache()

    def get_stats(self, key: str) -> tuple[Tensor, Tensor] | None:
        stats = self._buffers.get(_PREFIX + key)
        return None if stats is None else (stats[0], stats[1])

    def remove_stats(self, key: str) -> None:
        self._buffers.pop(_PREFIX + key, None)
        self.forget_cache()

    def calibrated_keys(self) -> list[str]:
        return [k[len(_PREFIX) :] for k in self._buffers if k.startswith(_PREFIX)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # The loaded statistics replace this layer's calibrated set, whatever widths either had:
        # buffers are created for the widths in the state dict and dropped for the others, in
        # this layer's dtype (the copy converts what the state dict holds, like the weights).
        self.forget_cache()
        ref = self._reference()
        loaded = {
            name[len(prefix) :]: value
            for name, value in state_dict.items()
            if name.startswith(prefix + _PREFIX) and "." not in name[len(prefix) :]
        }
        for name in [n for n in self._buffers if n.startswith(_PREFIX) and n not in loaded]:
            del self._buffers[name]
        for name, value in loaded.items():
            self.register_buffer(name, torch.empty(value.shape, device=ref.device, dtype=ref.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _uncalibrated(self) -> UncalibratedWidthError:
        w = format_width(self.space.config)
        return UncalibratedWidthError(
            f"width {w} has no batch-norm statistics (post-statistics calibration is needed "
            f"for every width). Run usnet.calibrate(model, train_loader, widths=[{w}]) or "
            f"`usnet calibrate CKPT --widths {w}`, or attach calibration data with "
            f"usnet.attach_calibration_data(model, train_loader) to calibrate on first use."
        )

    # -- forward --------------------------------------------------------------------------
    _names = ("weight", "bias")

    def _sources(self) -> tuple[Tensor | None, ...]:
        return self.weight, self.bias  # new statistics drop the cache (set_stats, loading)

    def _homes(self, key: str) -> tuple[str, ...]:
        return (*self._names, _PREFIX + key)  # the statistics of network ``key`` too

    def _affine(self, counts: Counts) -> tuple[Tensor | None, Tensor | None]:
        span = self.span
        if span.prefix:
            c = span.count(counts)
            return (
                None if self.weight is None else narrow(self.weight, c),
                None if self.bias is None else narrow(self.bias, c),
            )
        return (
            None if self.weight is None else span.take(self.weight, 0, counts),
            None if self.bias is None else span.take(self.bias, 0, counts),
        )

    def _compute(self, counts: Counts, key: str) -> tuple[Any, ...]:
        """(weight, bias, mean, var); the statistics are None in training."""
        weight, bias = self._affine(counts)
        if self.training:
            return weight, bias, None, None
        stats = self._buffers.get(_PREFIX + key)
        if stats is None:
            raise self._uncalibrated()
        return weight, bias, stats[0], stats[1]

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, mean, var = self._current()
        if not self.training:
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        if self.batch_moments is not None:
            return self._normalise_and_record(x, weight, bias)
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    def _normalise_and_record(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        """Training-mode BN that also keeps its batch's moments, from the normalisation itself:
        momentum 1 into scratch running buffers makes them the batch mean and unbiased variance."""
        assert self.batch_moments is not None
        c = x.shape[1]
        mean = torch.zeros(c, device=x.device, dtype=self._reference().dtype)
        var = torch.ones_like(mean)
        out = F.batch_norm(x, mean, var, weight, bias, True, 1.0, self.eps)
        self.batch_moments.append((x.numel() // c, mean, var))
        return out

    def normalise_with(self, x: Tensor, mean: Tensor, var: Tensor, in_place: bool = False) -> Tensor:
        """``x`` normalised as in eval mode, with the given statistics (``var``: the one divided
        by) and the current call's affine parameters. ``in_place`` writes into ``x``: the same
        kernel, without allocating its output (calibration owns its activations; on a CPU this
        is ~3x faster than ``F.batch_norm`` and gives identical values)."""
        weight, bias = self._affine(self.space.counts())
        dtype = self._reference().dtype
        mean, var = mean.to(dtype), var.to(dtype)
        if not in_place or weight is None or bias is None:
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        empty = weight.new_empty(0)
        torch.ops.aten.native_batch_norm.out(
            x, weight, bias, mean, var, False, 0.0, self.eps, out=x, save_mean=empty,
            save_invstd=weight.new_empty(0),
        )
        return x

    def extra_repr(self) -> str:
        return f"{self.span}, eps={self.eps}, calibrated={len(self.calibrated_keys())}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        """The plain batch norm of the current width, with its calibrated statistics as running
        statistics (``stats=False``: left at 0/1, e.g. to count parameters)."""
        weight, bias = self._affine(self.space.active)
        ref = self._reference()
        c = self.span.active
        bn = self.dense_type(
            c, self.eps, affine=weight is not None, device=ref.device, dtype=ref.dtype
        )
        if weight is not None and bias is not None:
            bn.weight, bn.bias = dense_param(weight), dense_param(bias)
        if stats:
            found = self.get_stats(self.space.key)
            if found is None:
                raise self._uncalibrated()
            bn.running_mean = found[0].clone()
            bn.running_var = found[1].clone()
        return bn


class USBatchNormAct(USBatchNorm):
    """timm's ``BatchNormAct2d`` (batch norm, dropout and activation in one module)."""

    drop: nn.Module
    act: nn.Module

    @classmethod
    def from_module(cls, bn: Any, span: Span | None, space: WidthSpace) -> USBatchNorm:
        layer = super().from_module(bn, span, space)
        layer.drop, layer.act = bn.drop, bn.act
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))

    def to_dense(self, stats: bool = True) -> nn.Module:  # batch norm, dropout, activation
        return nn.Sequential(super().to_dense(stats), self.drop, self.act)


class TrainOnlyBatchNorm(Sliced):
    """A batch norm that only training reaches (GoogLeNet's and Inception's auxiliary heads).

    Training normalises the active channels with batch statistics, as every US batch norm
    does. Eval forwards never reach it, so calibration cannot give it per-width statistics; it
    is no :class:`USBatchNorm` (calibration and checkpoints do not wait for it) and, should
    eval reach it after all, it uses the original running statistics of its active channels.
    timm's ``BatchNormAct2d`` keeps its dropout and activation.
    """

    space: WidthSpace

    def __init__(self, bn: Any, span: Span) -> None:
        super().__init__()
        if not isinstance(span.space, WidthSpace):
            raise UsageError("TrainOnlyBatchNorm needs a span with a slimmable channel group")
        self.span, self.space, self.eps = span, span.space, bn.eps
        self.num_features = bn.num_features
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.drop: nn.Module = getattr(bn, "drop", None) or nn.Identity()
        self.act: nn.Module = getattr(bn, "act", None) or nn.Identity()
        self.dense_type = nn.BatchNorm1d if isinstance(bn, nn.BatchNorm1d) else nn.BatchNorm2d
        self._views = span.prefix

    _names = ("weight", "bias", "running_mean", "running_var")

    def _sources(self) -> tuple[Tensor | None, ...]:
        return cast(tuple, (self.weight, self.bias, self.running_mean, self.running_var))

    def _compute(self, counts: Counts, key: str) -> list[Tensor | None]:
        return [None if t is None else self.span.take(t, 0, counts) for t in self._sources()]

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, mean, var = self._current()
        if self.training:
            x = F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        else:
            x = F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        return self.act(self.drop(x))

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.Module:
        weight, bias, mean, var = self._compute(self.space.active, self.space.key)
        assert mean is not None and var is not None
        bn: Any = self.dense_type(mean.shape[0], self.eps, affine=weight is not None)
        bn = bn.to(mean.device)
        if weight is not None and bias is not None:
            bn.weight, bn.bias = dense_param(weight), dense_param(bias)
        if stats:
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        if isinstance(self.drop, nn.Identity) and isinstance(self.act, nn.Identity):
            return bn
        return nn.Sequential(bn, self.drop, self.act)


class SwitchableBatchNorm2d(nn.Module):
    """A private ``BatchNorm2d`` per width of a fixed list (the 4-switch slimmable-network baseline).

    Each switch keeps its own affine parameters and running statistics, as in Slimmable Networks
    (ICLR 2019); the width must be one of the switches.
    """

    def __init__(
        self, num_features: int | Span, space: WidthSpace, switches: Sequence[float]
    ) -> None:
        super().__init__()
        self.span = as_span(num_features)
        self.space = space
        self.switches = tuple(round(float(w), 6) for w in switches)
        if not self.span.prefix:
            raise UsageError("switchable batch norm needs one channel group")
        index, full, _ = self.span.segments[0]
        group = space.groups[index] if index >= 0 else None
        self.bn = nn.ModuleList(
            nn.BatchNorm2d(
                active_channels(full, w, group.ratio, space.width_max, group.divisor)
                if group is not None and group.slimmable
                else full
            )
            for w in self.switches
        )

    def _switch(self) -> nn.BatchNorm2d:
        config = self.space.config
        if config not in self.switches:
            raise UsageError(
                f"width {format_width(config)} is not a switch of this switchable-BN model; "
                f"allowed: {list(self.switches)}"
            )
        bn = self.bn[self.switches.index(config)]
        assert isinstance(bn, nn.BatchNorm2d)
        return bn

    def forward(self, x: Tensor) -> Tensor:
        return self._switch()(x)

    def to_dense(self, stats: bool = True) -> nn.BatchNorm2d:
        """The current switch's own ``nn.BatchNorm2d`` (the export hook)."""
        return self._switch()


#: The name the built-in models and older code use (one class for every input rank).
USBatchNorm2d = USBatchNorm
