"""Which torch operations fall into which class of :mod:`.ops`' rules: binary (broadcasting),
concatenation, layers with parameters, normalisations over one dimension, pixel shuffles, and
those channel-wise by definition. A table of its own so that the rules read as rules and a new
operation is added in one place."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BINARY_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.pow, operator.iadd, operator.isub, operator.imul, operator.itruediv,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.true_divide, torch.maximum, torch.minimum, torch.where, torch.pow, torch.addcmul,
    torch.lerp, torch.masked_fill,
}  # fmt: skip
BINARY_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "true_divide", "pow", "pow_",
    "maximum", "minimum", "where", "addcmul", "addcmul_", "lerp", "lerp_", "masked_fill",
    "masked_fill_", "__add__", "__radd__", "__iadd__", "__mul__", "__rmul__", "__imul__",
    "__sub__", "__rsub__", "__truediv__", "__rtruediv__",
}  # fmt: skip
CAT = {torch.cat, torch.concat, torch.concatenate}
LIKE = {torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
         torch.randn_like}  # fmt: skip
#: Random per-sample or per-channel masks: not measurable, channel-wise by definition.
SAME = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
         F.feature_alpha_dropout, torch.dropout}  # fmt: skip
SAME_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}
NEW = {"new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"}
SAME_METHODS = {"contiguous", "clone", "detach", "float", "to", "type", "half", "bfloat16",
                 "double", "requires_grad_"}  # fmt: skip
LAYER_FUNCS = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d, F.batch_norm,
                F.layer_norm, F.group_norm, F.instance_norm, F.embedding, F.prelu,
                F.multi_head_attention_forward}  # fmt: skip
EINSUM = {torch.einsum}
MATMUL: dict[Any, str] = {torch.matmul: "matmul", operator.matmul: "matmul", torch.bmm: "bmm",
           torch.baddbmm: "baddbmm"}  # fmt: skip
#: Normalisations over one dimension: over the channels they normalise the active ones (as
#: layer norm does), so a softmax over a network's outputs or a channel attention is exact.
NORMALIZE = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, F.normalize}
NORMALIZE_METHODS = {"softmax", "log_softmax"}
PIXEL: dict[Any, bool] = {F.pixel_shuffle: False, torch.pixel_shuffle: False, F.pixel_unshuffle: True,
          torch.pixel_unshuffle: True}  # fmt: skip
PIXEL_METHODS = {"pixel_shuffle", "pixel_unshuffle"}
#: Leaf modules that are channel-wise by definition (random ones cannot be measured).
CHANNELWISE_MODULES = (
    nn.modules.dropout._DropoutNd, nn.Identity, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Softmax,
    nn.LogSoftmax, nn.Softmax2d, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d, nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
