"""``train.sampling: fixed`` at one per-group width: the channel configuration a search chose,
trained alone from scratch (AutoSlim's own test), evaluated, saved, loaded and gathered."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from fixtures import write_fashion_mnist
from study_helpers import METHODS, plan_file

import usnet
from benchmarks.study import cli, results
from benchmarks.study.summary import _validation
from usnet.config import ConfigError, build_config
from usnet.export import extract
from usnet.nn import width_space
from usnet.spectrum import baseline_points
from usnet.tasks import metric_provider
from usnet.tasks.classification import TASK, TrainConfig
from usnet.training import sample_widths, train

TINY = {"input_size": 28, "blocks": [[1, 16, 1, 1], [6, 32, 1, 2]], "last_channels": 32}
#: stem and stage1 narrowed (32 -> 16, 32 -> 24 channels), stage0 and block2.expand whole
CONFIG = {"stem": 0.5, "stage1": 0.75, "*": 1.0}
LABEL = "stem=0.5,stage0=1,stage1=0.75,block2.expand=1"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=120, n_test=40)


def _cfg(data: Path, *overrides: str) -> TrainConfig:
    raw = {
        "model": {"name": "us_mobilenet_v2_small", "kwargs": TINY},
        "data": {"root": str(data), "batch_size": 20, "val_batch_size": 20},
        "train": {"epochs": 1, "max_steps_per_epoch": 3, "sampling": "fixed",
                  "widths": [CONFIG]},
        # weight decay would shrink the dropped channels too: without it they must not move
        "optim": {"weight_decay": 0.0},
        "calibrate": {"num_samples": 40, "batch_size": 20},
        "eval": {"widths": "0.35,1.0"},
    }  # fmt: skip
    return build_config(TrainConfig, raw, list(overrides))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One finished run at CONFIG, and the network it started from."""
    cfg = _cfg(data, f"output.dir={tmp_path_factory.mktemp('run') / 'run'}")
    torch.manual_seed(cfg.train.seed)  # as the trainer builds it
    initial = TASK.build_model(cfg)
    result = train(TASK, cfg)
    return result, initial


def _only_the_configuration_trained(model, initial, config) -> None:
    """The oracle: parameters outside ``config``'s channels are bit-identical to their initial
    values, those inside all moved; and the network at ``config`` computes its dense export."""
    dense = extract(model, config)
    # the dense export's parameter shapes are the configuration's active boxes (channel prefixes)
    params = list(model.named_parameters())
    boxes = [tuple(p.shape) for p in dense.parameters()]
    assert len(params) == len(boxes) == len(list(initial.parameters()))
    narrowed = 0
    for (name, p), box, p0 in zip(params, boxes, initial.parameters(), strict=True):
        active = tuple(slice(0, n) for n in box)
        dropped = torch.ones_like(p, dtype=torch.bool)
        dropped[active] = False
        narrowed += bool(dropped.any())
        assert torch.equal(p[dropped], p0.detach()[dropped]), name  # bit-identical
        assert not torch.equal(p[active], p0.detach()[active]), name  # trained
    assert narrowed >= 6  # convs and BNs on both sides of the narrowed groups
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    model.eval()
    with usnet.width(model, config), torch.no_grad():
        ours = model(x)
    with torch.no_grad():
        theirs = dense.eval()(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_only_the_configuration_trains_and_it_computes_its_dense_export(run):
    result, initial = run
    _only_the_configuration_trained(usnet.checkpoint.load(result.checkpoint), initial, CONFIG)


def test_a_converted_network_trains_one_configuration_alone(data, tmp_path):
    pytest.importorskip("timm")
    config = {"layer1.0.conv1": 0.5, "layer3.0.conv1": 0.5, "layer4.0.conv2": 0.75, "*": 1.0}
    kwargs = {"width_min": 0.25, "channels": [16, 16, 32, 32], "stem_width": 16}
    cfg = _cfg(
        data, "model.name=timm:resnet10t", f"model.kwargs={kwargs!r}", "eval.widths=1.0",
        f"train.widths={[config]!r}", f"output.dir={tmp_path / 'run'}",
    )  # fmt: skip
    torch.manual_seed(cfg.train.seed)
    initial = TASK.build_model(cfg)
    result = train(TASK, cfg)
    _only_the_configuration_trained(usnet.checkpoint.load(result.checkpoint), initial, config)


def test_the_run_records_and_evaluates_the_configuration_it_trained(run, data):
    result, _ = run
    folder = result.checkpoint.parent
    meta = usnet.checkpoint.read_meta(result.checkpoint)
    (row,) = meta["results"]
    full = {"stem": 0.5, "stage0": 1.0, "stage1": 0.75, "block2.expand": 1.0}
    assert row["width"] == full and 0.0 <= row["top1"] <= 1.0
    assert meta["config"]["train"]["widths"] == [CONFIG]
    with open(folder / "metrics.csv", newline="") as f:
        (line,) = list(csv.DictReader(f))
    assert float(line[f"top1@{LABEL}"]) == pytest.approx(row["top1"])
    # the round trip: loaded, calibrated at the configuration, evaluated there again
    model = usnet.checkpoint.load(result.checkpoint)
    assert usnet.calibration.is_calibrated(model, CONFIG)
    assert not usnet.calibration.is_calibrated(model, 0.5)
    provider = metric_provider(model, meta)
    config = width_space(model).canonical(CONFIG)
    again = provider.measure(model, [config])[config]
    assert again["top1"] == pytest.approx(row["top1"]) and again["loss"] == pytest.approx(
        row["loss"], rel=1e-5
    )
    assert baseline_points(model, meta, [0.5, 1.0]) == (
        "individual", "individually trained", [CONFIG]
    )  # fmt: skip


def test_the_study_gathers_a_per_group_run(run):
    result, _ = run
    doc = results.collect(result.checkpoint.parent)
    (w,) = doc["widths"]
    assert w["width_config"] == LABEL and w["width"] == pytest.approx((0.5 + 1 + 0.75 + 1) / 4)
    model = usnet.checkpoint.load(result.checkpoint)
    assert w["macs"] == usnet.macs(model, CONFIG) < usnet.macs(model, 1.0)
    assert doc["training"]["step_macs_per_image"] == usnet.macs(model, CONFIG)
    assert _validation(doc) == {round(w["width"], 4): [w["top1"]]}


@pytest.mark.parametrize(
    ("train", "words"),
    [
        ({"sampling": "switches", "widths": [CONFIG, 1.0]},
         "train.widths: a per-group width ({'stem': 0.5, 'stage1': 0.75, '*': 1.0}) is only "
         "allowed with 'fixed' sampling"),
        ({"sampling": "sandwich", "widths": [CONFIG]},
         "train.widths: is only used by 'switches' and 'fixed' sampling"),
        ({"sampling": "fixed", "widths": [CONFIG, 0.5]},
         "train.widths: 'fixed' sampling trains exactly one width (a number or one {group: "
         "width} mapping), got 2"),
        ({"sampling": "fixed", "widths": [{"stem": "wide"}]}, "train.widths"),
    ],
)
def test_bad_per_group_configs_say_what_is_allowed(data, train, words):
    with pytest.raises(ConfigError, match="train.widths") as e:
        _cfg(data, *(f"train.{k}={v!r}" for k, v in train.items()))
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("width", "words"),
    [
        ({"stme": 0.5, "*": 1.0}, "unknown channel group(s) ['stme']"),
        ({"stem": 1.5, "*": 1.0}, "stem 1.5 is outside the model's width range [0.35, 1.0]"),
        ({"stem": 0.5}, "misses channel group(s)"),
    ],
)
def test_a_configuration_the_model_lacks_is_refused_before_training(data, tmp_path, width, words):
    cfg = _cfg(data, f"output.dir={tmp_path / 'run'}", f"train.widths={[width]!r}")
    with pytest.raises(ConfigError) as e:
        train(TASK, cfg)
    text = str(e.value)
    assert text.startswith("train.widths: {") and words in text and "\n" not in text
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_sampling_keeps_the_one_configuration_and_switches_numbers():
    assert sample_widths("fixed", 0.35, 1.0, widths=[CONFIG]) == [CONFIG]
    with pytest.raises(ValueError, match="'switches' takes numbers"):
        sample_widths("switches", 0.35, 1.0, widths=[CONFIG, 1.0])


def test_the_study_runner_trains_gathers_and_plots_a_per_group_run(tmp_path):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=32)
    per_group = ["train.sampling=fixed", "train.widths=[{stem: 0.5, block7: 0.5, '*': 1.0}]"]
    plan = plan_file(
        tmp_path,
        set=[f"data.root={data}", "train.max_steps_per_epoch=1", "data.batch_size=32",
             "data.val_batch_size=32", "calibrate.num_samples=32"],
        methods={"pg": {"set": per_group, "family": "searched"}, "ind-1.0": METHODS["ind-1.0"]},
        runs=[{"method": "pg", "epochs": 1}, {"method": "ind-1.0", "epochs": 1}],
    )  # fmt: skip
    out = tmp_path / "results"
    assert cli.main(["run", str(plan), "--runs-dir", str(tmp_path / "runs"),
                     "--results-dir", str(out)]) == 0  # fmt: skip
    with open(out / "p.csv", newline="") as f:
        table = {r["run"]: r for r in csv.DictReader(f)}
    pg = table["pg-e1-s0"]
    assert pg["width_config"].startswith("stem=0.5,block1=1,") and pg["width_config"].endswith(
        "block7=0.5"
    )
    assert float(pg["width"]) == pytest.approx(7 / 8) and table["ind-1.0-e1-s0"]["width"] == "1.0"
    assert int(pg["macs"]) < int(table["ind-1.0-e1-s0"]["macs"])
    assert (out / "p" / "width.png").is_file()


def test_an_agent_refuses_a_per_group_width():
    from usnet.tasks.rl.config import RLConfig

    with pytest.raises(ConfigError, match=r"train.widths: a per-group width .* not supported"):
        build_config(RLConfig, {"train": {"sampling": "fixed", "widths": [{"*": 0.5}]}})
