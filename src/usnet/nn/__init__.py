"""The one family of slimmable layers, channel groups and width control.

Layers (conv 1-D/2-D/3-D and transposed, linear, batch/layer/group/instance norm, sliced
per-channel parameters) run with the active channels of spans of channel groups; the built-in
models declare them directly and :func:`usnet.convert` emits them from a user's modules.
"""

from .attention import USAttention, USMultiheadAttention
from .batchnorm import (
    SwitchableBatchNorm2d,
    TrainOnlyBatchNorm,
    UncalibratedWidthError,
    USBatchNorm,
    USBatchNorm2d,
    USBatchNormAct,
)
from .compiled import compile
from .control import (
    channel_groups,
    frozen,
    get_width,
    modes_kept,
    set_width,
    unwrap_model,
    width,
    width_space,
)
from .conv import USConv, USConv2d
from .dense_attention import MultiheadSelfAttention, attention
from .embedding import USEmbedding
from .groups import ChannelGroup, GroupRef, Span, as_span
from .init import Residual, init_weights
from .linear import USLinear
from .norms import USGroupNorm, USInstanceNorm, USLayerNorm
from .params import SliceChannels, slice_parameter
from .rounding import active_channels, make_divisible
from .sliced import Sliced, dense_param
from .space import Plan, Width, WidthConfig, WidthSpace
from .widths import format_width, parse_widths, width_value
from .window_attention import USWindowAttention, WindowAttention

__all__ = [
    "MultiheadSelfAttention",
    "USAttention",
    "USMultiheadAttention",
    "attention",
    "ChannelGroup",
    "GroupRef",
    "Plan",
    "Residual",
    "SliceChannels",
    "Sliced",
    "Span",
    "SwitchableBatchNorm2d",
    "TrainOnlyBatchNorm",
    "USBatchNorm",
    "USBatchNorm2d",
    "USBatchNormAct",
    "USConv",
    "USConv2d",
    "USEmbedding",
    "USGroupNorm",
    "USInstanceNorm",
    "USLayerNorm",
    "USLinear",
    "USWindowAttention",
    "WindowAttention",
    "UncalibratedWidthError",
    "Width",
    "WidthConfig",
    "WidthSpace",
    "active_channels",
    "as_span",
    "channel_groups",
    "compile",
    "dense_param",
    "format_width",
    "frozen",
    "get_width",
    "init_weights",
    "make_divisible",
    "modes_kept",
    "parse_widths",
    "set_width",
    "slice_parameter",
    "unwrap_model",
    "width",
    "width_space",
    "width_value",
]
