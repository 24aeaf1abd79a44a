"""Slimmable layers, channel groups and width control."""

from .layers import Residual, USConv2d, USLinear, init_weights
from .norm import SwitchableBatchNorm2d, UncalibratedWidthError, USBatchNorm2d
from .rounding import active_channels, make_divisible
from .space import (
    ChannelGroup,
    GroupRef,
    Width,
    WidthConfig,
    WidthSpace,
    channel_groups,
    format_width,
    get_width,
    modes_kept,
    parse_widths,
    set_width,
    unwrap_model,
    width,
    width_space,
)

__all__ = [
    "ChannelGroup",
    "Residual",
    "GroupRef",
    "SwitchableBatchNorm2d",
    "USBatchNorm2d",
    "USConv2d",
    "USLinear",
    "UncalibratedWidthError",
    "Width",
    "WidthConfig",
    "WidthSpace",
    "active_channels",
    "channel_groups",
    "format_width",
    "get_width",
    "init_weights",
    "make_divisible",
    "modes_kept",
    "parse_widths",
    "set_width",
    "unwrap_model",
    "width",
    "width_space",
]
