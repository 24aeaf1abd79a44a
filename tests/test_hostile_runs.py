"""Training runs against hostile and unlucky input: no lost work, runs that say how they can
continue, damaged resume state (the second hostile sweep)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from cli_checks import fails, succeeds
from fixtures import write_fashion_mnist

from usnet import checkpoint
from usnet.config import dump_yaml
from usnet.training.resume import hold_run_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=64, n_test=16)


def _recipe(tmp_path: Path, data: Path) -> str:
    raw = {
        "model": {"name": "us_mlp", "kwargs": {"hidden": [8]}},
        "data": {"root": str(data), "batch_size": 16},
        "train": {"epochs": 1, "max_steps_per_epoch": 2},
        "calibrate": {"num_samples": 16},
        "eval": {"widths": [1.0]},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(dump_yaml(raw))
    return str(path)


@pytest.fixture
def run(tmp_path, data, capsys) -> tuple[str, Path]:
    recipe = _recipe(tmp_path, data)
    succeeds(capsys, ["train", recipe, "--no-progress"])
    return recipe, tmp_path / "run"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_overwrite_validates_the_new_run_before_deleting_anything(capsys, run) -> None:
    recipe, out = run
    before = _files(out)
    fails(capsys, ["train", recipe, "--overwrite", "--set", "data.root=/nonexistent"],
          "/nonexistent")  # fmt: skip
    assert _files(out) == before  # the finished run is untouched
    checkpoint.load(out / "checkpoint")


def _hold(out: str, holding, release) -> None:
    with hold_run_folder(Path(out)):
        holding.set()
        release.wait(60)


def test_a_second_training_into_the_same_folder_is_refused(capsys, tmp_path, data) -> None:
    recipe, out = _recipe(tmp_path, data), tmp_path / "run"
    ctx = multiprocessing.get_context("fork")
    holding, release = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_hold, args=(str(out), holding, release))
    first.start()
    try:
        assert holding.wait(30)
        line = fails(capsys, ["train", recipe, "--no-progress"], "another usnet process is "
                     "training into this folder", f"pid {first.pid}")  # fmt: skip
        assert "--set output.dir=DIR" in line
        assert not out.exists()  # the second run wrote nothing
    finally:
        release.set()
        first.join(30)
    succeeds(capsys, ["train", recipe, "--no-progress"])  # once the first is done: allowed


def test_a_run_without_resume_state_offers_only_what_can_work(capsys, run) -> None:
    recipe, out = run
    (out / "resume.pt").unlink()  # killed or disk full between the two writes
    line = fails(capsys, ["train", recipe], "without resume.pt it cannot be continued")
    assert "--resume" not in line and "--overwrite" in line
    line = fails(capsys, ["train", recipe, "--resume"], "cannot resume", "but no resume.pt")
    assert "--set output.dir=DIR" in line and "--overwrite" in line


def test_a_damaged_resume_state_is_one_line(capsys, run) -> None:
    recipe, out = run
    state = torch.load(out / "resume.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "optimizer"}, out / "resume.pt")
    fails(capsys, ["train", recipe, "--resume"], "resume.pt is damaged (it lacks optimizer)")
    torch.save({**state, "generators": {}}, out / "resume.pt")
    fails(capsys, ["train", recipe, "--resume"], "resume.pt does not fit this run", "KeyError")
    data = (out / "resume.pt").read_bytes()
    (out / "resume.pt").write_bytes(data[: len(data) // 3])
    fails(capsys, ["train", recipe, "--resume"], "resume.pt: not a readable state file")
