"""Recipes against hostile input: every bad one is refused in one line, fast (the second
hostile sweep)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli_checks import fails

from usnet.config import ConfigError, load_yaml
from usnet.tasks import task_config


def _alias_bomb(levels: int = 12) -> str:
    lines = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"  # 9**12 values once expanded


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (_alias_bomb(), "more than 100000 values once its aliases are expanded"),
        ("model: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than 50 levels"),
        ('{"model": ' * 3000 + "1" + "}" * 3000 + "\n", "nested deeper than 50 levels"),
    ],
)
def test_alias_bombs_and_deep_nesting_are_refused_fast(tmp_path: Path, text, needle) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=needle):
        load_yaml(path)
    assert time.perf_counter() - start < 5


def test_merge_keys_are_understood(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("base: &b {lr: 0.1, momentum: 0.5}\noptim:\n  <<: *b\n  lr: 0.3\n")
    assert load_yaml(path)["optim"] == {"lr": 0.3, "momentum": 0.5}
    path.write_text("optim:\n  lr: 0.1\n  lr: 0.3\n")  # a real duplicate is still refused
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_yaml(path)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"optim": {"lr": 1e300}}, r"optim.lr: 1e\+300 is beyond float32's range"),
        ({"optim": {"weight_decay": -1e300}}, "optim.weight_decay"),
        ({"train": {"seed": 2**64}}, "train.seed: must be >= 0 and <= 4294967295"),
        ({"task": ["classification"]}, "task: expected one of classification"),
        ({"task": {"a": 1}}, "task: expected one of"),
    ],
)
def test_values_that_crashed_deep_inside_are_refused_by_the_config(data, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        task_config(data)


def test_the_cli_says_it_in_one_line(capsys, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("task: [classification]\n")
    fails(capsys, ["train", str(path)], "task: expected one of")
    path.write_text("task: classification\n")
    fails(capsys, ["train", str(path), "--set", "optim.lr=1e300"], "optim.lr", "float32's range")
    fails(capsys, ["train", "/dev/null"], "/dev/null: is not a regular file")
