"""What a study record says about where and how a run ran, and atomic JSON files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` atomically (temporary file in the same folder, then rename)."""
    write_text(path, json.dumps(doc, indent=1, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable (a torn or foreign file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@cache
def machine() -> dict[str, Any]:
    """CPU model and core count (the numbers a per-epoch time depends on)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "host": platform.node()}


def load() -> list[float]:
    """The 1/5/15-minute load averages: the machine is shared, so times depend on it."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def git(root: Path) -> dict[str, Any]:
    """The commit the code ran at and whether tracked files differed from it."""

    def out(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    status = out("status", "--porcelain", "--untracked-files=no")
    return {"commit": out("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


@cache
def software() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version()}
