"""The tasks usnet trains, registered in one place.

A task is a package ``usnet.tasks.<name>`` with its config schema (``config``), data, loss,
evaluation, metric provider (``provider``) and a ``task`` module whose ``TASK`` object trains
it and measures its checkpoints (:class:`Task`). The recipe's ``task:`` key (and a checkpoint's
``meta.config.task``) picks it; packages are imported on first use, so a classifier needs no
gymnasium. :func:`register_task` adds a task defined elsewhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..config import ConfigError, build_config, load_yaml
from ..config.errors import show, suggest
from ..errors import UsageError

#: The registry: task name -> the module holding its ``TASK`` (or the task object itself).
_TASKS: dict[str, Any] = {
    "classification": "usnet.tasks.classification.task",
    "sr": "usnet.tasks.sr.task",
    "rl": "usnet.tasks.rl.task",
}
TASKS = tuple(_TASKS)


class Task(Protocol):
    """What ``usnet train`` needs of a task."""

    name: str
    #: The validated config schema of the task's recipes.
    config: type

    def metric_provider(self, model: Any, cfg: Any, options: Any) -> Any:
        """How a checkpoint of this task is measured for the spectrum: a
        :class:`usnet.spectrum.MetricProvider` from its validated config ``cfg`` and
        :class:`usnet.spectrum.ProviderOptions`."""
        ...

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
    """The registered task ``name`` (``classification``, ``sr``, ``rl``...)."""
    if name not in _TASKS:
        raise UsageError(f"unknown task {name!r}; allowed: {', '.join(_TASKS)}")
    task = _TASKS[name]
    return importlib.import_module(task).TASK if isinstance(task, str) else task


def register_task(task: Task) -> Task:
    """Add a task (e.g. one defined outside usnet) under ``task.name``; returns it."""
    _TASKS[task.name] = task
    return task


def task_of(data: Mapping[str, Any]) -> str:
    """The ``task:`` of raw config data (default ``classification``), checked."""
    task = data.get("task", "classification")
    if not isinstance(task, str) or task not in _TASKS:
        names = list(_TASKS)
        hint = suggest(task, names) if isinstance(task, str) else ""
        raise ConfigError("task", f"expected one of {', '.join(names)}, got {show(task)}{hint}")
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
