"""Files that survive crashes and concurrent writers: atomic writes, locks, output folders.

- :func:`atomic_write` writes a file under a temporary sibling name and renames it into place,
  so a reader sees the old file or the new one, never half of one.
- :func:`locked` holds an exclusive lock on a path (a ``.NAME.lock`` file beside it, with
  ``fcntl.flock``) so read-modify-write cycles of different processes do not interleave. The
  lock is released when the holder exits or dies, and the lock file is removed again.
- :func:`replace_folder` builds a folder under a temporary name and swaps it into place;
  :func:`recover_folder` finishes a swap a crash cut off.
- :func:`make_parent` creates the folder an output goes into, with an error that says which
  part of the path is a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "aside",
    "atomic_write",
    "lock_file",
    "locked",
    "make_parent",
    "recover_folder",
    "replace_folder",
]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    A crash before the rename leaves the old file untouched; the temporary file is removed when
    ``write`` fails.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp's private 0600 is not what a user expects
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def umask() -> int:
    """The process's file creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_parent(path: str | os.PathLike, what: str = "output") -> Path:
    """Create the folder ``path`` goes into; ``ValueError`` naming the part that is a file."""
    path = Path(path)
    check_folder(path.parent, what, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_folder(folder: str | os.PathLike, what: str, shown: Path | None = None) -> None:
    """``ValueError`` naming the part of ``folder`` (or of its parents) that is a file, so it
    cannot be (or hold) a folder; ``shown`` is the path the message names (default: folder)."""
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise UsageError(
                f"{what} {str(shown or folder)!r}: {str(part)!r} is a file, not a folder"
            )


def directly_in(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether file ``path`` lies directly in ``folder`` (so writing it must hold the folder's
    checkpoint lock, see :func:`recover_folder`)."""
    return Path(os.path.abspath(path)).parent == Path(os.path.abspath(folder))


def lock_file(path: str | os.PathLike) -> Path:
    """The lock file :func:`locked` uses for ``path``: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class _Held(threading.local):
    """Locks this thread holds: path -> (pid, depth), so a holder may lock again (re-entrant)."""

    def __init__(self) -> None:
        self.paths: dict[Path, tuple[int, int]] = {}


_held = _Held()


@contextlib.contextmanager
def locked(path: str | os.PathLike, wait_message: str | None = None) -> Iterator[Path]:
    """Hold an exclusive inter-process lock on ``path`` (which need not exist) for the block.

    Another process (or thread) locking the same path waits until this one is done; when it
    has to wait it first prints ``wait_message`` (default: which path it waits for) to stderr.
    Re-entrant within a thread. Works across processes on one machine (``flock``); on a
    platform without ``fcntl`` (Windows) it does not lock.
    """
    absolute = Path(path).absolute()  # one lock file however the path is spelled
    lock = lock_file(absolute.parent.resolve() / absolute.name)
    pid, depth = _held.paths.get(lock, (0, 0))
    if pid == os.getpid():
        _held.paths[lock] = (pid, depth + 1)
        try:
            yield Path(path)
        finally:
            _held.paths[lock] = (pid, depth)
        return
    if fcntl is None:  # pragma: no cover
        yield Path(path)
        return
    make_parent(lock, "lock file")
    fd = _acquire(lock, wait_message or f"waiting for another usnet process writing {path} ...")
    _held.paths[lock] = (os.getpid(), 1)
    try:
        yield Path(path)
    finally:
        del _held.paths[lock]
        # unlink while still holding it: a waiter that then gets the old file sees it is gone
        # (see _acquire) and locks the new one, so the lock stays exclusive
        lock.unlink(missing_ok=True)
        os.close(fd)  # releases the flock


def _acquire(lock: Path, wait_message: str) -> int:
    """Lock ``lock`` (creating it) and return its open descriptor."""
    assert fcntl is not None
    told = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not told:
                    print(wait_message, file=sys.stderr, flush=True)
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the holder removed that file as it released it: lock the current one


# -- folders --------------------------------------------------------------------------------
def aside(path: str | os.PathLike) -> Path:
    """Where :func:`replace_folder` moves the previous folder while it renames the new one in."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def replace_folder(
    path: str | os.PathLike, write: Callable[[Path], object], keep: Callable[[Path], bool]
) -> Path:
    """Build folder ``path`` under a temporary name and rename it into place.

    The temporary folder gets the files of the existing folder for which ``keep(file)`` is true,
    then ``write(tmp)`` adds the rest. An existing folder is renamed aside to ``.NAME.old``
    (see :func:`aside`), the new one renamed in, and the old one removed: a crash leaves the old
    folder, the new one, or (between the two renames) the old one aside, which
    :func:`recover_folder` restores. Hold :func:`locked` on ``path`` around it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a folder")
    make_parent(path, "folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = aside(path)
    try:
        os.chmod(tmp, 0o777 & ~umask())
        if path.is_dir():  # keep what else the folder holds (spectrum files, exports...)
            for f in path.iterdir():
                if f.is_file() and keep(f):
                    shutil.copy2(f, tmp / f.name)
        write(tmp)
        if path.is_dir():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


_TMP_FILE = re.compile(r"\..+\.[^.]+\.tmp")  # atomic_write's temporary names: .NAME.XXXXXXXX.tmp


def recover_folder(path: str | os.PathLike, complete: Callable[[Path], bool]) -> bool:
    """Finish what a crash in :func:`replace_folder` left undone; True if it restored a folder.

    Removes the temporary folders of cut-off writes (``.NAME.*.tmp``) and the temporary files of
    cut-off :func:`atomic_write` calls inside ``path`` (every writer there holds the lock). If ``path`` is missing or
    not ``complete`` but the folder set aside (``.NAME.old``) is, that one is renamed back,
    taking in what was written into ``path`` since (newer files win); if ``path`` is complete, a
    leftover ``.NAME.old`` is removed. Hold :func:`locked` on ``path`` around it.
    """
    path = Path(path)
    if path.parent.is_dir():
        pattern = re.compile(rf"\.{re.escape(path.name)}\.[^.]+\.tmp")
        for f in path.parent.iterdir():
            if f.is_dir() and not f.is_symlink() and pattern.fullmatch(f.name):
                shutil.rmtree(f, ignore_errors=True)
    if path.is_dir() and not path.is_symlink():  # files of cut-off atomic writes inside it
        for f in path.iterdir():
            if f.is_file() and not f.is_symlink() and _TMP_FILE.fullmatch(f.name):
                f.unlink(missing_ok=True)
    old = aside(path)
    if not old.is_dir():
        return False
    if path.is_dir() and complete(path):
        shutil.rmtree(old, ignore_errors=True)  # the crash came after the second rename
        return False
    if not complete(old) or (path.exists() and not path.is_dir()):
        return False  # nothing usable to restore, or not ours to replace
    if path.is_dir():
        for f in path.iterdir():  # outputs written into the stranded folder's place
            target = old / f.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(f, target)
        path.rmdir()
    os.replace(old, path)
    return True
