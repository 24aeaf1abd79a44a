"""The one task registry: every recipe validates against its task's schema, and a checkpoint's
``meta.config`` reloads into the same typed config."""

from __future__ import annotations

from pathlib import Path

import pytest

import usnet.tasks
from usnet.config import ConfigError, to_dict
from usnet.tasks import TASKS, get_task, load_config, task_config, task_of
from usnet.training import TrainTask

RECIPES = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
#: What the one trainer calls on a task: the methods of its protocol.
TRAINER_NEEDS = sorted(n for n, v in vars(TrainTask).items() if callable(v) and n[0] != "_")


def test_every_task_package_is_registered_under_its_schemas_name() -> None:
    """The registry holds exactly the task packages of usnet.tasks; each task's name is the
    ``task:`` its schema accepts, and it gives the trainer everything it asks for."""
    packages = {p.parent.name for p in Path(usnet.tasks.__file__).parent.glob("*/task.py")}
    assert set(TASKS) == packages and len(TASKS) == len(packages)
    for name in TASKS:
        task = get_task(name)
        assert task.name == name and task.config().task == name
        assert all(callable(getattr(task, m)) for m in TRAINER_NEEDS), name
    with pytest.raises(ValueError, match=f"unknown task 'seg'; allowed: {', '.join(TASKS)}$"):
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


def test_set_task_picks_the_schema_of_that_task() -> None:
    """``--set task=NAME`` is the recipe's ``task:``: its schema validates the rest, and an
    unknown name lists every task (not only the recipe's own)."""
    recipe = {"task": "classification", "train": {"epochs": 2}}
    cfg = task_config({"task": "classification"}, ["task=sr"], source="x.yaml")
    assert cfg.task == "sr"
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epochs'"):
        task_config(recipe, ["task=rl"], source="x.yaml")
    with pytest.raises(
        ConfigError,
        match=r"^--set task=seg: task: expected one of classification, sr, rl, got 'seg'",
    ):
        task_config(recipe, ["task=seg"], source="x.yaml")
