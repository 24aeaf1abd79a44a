"""usnet.io: atomic writes, inter-process locks, folder swaps and their crash recovery."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from usnet import UsageError, io


def test_atomic_write_replaces_or_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    io.atomic_write(path, lambda tmp: tmp.write_text("one"))
    assert path.read_text() == "one"

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, crash)
    assert path.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temporary file left
    assert (path.stat().st_mode & 0o777) == 0o666 & ~io.umask()


def test_make_parent_names_the_part_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*x\.onnx'.*some/file' is a file, not a folder"):
        io.make_parent(tmp_path / "some" / "file" / "deeper" / "x.onnx", "--out")
    made = io.make_parent(tmp_path / "a" / "b" / "c.txt")
    assert made.parent.is_dir()


def _hold(path: str, started, release, log: str) -> None:
    with io.locked(path):
        with open(log, "a") as f:
            f.write("A in\n")
        started.set()
        release.wait(30)
        with open(log, "a") as f:
            f.write("A out\n")


def test_locked_excludes_other_processes_and_tells_the_waiter(tmp_path: Path, caplog) -> None:
    target, log = tmp_path / "ckpt", tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(target), started, release, str(log)))
    holder.start()
    try:
        assert started.wait(30)
        assert io.lock_file(target).exists()
        ctx_timer = ctx.Process(target=_release_later, args=(release,))
        ctx_timer.start()
        with io.locked(target):  # waits for the holder
            with open(log, "a") as f:
                f.write("B in\n")
        ctx_timer.join(30)
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0
    assert log.read_text().splitlines() == ["A in", "A out", "B in"]
    assert "waiting for another usnet process writing" in caplog.text
    assert not io.lock_file(target).exists()  # the lock file goes with the last holder


def _release_later(release) -> None:
    time.sleep(0.3)
    release.set()


def test_locked_is_reentrant_and_releases_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x"
    with io.locked(target), io.locked(target):  # a second lock of the holder does not block
        assert io.lock_file(target).exists()
    with pytest.raises(RuntimeError):
        with io.locked(target):
            raise RuntimeError("boom")
    assert not io.lock_file(target).exists()
    with io.locked(target):  # and it can be taken again
        pass
    (tmp_path / "sub").mkdir()
    alias = tmp_path / "sub" / ".." / "x"  # the same path spelled otherwise: the same lock

    def nested() -> None:
        with io.locked(target), io.locked(alias):
            pass

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def _complete(folder: Path) -> bool:
    return (folder / "data").is_file()


def _write(text: str):
    return lambda folder: (folder / "data").write_text(text)


def test_replace_folder_keeps_other_files_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "run"
    io.replace_folder(path, _write("one"), own=lambda f: f.name == "data")
    (path / "extra").write_text("mine")
    (path / "exports" / "deep").mkdir(parents=True)  # a user's subfolders and links survive
    (path / "exports" / "deep" / "model.onnx").write_text("onnx")
    (path / "link").symlink_to("extra")
    io.replace_folder(path, _write("two"), own=lambda f: f.name == "data")
    assert (path / "data").read_text() == "two" and (path / "extra").read_text() == "mine"
    assert (path / "exports" / "deep" / "model.onnx").read_text() == "onnx"
    assert os.readlink(path / "link") == "extra"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        io.replace_folder(tmp_path / "file", _write("x"), own=lambda f: False)


def test_recover_folder_restores_what_a_crash_left_aside(tmp_path: Path) -> None:
    path, old = tmp_path / "run", io.aside(tmp_path / "run")
    # crash between the two renames, then an output written into a new, empty folder
    old.mkdir()
    (old / "data").write_text("model")
    (old / "resume").write_text("state")
    path.mkdir()
    (path / "export.onnx").write_text("new output")
    crashed = tmp_path / ".run.ab12cd_9.tmp"  # a half-built folder of a crashed write
    crashed.mkdir()
    (crashed / "data").write_text("half")
    unrelated = tmp_path / ".run.onnx.ab12cd_9.tmp"  # another file's temporary: not ours
    unrelated.write_text("x")
    assert io.recover_folder(path, _complete)
    assert {p.name: p.read_text() for p in path.iterdir()} == {
        "data": "model",
        "resume": "state",
        "export.onnx": "new output",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.onnx.ab12cd_9.tmp", "run"]
    assert not io.recover_folder(path, _complete)  # nothing left to do

    # crash after the second rename: the leftover aside is removed, the folder kept
    old.mkdir()
    (old / "data").write_text("older")
    assert not io.recover_folder(path, _complete)
    assert not old.exists() and (path / "data").read_text() == "model"

    # an incomplete folder aside is not restored over anything
    os.remove(path / "data")
    old.mkdir()
    assert not io.recover_folder(path, _complete)
    assert old.is_dir() and path.is_dir()


def test_atomic_write_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """Renaming over /dev/null or a FIFO would replace it with a regular file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for special in (Path("/dev/null"), fifo, tmp_path):
        with pytest.raises(UsageError, match="usnet writes only regular files"):
            io.write_text(special, "x")
    assert Path("/dev/null").is_char_device() and fifo.is_fifo()
    assert io.write_text(tmp_path / "new", "x").read_text() == "x"  # a new path is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "new"]


def test_atomic_write_writes_through_a_symbolic_link(tmp_path: Path) -> None:
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to("real.csv")
    io.write_text(tmp_path / "link.csv", "new")
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text() == "new"
    (tmp_path / "to_null").symlink_to("/dev/null")
    with pytest.raises(UsageError, match="not a regular file"):
        io.write_text(tmp_path / "to_null", "x")


def test_temporary_files_of_dead_writers_go_with_the_next_write(tmp_path: Path) -> None:
    """A killed writer leaves .NAME.<pid>.*.tmp; the next write of NAME removes it, but not the
    temporary file of a writer still running."""
    ended = multiprocessing.get_context("fork").Process(target=int)
    ended.start()
    ended.join()
    stale = tmp_path / f".metrics.csv.{ended.pid}.abcd.tmp"
    live = tmp_path / f".metrics.csv.{os.getppid()}.abcd.tmp"
    stale.write_text("half")
    live.write_text("half")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"No space left on device: '.*metrics\.csv'"):
        io.atomic_write(tmp_path / "metrics.csv", fail)  # the path is named, the temp removed
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
    io.write_text(tmp_path / "metrics.csv", "ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "metrics.csv"]
