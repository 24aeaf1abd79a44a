"""The tasks usnet trains, registered in one place.

A task is a package ``usnet.tasks.<name>`` with its config schema (``config``), data, loss,
evaluation and a ``task`` module whose ``TASK`` object trains it (:class:`Task`). The recipe's
``task:`` key picks it; packages are imported on first use, so a classifier needs no gymnasium.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..config import ConfigError, build_config, load_yaml
from ..config.typed import _show, _suggest

#: The registry: task name -> its package.
_PACKAGES = {
    "classification": "usnet.tasks.classification",
    "sr": "usnet.tasks.sr",
    "rl": "usnet.tasks.rl",
}
TASKS = tuple(_PACKAGES)


class Task(Protocol):
    """What ``usnet train`` needs of a task."""

    name: str
    #: The validated config schema of the task's recipes.
    config: type

    def train(
        self,
        cfg: Any,
        resume: bool = False,
        device: str | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> Path:
        """Train (under torchrun: on every rank) and evaluate; returns the checkpoint folder."""
        ...


def get_task(name: str) -> Task:
    """The registered task ``name`` (``classification``, ``sr``, ``rl``)."""
    if name not in _PACKAGES:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return importlib.import_module(_PACKAGES[name] + ".task").TASK


def task_of(data: Mapping[str, Any]) -> str:
    """The ``task:`` of raw config data (default ``classification``), checked."""
    task = data.get("task", "classification")
    if task not in TASKS:
        hint = _suggest(task, TASKS) if isinstance(task, str) else ""
        raise ConfigError("task", f"expected one of {', '.join(TASKS)}, got {_show(task)}{hint}")
    return task


def task_config(data: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "") -> Any:
    """Raw config data (a recipe, or a checkpoint's ``meta.config``) validated by its task's
    schema, with ``--set`` overrides; errors name ``source``."""
    try:
        name = task_of(data)
    except ConfigError as e:
        raise e.relocated(source=source or "config") from None
    return build_config(get_task(name).config, data, overrides, source=source)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A recipe file validated by the schema of its ``task:``."""
    return task_config(load_yaml(path), overrides, source=str(path))
