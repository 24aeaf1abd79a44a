"""Convert any ordinary PyTorch CNN into a US-Net (:func:`convert`).

Modules: :mod:`.trace` (torch.fx graphs with values and MACs), :mod:`.analysis`,
:mod:`.modules`, :mod:`.ops`, :mod:`.shapes`, :mod:`.matmul` and :mod:`.measure` (the data flow as
channel constraints), :mod:`.rules` (the table of kinds and users' rules), :mod:`.groups`
(solving them into channel groups), :mod:`.report` (what stays whole), :mod:`.reparam` (the
copy, with weight reparametrisations folded), :mod:`.plan` (the result as data),
:mod:`.replace` (every analysed module swapped for its form in :mod:`usnet.nn`, the one family of
slimmable layers), :mod:`.adapt` (classes swapped for subclasses that trace), :mod:`.attention`
(heads as channel groups), :mod:`.kinds` (widths by kind of group), :mod:`.oracle` (the masked original, an independent check), :mod:`.errors`.

``usnet.convert`` is also the function; ``usnet.convert.register_rule``, ``.Channelwise``,
``.Fixed`` and ``.ConvertError`` are attributes of it too, so both spellings work.
"""

from .api import convert, rebuild, recorded, recorded_conversion
from .errors import ConvertError
from .kinds import kind_widths
from .rules import Channelwise, Fixed, register_rule

for _name, _value in (
    ("register_rule", register_rule),
    ("Channelwise", Channelwise),
    ("Fixed", Fixed),
    ("ConvertError", ConvertError),
    ("kind_widths", kind_widths),
):
    setattr(convert, _name, _value)

__all__ = [
    "Channelwise",
    "ConvertError",
    "Fixed",
    "convert",
    "kind_widths",
    "rebuild",
    "recorded",
    "recorded_conversion",
    "register_rule",
]
