"""The authors' weight initialisation, and the one dense block standard torch lacks."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd


def init_weights(model: nn.Module) -> None:
    """The authors' init: conv N(0, sqrt(2 / (k*k*C_out))), BN 1/0, linear N(0, 0.01), biases 0.

    Weight-normalised convs keep their direction's init and start their gain at its norm.
    """
    for m in model.modules():
        if isinstance(m, _ConvNd):
            n = math.prod(m.kernel_size) * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            gain = getattr(m, "weight_g", None)
            if isinstance(gain, nn.Parameter):
                gain.data.copy_(m.weight.detach().flatten(1).norm(dim=1).view_as(gain))
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NormBase) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Residual(nn.Module):
    """``x + body(x)``: the one block standard torch lacks (dense form of residual blocks)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)
