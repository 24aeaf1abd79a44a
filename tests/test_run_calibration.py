"""One way a checkpoint is calibrated: the trainer, ``usnet calibrate`` and ``usnet spectrum``
all take a run's calibration images from its task's provider, chosen with the run's seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures import write_fashion_mnist

from usnet import checkpoint
from usnet.calibration import calibrate
from usnet.cli import main
from usnet.config import build_config
from usnet.data import calibration_loader, factory
from usnet.tasks.classification import TASK, TrainConfig
from usnet.training import train

N_TRAIN, N_CAL = 256, 64


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=N_TRAIN, n_test=32)


def _subset(seed: int) -> list[int]:
    """The calibration images of a run of ``seed``, computed here the plain way."""
    return torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(seed))[:N_CAL].tolist()


def test_train_calibrate_and_spectrum_of_a_seed_1_run_use_one_image_subset(
    tmp_path, data, monkeypatch, capsys
):
    chosen: list[list[int]] = []
    real = factory.calibration_subset

    def spy(dataset, num_samples=2000, seed=0):
        subset = real(dataset, num_samples, seed)
        chosen.append(list(subset.indices))
        return subset

    monkeypatch.setattr(factory, "calibration_subset", spy)
    raw = {
        "model": {"name": "us_mobilenet_v1_small"},
        "data": {"root": str(data), "batch_size": 32},
        "train": {"epochs": 1, "max_steps_per_epoch": 2, "seed": 1},
        "calibrate": {"num_samples": N_CAL, "batch_size": 32},
        "eval": {"widths": "0.35,1.0"},
        "output": {"dir": str(tmp_path / "run")},
    }
    ckpt = train(TASK, build_config(TrainConfig, raw)).checkpoint
    trained = checkpoint.load(ckpt).state_dict()
    assert len(chosen) == 2  # the epoch's end widths, then the final grid (1.0 already done)
    assert main(["calibrate", str(ckpt), "--widths", "1.0"]) == 0
    assert main(["spectrum", str(ckpt), "--widths", "0.6", "--no-latency", "--quiet"]) == 0
    capsys.readouterr()
    assert len(chosen) == 4
    assert all(c == _subset(1) for c in chosen) and _subset(1) != _subset(0)
    # the statistics `usnet calibrate` recomputed at 1.0 are the trainer's (up to float sums in
    # another memory format), and another seed's images give visibly other ones
    again = checkpoint.load(ckpt).state_dict()
    other = checkpoint.load(ckpt)
    monkeypatch.undo()
    calibrate(other, calibration_loader("fashion_mnist", data, N_CAL, 32, seed=0), [1.0])
    seed_0 = other.state_dict()
    stats = [k for k in trained if "stats_" in k]
    assert stats
    for k in stats:
        torch.testing.assert_close(again[k], trained[k], rtol=1e-5, atol=1e-5, msg=k)
    assert max((seed_0[k] - trained[k]).abs().max().item() for k in stats) > 1e-3
