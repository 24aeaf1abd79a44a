"""Convert any ordinary PyTorch CNN into a US-Net (:func:`convert`).

Modules: :mod:`.trace` (torch.fx graphs with values), :mod:`.analysis`, :mod:`.ops` and
:mod:`.shapes` (the data flow as channel constraints), :mod:`.groups` (solving them into channel
groups), :mod:`.layers`, :mod:`.norms` and :mod:`.replace` (the slimmable modules swapped in),
:mod:`.errors`.
"""

from .api import convert
from .errors import ConvertError
from .layers import Span

__all__ = ["ConvertError", "Span", "convert"]
