"""Non-uniform training (``train.nonuniform``) and the validation split (``data.val_size``)."""

from __future__ import annotations

import pytest
import torch
from fixtures import write_fashion_mnist

import usnet
from usnet.config import ConfigError, build_config
from usnet.data.split import holdout, holdout_indices
from usnet.spectrum import ProviderOptions
from usnet.tasks import metric_provider
from usnet.tasks.classification import TrainConfig
from usnet.tasks.classification.data import train_loader
from usnet.tasks.classification.loss import ClassificationLoss
from usnet.tasks.classification.provider import metric_provider as classification_provider
from usnet.training.sampling import sample_widths, step_widths, width_size
from usnet.training.step import sandwich_step

TINY = {"input_size": 28, "blocks": [[1, 8, 1, 1], [6, 16, 1, 2]], "last_channels": 32}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=200, n_test=40)


def _cfg(data, *overrides: str) -> TrainConfig:
    raw = {
        "model": {"name": "us_mobilenet_v2_small", "kwargs": TINY},
        "data": {"root": str(data), "batch_size": 20, "val_batch_size": 20},
        "train": {"epochs": 1, "max_steps_per_epoch": 2, "nonuniform": True},
        "calibrate": {"num_samples": 40, "batch_size": 20},
        "eval": {"widths": "0.35,1.0"},
    }
    return build_config(TrainConfig, raw, list(overrides))


def test_the_middle_widths_are_per_group_and_the_ends_stay_uniform():
    groups = ["a", "b", "c"]
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    widths = sample_widths("sandwich", 0.25, 1.0, 4, generator=g1, groups=groups)
    assert widths[:2] == [1.0, 0.25]
    for w in widths[2:]:
        assert isinstance(w, dict) and list(w) == groups
        assert all(0.25 <= v <= 1.0 for v in w.values()) and len(set(w.values())) == 3
    # every rank seeds its generator alike, so every rank trains the same widths
    assert widths == sample_widths("sandwich", 0.25, 1.0, 4, generator=g2, groups=groups)
    assert all(isinstance(w, dict) for w in sample_widths("random", 0.25, 1.0, 2, groups=groups))
    with pytest.raises(ValueError, match="need 'sandwich' or 'random'"):
        sample_widths("fixed", 0.25, 1.0, widths=[0.5], groups=groups)
    assert width_size({"a": 0.25, "b": 0.75}) == 0.5 and width_size(0.3) == 0.3


def test_the_config_switch_and_its_check(data):
    cfg = _cfg(data)
    model = usnet.create_model("us_mobilenet_v2_small", **TINY)
    names = [g.name for g in usnet.channel_groups(model) if g.slimmable]
    widths = step_widths(cfg.train, model, torch.Generator().manual_seed(0))
    assert widths[:2] == [1.0, 0.35] and all(list(w) == names for w in widths[2:])
    uniform = step_widths(_cfg(data, "train.nonuniform=false").train, model, torch.Generator())
    assert all(isinstance(w, float) for w in uniform)
    with pytest.raises(ConfigError, match="nonuniform.*needs 'sandwich' or 'random'"):
        _cfg(data, "train.sampling=fixed", "train.widths=[0.5]")


def test_a_step_trains_per_group_widths_of_a_converted_model_with_distillation():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    model = usnet.convert(net, torch.randn(2, 3, 32, 32), width_range=(0.25, 1.0)).train()
    names = [g.name for g in usnet.channel_groups(model) if g.slimmable]
    train = _cfg("unused").train
    widths = step_widths(train, model, torch.Generator().manual_seed(1))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    parts = sandwich_step(model, x, y, widths, ClassificationLoss(), inplace_distillation=True)
    assert len(parts) == 4 and all(torch.isfinite(p["loss"]) for p in parts)
    assert len(names) > 3 and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert usnet.get_width(model) == 1.0  # restored


def test_a_nonuniform_run_trains_and_records_its_split(tmp_path, data):
    cfg = _cfg(data, f"output.dir={tmp_path / 'run'}", "data.val_size=50")
    from usnet.tasks.classification import TASK
    from usnet.training import train

    ckpt = train(TASK, cfg).checkpoint
    meta = usnet.checkpoint.read_meta(ckpt)
    assert meta["config"]["train"]["nonuniform"] is True
    assert meta["config"]["data"]["val_size"] == 50 and meta["config"]["data"]["val_seed"] == 0


def test_the_held_out_images_are_never_trained_or_calibrated_on(data):
    train, val = holdout_indices(200, 50, seed=3)
    assert len(val) == 50 and len(train) == 150 and not set(train) & set(val)
    assert holdout_indices(200, 50, seed=3) == (train, val)
    assert holdout_indices(200, 50, seed=4)[1] != val
    with pytest.raises(ValueError, match="data.val_size 200 must be"):
        holdout_indices(200, 200)
    cfg = _cfg(data, "data.val_size=50", "data.val_seed=3")
    loader = train_loader(cfg, 1, False, torch.device("cpu"))
    assert sorted(loader.dataset.indices) == train  # type: ignore[attr-defined]
    model = usnet.create_model("us_mobilenet_v2_small", **TINY)
    calibration = classification_provider(model, cfg).calibration
    assert calibration is not None
    seen = {tuple(x.flatten()[:20].tolist()) for x, _ in calibration()}
    held = holdout(loader.dataset.dataset, 50, 3, "val")  # type: ignore[attr-defined]
    held_keys = {tuple(held[i][0].flatten()[:20].tolist()) for i in range(50)}
    assert seen and not seen & held_keys


def test_the_validation_provider_says_what_it_measures(data):
    model = usnet.create_model("us_mobilenet_v2_small", **TINY)
    for val_size, split, words in ((50, "validation", "50 of the 50"), (0, "train", "trained on")):
        cfg = _cfg(data, f"data.val_size={val_size}")
        meta = {"config": cfg.model_dump(mode="json")}
        p = metric_provider(model, meta, ProviderOptions(max_eval_samples=60, split="validation"))
        assert p.split == split and words in p.data_note
    test = metric_provider(model, meta, ProviderOptions())
    assert test.split == "test" and "40 fashion_mnist evaluation images" in test.data_note
    with pytest.raises(ValueError, match="split must be 'test' or 'validation'"):
        metric_provider(model, meta, ProviderOptions(split="val"))
