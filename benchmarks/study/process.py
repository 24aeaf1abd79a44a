"""Child processes that die with the runner, and their exit code and CPU time.

A runner killed with SIGKILL cannot stop its children; a surviving ``usnet train`` would keep
writing into a run folder the restarted runner is about to resume or clear. On Linux each child
therefore asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``). The runner
spawns from its main thread only, so the parent that dies is the runner itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(137)


@dataclass
class Exit:
    code: int
    cpu_seconds: float  # user + system time of the child and everything it waited for


def spawn(
    command: Sequence[str],
    env: Mapping[str, str],
    stdout: IO | int | None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start ``command`` with ``env`` added to this process's environment."""
    parent = os.getpid()
    return subprocess.Popen(
        list(command),
        env={**os.environ, **env},
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        text=True,
        preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW1509 (single-threaded runner)
    )


def terminate(procs: Sequence[subprocess.Popen], grace: float = 30.0) -> list[Exit]:
    """SIGTERM children not yet reaped, SIGKILL those still running ``grace`` seconds later, and
    reap them all, in order: a child that ignores SIGTERM would otherwise hold the runner (and
    its plan's lock) forever. All share one grace period, so a stop takes at most ``grace``
    however many runs go on. Checkpoints are written atomically, so SIGKILL loses at most the
    epoch in progress. Not ``Popen.terminate``: its ``poll`` would reap a child that already
    exited (Ctrl-C reaches the whole process group), leaving ``reap`` none."""
    for proc in procs:  # an unreaped child's pid is not reused (a zombie at worst)
        os.kill(proc.pid, signal.SIGTERM)
    ends: list[Exit | None] = [None] * len(procs)
    deadline = time.monotonic() + grace
    while None in ends and time.monotonic() < deadline:
        ends = [reap(p, block=False) if e is None else e for p, e in zip(procs, ends, strict=True)]
        time.sleep(0.05)
    result = []
    for proc, end in zip(procs, ends, strict=True):
        if end is None:
            os.kill(proc.pid, signal.SIGKILL)
            end = reap(proc, block=True)
            assert end is not None  # a blocking reap always has the exit
        result.append(end)
    return result


def reap(proc: subprocess.Popen, block: bool) -> Exit | None:
    """The child's exit, or None while it runs (``block=False``). Uses ``wait4`` for its CPU time,
    which ``Popen.wait`` does not report."""
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    return Exit(code, usage.ru_utime + usage.ru_stime)
