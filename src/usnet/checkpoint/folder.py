"""A checkpoint folder on disk: which folder a path names, its lock, and crash recovery.

Writers of a folder take turns (:func:`locked`), and the next write or load finishes what a
crash cut off (:func:`recover`). Paths are resolved through symbolic links first, so writing
through a linked checkpoint folder updates its target and keeps the link, and a path such as
``.`` names the folder it is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .. import io as _io
from .format import INFO, WEIGHTS, CheckpointError


def folder_of(path: str | os.PathLike) -> Path:
    """The checkpoint folder ``path`` names: a path to one of its two files means the folder."""
    path = Path(path)
    if path.name in (WEIGHTS, INFO) and path.is_file():
        path = path.parent  # a path to one of the two files means its checkpoint
    return path


def real_folder(path: str | os.PathLike) -> Path:
    """The folder ``path`` names, resolved through symbolic links (``.`` has a name then)."""
    return Path(os.path.realpath(folder_of(path)))


def complete(folder: Path) -> bool:
    return (folder / INFO).is_file() and (folder / WEIGHTS).is_file()


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[Path]:
    """Hold checkpoint ``path``'s lock for a read-modify-write, after finishing a cut-off save;
    yields the folder resolved through links.

    Every writer of a checkpoint folder holds it (saves, statistics, metadata, commands writing
    their outputs into the folder), so their changes never interleave; a second writer waits
    for the first, with a message. Re-entrant.
    """
    folder = real_folder(path)
    with _io.locked(folder, f"waiting for another usnet process writing checkpoint {path} ..."):
        _io.recover_folder(folder, complete)
        yield folder


def recover(path: str | os.PathLike) -> None:
    """Restore the checkpoint a crash between a save's two renames left as ``.NAME.old``
    (outputs written since into a new ``NAME`` folder are moved into it), and remove leftover
    ``.NAME.*.tmp`` folders and files of crashed writes. Every write, and a load that needs it,
    does this.
    """
    with locked(path):
        pass


def existing_folder(path: str | os.PathLike) -> Path:
    """The checkpoint folder to read at ``path`` (resolved), after recovering a cut-off save."""
    folder = real_folder(path)
    if not complete(folder) and _io.aside(folder).is_dir():
        try:  # a save was cut off between its two renames: restore the previous checkpoint
            recover(folder)
        except OSError:  # e.g. a read-only folder: read it where it lies
            if complete(_io.aside(folder)):
                folder = _io.aside(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if not folder.is_dir():
        raise CheckpointError(
            f"{path}: not a checkpoint folder (expected {WEIGHTS} and {INFO} in it)"
        )
    return folder
