"""Config errors that name the bad field, the value found and what is allowed, in one line:
``configs/x.yaml: optim.lr: expected a number, got 'fast'``."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError


class ConfigError(UsageError):
    """A bad config value: ``path`` is the dotted field ('' for the whole config), ``detail`` says
    what is wrong and what is allowed, ``source`` names where the data came from (a file or a
    ``--set`` item)."""

    def __init__(self, path: str, detail: str, source: str = "") -> None:
        super().__init__(path, detail)
        self.path, self.detail, self.source = path, detail, source

    def _text(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail

    def __str__(self) -> str:
        return f"{self.source}: {self._text()}" if self.source else self._text()

    def relocated(self, prefix: str = "", source: str | None = None) -> ConfigError:
        """The same error seen from ``prefix`` (a field relative to a section made absolute)."""
        new = copy.copy(self)
        new.path = join(prefix, self.path)
        if source is not None:
            new.source = source
        return new


class UnknownKeyError(ConfigError):
    """A key the schema does not have: ``detail`` lists the allowed keys and the closest one."""

    def _text(self) -> str:
        return f"unknown key {self.path!r}; {self.detail}"


def join(prefix: str, name: str) -> str:
    """``a.b`` + ``c`` = ``a.b.c``; ``a.b`` + ``[0]`` = ``a.b[0]``."""
    if not prefix:
        return name
    if not name:
        return prefix
    return prefix + name if name.startswith("[") else f"{prefix}.{name}"


def suggest(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def allowed(key: str, names: Sequence[str]) -> str:
    return f"allowed: {', '.join(names)}{suggest(key, names)}"


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
