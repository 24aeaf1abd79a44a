"""The one task registry: every recipe validates against its task's schema, and a checkpoint's
``meta.config`` reloads into the same typed config."""

from __future__ import annotations

from pathlib import Path

import pytest

from usnet.config import ConfigError, to_dict
from usnet.tasks import TASKS, get_task, load_config, task_config, task_of

RECIPES = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_registry_names_every_task_once() -> None:
    assert TASKS == ("classification", "sr", "rl")
    for name in TASKS:
        task = get_task(name)
        assert task.name == name and task.config.__name__.endswith("Config")
    with pytest.raises(ValueError, match="unknown task 'seg'; allowed: classification, sr, rl"):
        get_task("seg")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_is_its_tasks_config_and_round_trips(path: Path) -> None:
    cfg = load_config(path)
    assert type(cfg) is get_task(cfg.task).config
    assert task_config(to_dict(cfg)) == cfg  # what a checkpoint's meta.config holds
    data = to_dict(cfg)  # one shape: the same keys for the same things
    assert {"model", "train", "optim", "schedule", "eval", "output"} <= set(data)
    assert {"seed", "sampling", "num_widths", "widths", "inplace_distillation"} <= set(
        data["train"]
    )
    assert "lr" in data["optim"] and "dir" in data["output"] and "widths" in data["eval"]


def test_task_key_is_checked_with_a_suggestion() -> None:
    assert task_of({}) == "classification"
    with pytest.raises(
        ConfigError, match="task: expected one of classification, sr, rl, got 'sr2'"
    ):
        task_of({"task": "sr2"})
    with pytest.raises(ConfigError, match=r"x\.yaml: task: .*did you mean 'rl'"):
        task_config({"task": "rl2"}, source="x.yaml")
