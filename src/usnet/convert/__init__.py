"""Convert any ordinary PyTorch CNN into a US-Net (:func:`convert`).

Modules: :mod:`.trace` (torch.fx graphs with values), :mod:`.analysis`, :mod:`.ops` and
:mod:`.shapes` (the data flow as channel constraints), :mod:`.groups` (solving them into channel
groups), :mod:`.replace` (every analysed module swapped for its form in :mod:`usnet.nn`, the one
family of slimmable layers), :mod:`.errors`.
"""

from .api import convert
from .errors import ConvertError

__all__ = ["ConvertError", "convert"]
