"""Files that survive crashes and concurrent writers: atomic writes, locks, output folders.

- :func:`atomic_write` writes a file under a temporary sibling name and renames it into place,
  so a reader sees the old file or the new one, never half of one; it writes only regular
  files (never over a device or FIFO), through symbolic links, and leaves no temporary file
  behind (those of a killed writer go with the next write).
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
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UsageError

logger = logging.getLogger("usnet")

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
    "writable_target",
    "write_bytes",
    "write_text",
]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    A crash before the rename leaves the old file untouched; the temporary file is removed when
    ``write`` fails, and the temporary files of writers that died (``.NAME.<pid>.*.tmp`` of a pid
    that no longer runs) are removed by the next write of ``path``. A symbolic link is written
    through (its target is replaced, the link kept); anything but a regular file or a new path
    is refused (renaming over ``/dev/null`` or a FIFO would replace it). Returns the path as
    given.
    """
    given = Path(path)
    target = writable_target(given)
    _remove_stale_temps(target)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp's private 0600 is not what a user expects
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None and e.errno is not None:  # e.g. a full disk: say which file
            raise OSError(e.errno, e.strerror, str(given)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return given


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`). Serialisers that write
    through C++ (safetensors, ``torch.save``, ``torch.export``) serialise into memory first, so
    a full disk is Python's ``OSError`` naming the file, not an abort or a foreign error."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return write_bytes(path, text.encode("utf-8"))


def writable_target(path: str | os.PathLike) -> Path:
    """Where writing ``path`` lands: through symbolic links; ``UsageError`` unless that is a
    regular file or a new path (a device, FIFO, socket or folder must never be replaced)."""
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new path (make_parent says the rest)
        return target
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise UsageError(
            f"{path}: exists and is {kind}; usnet writes only regular files, so give a new path "
            "or a regular file"
        )
    return target


def _remove_stale_temps(target: Path) -> None:
    """Remove ``.NAME.<pid>.*.tmp`` beside ``target`` left by processes that no longer run."""
    prefix = f".{target.name}."
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return  # a missing folder: the write itself reports it
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or not a pid)
        return True
    return True


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
def locked(
    path: str | os.PathLike, wait_message: str | None = None, busy: str | None = None
) -> Iterator[Path]:
    """Hold an exclusive inter-process lock on ``path`` (which need not exist) for the block.

    Another process (or thread) locking the same path waits until this one is done; when it
    has to wait it first logs ``wait_message`` (default: which path it waits for). With
    ``busy``, it does not wait but raises ``UsageError(busy + " (pid N)")``: for work that must
    not run twice at once, such as two trainings into one folder. Re-entrant within a thread;
    the lock of a path is the lock of the file or folder it resolves to (symbolic links
    followed). Works across processes on one machine (``flock``); on a platform without
    ``fcntl`` (Windows) it does not lock.
    """
    lock = lock_file(os.path.realpath(path))  # one lock file however the path is spelled
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
    fd = _acquire(lock, wait_message or f"waiting for another usnet process writing {path} ...", busy)
    _held.paths[lock] = (os.getpid(), 1)
    try:
        yield Path(path)
    finally:
        del _held.paths[lock]
        # unlink while still holding it: a waiter that then gets the old file sees it is gone
        # (see _acquire) and locks the new one, so the lock stays exclusive
        lock.unlink(missing_ok=True)
        os.close(fd)  # releases the flock


def _acquire(lock: Path, wait_message: str, busy: str | None) -> int:
    """Lock ``lock`` (creating it; it then holds our pid) and return its open descriptor."""
    assert fcntl is not None
    told = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if busy is not None:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    raise UsageError(f"{busy} (pid {holder or '?'})") from None
                if not told:
                    logger.warning(wait_message)
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
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)  # the holder removed that file as it released it: lock the current one


# -- folders --------------------------------------------------------------------------------
def aside(path: str | os.PathLike) -> Path:
    """Where :func:`replace_folder` moves the previous folder while it renames the new one in."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def replace_folder(
    path: str | os.PathLike, write: Callable[[Path], object], own: Callable[[Path], bool]
) -> Path:
    """Build folder ``path`` under a temporary name and rename it into place.

    The temporary folder gets every entry of the existing folder that ``own(entry)`` does not
    claim (a user's files, subfolders and links: hard-linked where the file system allows, so
    keeping a large export costs nothing), then ``write(tmp)`` adds the rest. An existing
    folder is renamed aside to ``.NAME.old`` (see :func:`aside`), the new one renamed in, and
    the old one removed: a crash leaves the old folder, the new one, or (between the two
    renames) the old one aside, which :func:`recover_folder` restores. A symbolic link to a
    folder is written through: its target is replaced and the link kept. Hold :func:`locked`
    on ``path`` around it.
    """
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a folder")
    make_parent(path, "folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = aside(path)
    try:
        os.chmod(tmp, 0o777 & ~umask())
        if path.is_dir():  # keep what else the folder holds (spectrum files, exports...)
            for entry in path.iterdir():
                if not own(entry):
                    _keep(entry, tmp / entry.name)
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


def _keep(entry: Path, to: Path) -> None:
    """``entry`` again at ``to``: links stay links, folders are rebuilt, files hard-linked."""
    if entry.is_symlink():
        os.symlink(os.readlink(entry), to)
    elif entry.is_dir():
        shutil.copytree(entry, to, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(entry), str(to))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


_TMP_FILE = re.compile(r"\..+\.[^.]+\.tmp")  # atomic_write's temporary names: .NAME.XXXXXXXX.tmp


def recover_folder(path: str | os.PathLike, complete: Callable[[Path], bool]) -> bool:
    """Finish what a crash in :func:`replace_folder` left undone; True if it restored a folder.

    Removes the temporary folders of cut-off writes (``.NAME.*.tmp``) and the temporary files of
    cut-off :func:`atomic_write` calls inside ``path`` (every writer there holds the lock). If ``path`` is missing or
    not ``complete`` but the folder set aside (``.NAME.old``) is, that one is renamed back,
    taking in what was written into ``path`` since (newer files win); if ``path`` is complete, a
    leftover ``.NAME.old`` is removed. Hold :func:`locked` on ``path`` around it.
    """
    path = Path(os.path.realpath(path))
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
