"""The one error type a user can fix: :class:`UsageError`.

The ``usnet`` command prints a :class:`UsageError` (and the subclasses other packages define:
``ConfigError``, ``ConvertError``, ``CheckpointError``) as one line and exits with code 2; any
other exception is a bug in usnet and keeps its traceback. A ``ValueError`` raised by Python or
a library inside usnet (``int("x")``, an unpacking of the wrong length) is therefore never
mistaken for bad input: code that checks input raises :class:`UsageError` with a message naming
the field, the value found and what is allowed.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """Bad input a user can fix (a value, a file, a width): its message is one line naming the
    field or path, the value and what is allowed. A ``ValueError``, so callers that catch
    ``ValueError`` keep working."""
