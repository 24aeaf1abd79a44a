"""``usnet train`` is one command for every task: the same flags mean the same thing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_checks import fails
from fixtures import write_fashion_mnist
from PIL import Image

from usnet.cli import main
from usnet.config import dump_yaml

RL = {
    "task": "rl",
    "env": {"id": "CartPole-v1", "num_envs": 2},
    "model": {"name": "us_actor_critic_mlp", "kwargs": {"hidden": [8, 8]}},
    "train": {"total_steps": 32, "log_every": 1, "threads": 0},
    "ppo": {"rollout_steps": 16, "epochs": 1},
    "eval": {"episodes": 1, "widths": "1.0"},
}


def _sr(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        (tmp_path / name).mkdir()
        array = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(array, "RGB").save(tmp_path / name / "a.png")
    return {
        "task": "sr",
        "model": {"name": "us_edsr", "kwargs": {"n_resblocks": 1, "n_feats": 8}},
        "data": {
            "train_dir": str(tmp_path / "train"),
            "test_dir": str(tmp_path / "test"),
            "patch_size": 6,
            "batch_size": 2,
        },
        "train": {"epochs": 1, "steps_per_epoch": 2, "log_every": 1},
        "eval": {"widths": [1.0]},
    }


def _classification(tmp_path: Path) -> dict:
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=16)
    return {
        "model": {"name": "us_mlp", "kwargs": {"hidden": [8]}},
        "data": {"root": str(data), "batch_size": 16},
        "train": {"epochs": 1, "max_steps_per_epoch": 2},
        "calibrate": {"num_samples": 16},
        "eval": {"widths": [1.0]},
    }


def _recipe(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(dump_yaml({**raw, "output": {"dir": str(tmp_path / "run")}}))
    return str(path)


@pytest.mark.parametrize("make", [_classification, _sr, lambda p: RL], ids=["cls", "sr", "rl"])
def test_a_bad_device_is_refused_in_one_line(tmp_path, capsys, make):
    """Defect 5: ``--device banana`` trained on the CPU (classification) or crashed (RL)."""
    assert main(["train", _recipe(tmp_path, make(tmp_path)), "--device", "banana"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "usnet train: error: device 'banana' is not a torch device (allowed: cpu, cuda, cuda:N, mps)\n"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", [_classification, _sr, lambda p: RL], ids=["cls", "sr", "rl"])
def test_device_and_the_log_flags_reach_every_task(tmp_path, capsys, make):
    """Every task trains through one trainer, so one set of flags governs its output: the epoch
    lines and the bar by default, the lines without the bar under ``--no-progress`` (scripts
    parse them), neither under ``--quiet``; the results and the checkpoint are printed always."""
    recipe = _recipe(tmp_path, make(tmp_path))
    assert main(["train", recipe, "--device", "cpu", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "%|" not in err and "epoch=1 lr=" in err  # the line, no bar
    assert "checkpoint: " in out and "|" in out  # the results table
    assert main(["train", recipe, "--device", "cpu", "--overwrite", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "checkpoint: " in out
    assert main(["train", recipe, "--device", "cpu", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "%|" in err and "epoch=1 lr=" in err


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (_classification, {"num_classes": 10**11}),
        (_sr, {"n_feats": 10**7}),
        (lambda p: RL, {"hidden": [10**11, 8]}),
    ],
    ids=["cls", "sr", "rl"],
)
def test_an_absurd_model_size_is_refused_before_it_allocates(tmp_path, capsys, make, kwargs):
    """Hostile run: ``model.kwargs: {num_classes: 1e11}`` ended in an allocation traceback."""
    raw = make(tmp_path)
    raw = {**raw, "model": {**raw["model"], "kwargs": {**raw["model"]["kwargs"], **kwargs}}}
    line = fails(capsys, ["train", _recipe(tmp_path, raw)], "model.kwargs", "memory")
    assert "GiB" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", [_classification, lambda p: RL], ids=["cls", "rl"])
def test_an_output_dir_that_is_a_file_is_named_in_one_line(tmp_path, capsys, make):
    """Hostile run: ``output.dir`` naming a file said only ``[Errno 17] File exists: ...``."""
    (tmp_path / "run").write_text("my notes")
    line = fails(capsys, ["train", _recipe(tmp_path, make(tmp_path))], "output.dir", "is a file")
    assert "Errno" not in line
    assert (tmp_path / "run").read_text() == "my notes"


def test_a_config_that_is_a_folder_is_not_called_missing(tmp_path, capsys):
    """Hostile run: ``usnet train configs/`` said the config file does not exist."""
    fails(capsys, ["train", str(tmp_path)], "is a folder", str(tmp_path))
