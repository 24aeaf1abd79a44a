"""The one error of :func:`usnet.convert`: what cannot be slimmed, where, and the way out."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError


class ConvertError(UsageError):
    """A network (or a part of it) that :func:`usnet.convert` cannot slim exactly.

    ``module`` is the path of the module where the problem is (``""``: the model itself), ``op``
    the operation, ``keep`` the module names that, passed as ``convert(..., keep=[...])``, leave
    the channels in question unslimmed (empty when keeping cannot help).
    """

    def __init__(
        self, module: str, op: str, problem: str, keep: Sequence[str] = (), hint: str = ""
    ) -> None:
        self.module, self.op, self.problem = module, op, problem
        self.keep = tuple(keep)
        where = f"module {module!r}" if module else "the model's own forward"
        text = f"cannot convert {where}: {op}: {problem}"
        if self.keep:
            names = ", ".join(repr(k) for k in self.keep)
            text += f". Way out: convert(..., keep=[{names}]) leaves those channels unslimmed"
        if hint:
            text += f" ({hint})" if self.keep else f". {hint}"
        super().__init__(text)
