"""The tasks usnet trains, registered in one place.

A task is a package ``usnet.tasks.<name>`` with its config schema (``config``), data, loss,
evaluation, metric provider (``provider``) and a ``task`` module whose ``TASK`` object (a
:class:`Task`) gives the one trainer (:func:`usnet.training.train`) what it trains and measures.
The recipe's ``task:`` key (and a checkpoint's ``meta.config.task``) picks it; packages are
imported on first use, so a classifier needs no gymnasium. :func:`register_task` adds a task
defined elsewhere. :func:`metric_provider` is how every command calibrates and evaluates a
checkpoint: its task's provider, built from the config the run recorded.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from ..config import ConfigError, build_config, load_yaml
from ..config.errors import show, suggest
from ..config.yaml_io import parse_value
from ..errors import UsageError
from ..spectrum.providers import MetricProvider, ProviderOptions
from ..training import TrainTask

#: The registry: task name -> the module holding its ``TASK`` (or the task object itself).
_TASKS: dict[str, Any] = {
    "classification": "usnet.tasks.classification.task",
    "sr": "usnet.tasks.sr.task",
    "rl": "usnet.tasks.rl.task",
}
TASKS = tuple(_TASKS)


class Task(TrainTask[Any], Protocol):
    """What ``usnet train`` and the commands that measure checkpoints need of a task."""

    name: str
    #: The validated config schema of the task's recipes.
    config: type

    def metric_provider(
        self, model: nn.Module, cfg: Any, options: ProviderOptions | None = None
    ) -> MetricProvider:
        """The task's calibration data and evaluation from a run's validated config ``cfg``
        (``options`` may move the data or change the calibration's sample count...)."""
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
    schema, with ``--set`` overrides; errors name ``source``.

    A ``--set task=NAME`` picks the schema as the recipe's ``task:`` would (the schema of the
    recipe's own task knows only that task's name)."""
    where = source or "config"
    for item in overrides:
        key, sep, text = item.partition("=")
        if sep and key.strip() == "task":
            data = {**data, "task": parse_value(text, "task", f"--set {item}")}
            where = f"--set {item}"
    try:
        name = task_of(data)
    except ConfigError as e:
        raise e.relocated(source=where) from None
    return build_config(get_task(name).config, data, overrides, source=source)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A recipe file validated by the schema of its ``task:``."""
    return task_config(load_yaml(path), overrides, source=str(path))


def metric_provider(
    model: nn.Module, meta: Mapping[str, Any], options: ProviderOptions | None = None
) -> MetricProvider:
    """How the checkpoint with metadata ``meta`` is calibrated and evaluated: the training config
    it recorded (``meta["config"]``, validated by its task's schema) given to its task's
    provider, as the trainer gave it (so the calibration images are the run's: its seed)."""
    config = meta.get("config")
    if not isinstance(config, Mapping):
        raise UsageError(
            "the checkpoint's metadata has no training config (meta key 'config'), so its "
            "calibration and evaluation data are unknown; calibrate it from Python with "
            "usnet.calibrate(model, loader, widths), or measure costs only (--no-metric)"
        )
    options = options or ProviderOptions()
    if options.max_eval_samples is not None and options.max_eval_samples < 1:
        raise UsageError(f"max_eval_samples must be >= 1, got {options.max_eval_samples}")
    if "task" not in config and isinstance(meta.get("task"), str):
        config = {**config, "task": meta["task"]}
    if options.split not in ("test", "validation"):
        raise UsageError(f"split must be 'test' or 'validation', got {options.split!r}")
    cfg = task_config(config, source="checkpoint meta.config")
    provider = get_task(cfg.task).metric_provider(model, cfg, options)
    if options.split == "validation" and provider.split == "test":
        raise UsageError(
            f"a {cfg.task} checkpoint has no validation split to measure on (its task measures "
            "the test split only)"
        )
    return provider
