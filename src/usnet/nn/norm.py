"""Batch norm for US-Nets: batch statistics in training, calibrated statistics per width in eval."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .layers import dense_param
from .rounding import active_channels
from .space import GroupRef, WidthSpace, as_ref, format_width

_PREFIX = "stats_"


class UncalibratedWidthError(RuntimeError):
    """Eval at a width whose batch-norm statistics were never computed."""


class USBatchNorm2d(nn.Module):
    """BatchNorm2d over a channel group, with post-statistics per width (design.md, "Batch norm").

    Affine parameters are shared by all widths (sliced). Training normalises with batch
    statistics. Eval uses the statistics calibrated for the current network, stored as buffers
    ``stats_<key>`` of shape ``(2, C_active)`` (mean; unbiased variance), one per calibrated width.
    A BN whose channel count is fixed (``int`` channels) still keeps statistics per width: its
    inputs change with the widths upstream.
    """

    def __init__(
        self, num_features: int | GroupRef, space: WidthSpace, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.ref = as_ref(num_features)
        self.space = space
        self.num_features = self.ref.full
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.bias = nn.Parameter(torch.zeros(self.num_features))
        # eval without autograd: network key -> (sliced weight, bias, mean, var), so a switched
        # model spends no Python time per layer on slicing and lookups (views: they show every
        # in-place write; checked against the parameters' storage for `p.data = t` and the like)
        self._eval_cache: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        #: Set to a list by calibration (``single_pass``): every training forward then appends
        #: its batch's (count, mean, unbiased variance) per channel.
        self.batch_moments: list[tuple[int, Tensor, Tensor]] | None = None

    # -- statistics storage ---------------------------------------------------------------
    def set_stats(self, key: str, mean: Tensor, var: Tensor) -> None:
        """Store the statistics of network ``key``, in this layer's dtype and on its device."""
        stats = torch.stack([mean, var]).to(self.weight.device, self.weight.dtype)
        self.register_buffer(_PREFIX + key, stats)
        self._eval_cache.pop(key, None)

    def get_stats(self, key: str) -> tuple[Tensor, Tensor] | None:
        stats = self._buffers.get(_PREFIX + key)
        return None if stats is None else (stats[0], stats[1])

    def remove_stats(self, key: str) -> None:
        self._buffers.pop(_PREFIX + key, None)
        self._eval_cache.pop(key, None)

    def calibrated_keys(self) -> list[str]:
        return [k[len(_PREFIX) :] for k in self._buffers if k.startswith(_PREFIX)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # The loaded statistics replace this layer's calibrated set, whatever widths either had:
        # buffers are created for the widths in the state dict and dropped for the others, in
        # this layer's dtype (the copy converts what the state dict holds, like the weights).
        self._eval_cache = {}
        loaded = {
            name[len(prefix) :]: value
            for name, value in state_dict.items()
            if name.startswith(prefix + _PREFIX) and "." not in name[len(prefix) :]
        }
        for name in [n for n in self._buffers if n.startswith(_PREFIX) and n not in loaded]:
            del self._buffers[name]
        for name, value in loaded.items():
            self.register_buffer(
                name, torch.empty(value.shape, device=self.weight.device, dtype=self.weight.dtype)
            )
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
    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        self._eval_cache = {}  # cached views point at the old tensors
        return super()._apply(fn, *args, **kwargs)

    def __setstate__(self, state: dict) -> None:  # deepcopy: the copy has its own tensors
        super().__setstate__(state)
        self._eval_cache = {}

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and not torch.is_grad_enabled():
            hit = self._eval_cache.get(self.space.key)
            if (
                hit is not None
                and hit[0].data_ptr() == self.weight.data_ptr()
                and hit[1].data_ptr() == self.bias.data_ptr()
            ):
                return F.batch_norm(x, hit[2], hit[3], hit[0], hit[1], False, 0.0, self.eps)
        c = self.ref.active
        weight, bias = self.weight[:c], self.bias[:c]
        if self.training:
            if self.batch_moments is not None:
                return self._normalise_and_record(x, weight, bias)
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        stats = self._buffers.get(_PREFIX + self.space.key)
        if stats is None:
            raise self._uncalibrated()
        if not torch.is_grad_enabled():
            self._eval_cache[self.space.key] = (weight, bias, stats[0], stats[1])
        return F.batch_norm(x, stats[0], stats[1], weight, bias, False, 0.0, self.eps)

    def _normalise_and_record(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Training-mode BN that also keeps its batch's moments, from the normalisation itself:
        momentum 1 into scratch running buffers makes them the batch mean and unbiased variance."""
        assert self.batch_moments is not None
        c = x.shape[1]
        mean = torch.zeros(c, device=x.device, dtype=weight.dtype)
        var = torch.ones(c, device=x.device, dtype=weight.dtype)
        out = F.batch_norm(x, mean, var, weight, bias, True, 1.0, self.eps)
        self.batch_moments.append((x.numel() // c, mean, var))
        return out

    def normalise_with(self, x: Tensor, mean: Tensor, var: Tensor, in_place: bool = False) -> Tensor:
        """``x`` normalised as in eval mode, with the given statistics (``var``: the one divided
        by) and the current width's affine parameters. ``in_place`` writes into ``x``: the same
        kernel, without allocating its output (calibration owns its activations; on a CPU this
        is ~3x faster than ``F.batch_norm`` and gives identical values)."""
        c = self.ref.active
        weight, bias = self.weight[:c], self.bias[:c]
        mean, var = mean.to(weight.dtype), var.to(weight.dtype)
        if not in_place:
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        empty = weight.new_empty(0)
        torch.ops.aten.native_batch_norm.out(
            x, weight, bias, mean, var, False, 0.0, self.eps, out=x, save_mean=empty,
            save_invstd=weight.new_empty(0),
        )
        return x

    def extra_repr(self) -> str:
        return f"{self.ref}, eps={self.eps}, calibrated={len(self.calibrated_keys())}"

    @torch.no_grad()
    def to_dense(self, stats: bool = True) -> nn.BatchNorm2d:
        """The plain ``nn.BatchNorm2d`` of the current width, with its calibrated statistics as
        running statistics (``stats=False``: left at 0/1, e.g. to count parameters)."""
        c = self.ref.active
        bn = nn.BatchNorm2d(c, eps=self.eps, device=self.weight.device, dtype=self.weight.dtype)
        bn.weight, bn.bias = dense_param(self.weight[:c]), dense_param(self.bias[:c])
        if stats:
            found = self.get_stats(self.space.key)
            if found is None:
                raise self._uncalibrated()
            bn.running_mean = found[0].clone()
            bn.running_var = found[1].clone()
        return bn


class SwitchableBatchNorm2d(nn.Module):
    """A private ``BatchNorm2d`` per width of a fixed list (the 4-switch slimmable-network baseline).

    Each switch keeps its own affine parameters and running statistics, as in Slimmable Networks
    (ICLR 2019); the width must be one of the switches.
    """

    def __init__(
        self, num_features: int | GroupRef, space: WidthSpace, switches: Sequence[float]
    ) -> None:
        super().__init__()
        self.ref = as_ref(num_features)
        self.space = space
        self.switches = tuple(round(float(w), 6) for w in switches)
        group, wmax = self.ref.group, space.width_max
        self.bn = nn.ModuleList(
            nn.BatchNorm2d(
                active_channels(group.full, w, group.ratio, wmax) if group.slimmable else group.full
            )
            for w in self.switches
        )

    def forward(self, x: Tensor) -> Tensor:
        config = self.space.config
        if config not in self.switches:
            raise UsageError(
                f"width {format_width(config)} is not a switch of this switchable-BN model; "
                f"allowed: {list(self.switches)}"
            )
        return self.bn[self.switches.index(config)](x)

    def to_dense(self, stats: bool = True) -> nn.BatchNorm2d:
        """The current switch's own ``nn.BatchNorm2d`` (the export hook)."""
        config = self.space.config
        if config not in self.switches:
            raise UsageError(
                f"width {format_width(config)} is not a switch of this model; "
                f"allowed: {list(self.switches)}"
            )
        bn = self.bn[self.switches.index(config)]
        assert isinstance(bn, nn.BatchNorm2d)
        return bn
