"""The one error of :func:`usnet.convert`: what cannot be slimmed, where, and the way out."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError


class ConvertError(UsageError):
    """A network (or a part of it) that :func:`usnet.convert` cannot slim exactly.

    ``module`` is the path of the module where the problem is (``""``: the model itself), ``op``
    the operation, ``keep`` the module names that, passed as ``convert(..., keep=[...])``, leave
    the channels in question unslimmed (empty when keeping cannot help). A model with several
    problems raises one error listing them all (``problems``, each a single-problem error; the
    first one's ``module`` and ``op``) whose ``keep`` resolves every one of them.
    """

    def __init__(
        self,
        module: str,
        op: str,
        problem: str,
        keep: Sequence[str] = (),
        hint: str = "",
    ) -> None:
        self.module, self.op, self.problem, self.hint = module, op, problem, hint
        self.keep = tuple(keep)
        self.problems: tuple[ConvertError, ...] = (self,)
        where = f"module {module!r}" if module else "the model's own forward"
        text = f"cannot convert {where}: {op}: {problem}"
        if self.keep:
            text += f". Way out: convert(..., keep=[{_names(self.keep)}]) leaves those channels unslimmed"
        if hint:
            text += f" ({hint})" if self.keep else f". {hint}"
        super().__init__(text)

    @classmethod
    def every(cls, model: str, errors: Sequence[ConvertError], keep: Sequence[str]) -> ConvertError:
        """One error for all of ``errors`` of a model, whose way out is ``keep`` (all of them)."""
        if len(errors) == 1:
            first = errors[0]
            return cls(first.module, first.op, first.problem, keep, first.hint)
        first = errors[0]
        error = cls(first.module, first.op, first.problem, keep, first.hint)
        lines = [
            f"cannot convert {model}: {len(errors)} operations cannot slim exactly. Way out: "
            f'convert(..., keep=[{_names(keep)}]) or keep="auto" leaves those channels unslimmed:'
        ]
        for e in errors:
            where = f"module {e.module!r}" if e.module else "the model's own forward"
            lines.append(f"  - {where}: {e.op}: {e.problem}")
        error.args = ("\n".join(lines),)
        error.problems = tuple(errors)
        return error


def _names(keep: Sequence[str]) -> str:
    return ", ".join(repr(k) for k in keep)
