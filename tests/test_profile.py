"""usnet.profile (MACs, params, latency) and the ``usnet profile`` command."""

from __future__ import annotations

import csv

import pytest
import torch
from fake_clock import ScheduledClock
from fake_stats import fake_calibrate

import usnet
from usnet.cli import main
from usnet.models import USModel
from usnet.nn import UncalibratedWidthError, USConv2d, USLinear, width_space
from usnet.profile import Timing, interleaved_latency, interleaved_latency_of, latency, macs, params


class Tiny(USModel):
    """conv 3->16 (3x3, 8x8 input), BN, ReLU, pool, linear 16->10: easy to count by hand."""

    def __init__(self) -> None:
        super().__init__(0.25, 1.0, (3, 8, 8))
        ch = self.width_space.group("body", 16)
        self.conv = USConv2d(3, ch, 3)
        self.bn = self.norm(ch)
        self.fc = USLinear(ch, 10)
        self.finish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_macs_and_params_by_hand() -> None:
    model = Tiny()
    # width 0.5: 8 active channels. conv 8*3*3*3 per pixel * 64 pixels; linear 8*10.
    assert macs(model, 0.5) == 8 * 27 * 64 + 80
    # conv weight 8*27, BN affine 2*8, linear 80 + bias 10
    assert params(model, 0.5) == 8 * 27 + 16 + 90
    assert params(model, 1.0) == sum(p.numel() for p in model.parameters())
    assert macs(model, 1.0, input_size=16) == 16 * 27 * 256 + 160


def test_macs_leaves_model_untouched(monkeypatch) -> None:
    model = usnet.create_model("us_mobilenet_v2_small", switches=[0.35, 0.5, 1.0])
    usnet.set_width(model, 0.5)
    model.eval()
    model.features[0].train()
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    on_meta = macs(model, 0.5)
    assert macs(model, 1.0) > on_meta > macs(model, 0.35) > 0

    def no_meta(*args, **kwargs):
        raise NotImplementedError("no meta kernels here")

    # a forward that cannot run on meta tensors is counted for real, with the same result
    monkeypatch.setattr(torch.func, "functional_call", no_meta)
    assert macs(model, 0.5) == on_meta
    assert usnet.get_width(model) == 0.5
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_latency_needs_calibration_and_records_context() -> None:
    model = usnet.create_model("us_mobilenet_v1_small").train()
    with pytest.raises(UncalibratedWidthError, match="calibrat"):
        latency(model, 0.5, repeats=1, warmup=0)
    assert model.training  # modes restored after the error
    fake_calibrate(model, [0.5])
    result = latency(model, 0.5, batch_size=2, repeats=3, warmup=1)
    assert result["median_ms"] > 0 and result["batch_size"] == 2 and result["width"] == "0.5"
    assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["threads"] == torch.get_num_threads() and result["torch"] == torch.__version__
    assert result["device"] == "cpu" and model.training and usnet.get_width(model) == 1.0
    with pytest.raises(ValueError, match="repeats"):
        latency(model, 0.5, repeats=0)


def test_profile_command(tmp_path, capsys) -> None:
    out = tmp_path / "profile.csv"
    rc = main(
        ["profile", "us_mobilenet_v1_small", "--widths", "0.25:0.35:0.025", "--csv", str(out)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "5 widths, 4 distinct networks" in text
    assert "MACs (M)" in text and "params (M)" in text
    rows = list(csv.DictReader(out.open()))
    assert [float(r["width"]) for r in rows] == [0.25, 0.275, 0.3, 0.325, 0.35]
    model = usnet.create_model("us_mobilenet_v1_small")
    for r in rows:
        assert int(r["macs"]) == macs(model, float(r["width"]))
        assert int(r["params"]) == params(model, float(r["width"]))
    # 0.325 rounds to the network of 0.3 (the table says so)
    assert rows[3]["same_as"] == "0.3" and rows[3]["network"] == rows[2]["network"]
    assert width_space(model).resolve(0.325)[1] == rows[3]["network"]

    rc = main(["profile", "us_mobilenet_v2_small", "--set", "num_classes=3", "--widths", "1.0"])
    assert rc == 0 and "us_mobilenet_v2_small: input 1x28x28, 1 widths" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["us_mobilenet_v1", "--widths", "0.1"], "outside the model's width range [0.25, 1.0]"),
        (["nope"], "unknown model 'nope'"),
        (["us_mobilenet_v1", "--set", "num_classes"], "must be KEY=VALUE"),
        (["us_mobilenet_v1", "--widths", "a:b"], "start:stop:step"),
    ],
)
def test_profile_command_errors(capsys, argv: list[str], message: str) -> None:
    assert main(["profile", *argv]) == 2
    assert message in capsys.readouterr().err


def test_interleaved_latency_times_every_width_each_round_and_resists_a_burst() -> None:
    """Regression (spectrum latency noise): a burst of load during one round slows every width
    of that round alike, and the median ignores it; each round is a fresh order of all widths."""
    model = Tiny().train()
    fake_calibrate(model, [0.25, 0.5, 1.0])
    usnet.set_width(model, 0.5)
    base = {0.25: 1.0, 0.5: 2.0, 1.0: 4.0}
    burst = range(4 * 3, 5 * 3)  # round 4 (after the warm-up round): +50 ms for all three

    clock = ScheduledClock(model, lambda w, call, nth: base[w] + (50.0 if call in burst else 0.0))
    timings = interleaved_latency(model, [1.0, 0.25, 0.5], rounds=12, warmup=1, timer=clock)

    rounds = [clock.calls[i : i + 3] for i in range(0, len(clock.calls), 3)]
    assert len(rounds) == 13 and all(sorted(r) == [0.25, 0.5, 1.0] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, not one fixed order
    assert [t.median_ms for t in timings] == pytest.approx([4.0, 1.0, 2.0])
    assert all(t.runs == 12 and t.spread == pytest.approx(0.0) for t in timings)
    assert [t.max_ms for t in timings] == pytest.approx([54.0, 51.0, 52.0])  # the burst is seen
    assert usnet.get_width(model) == 0.5 and model.training  # width and modes restored
    with pytest.raises(ValueError, match="None"):
        interleaved_latency(model, [None, 0.5], rounds=1)


def test_several_models_are_timed_in_the_same_rounds() -> None:
    """Regression (spectrum baselines were timed after the US-Net, under other load): a
    US-Net's widths and a baseline model run in the same shuffled rounds and meet the same
    burst; each model's width and modes are restored."""
    us, baseline = Tiny().train(), Tiny().eval()
    fake_calibrate(us, [0.25, 0.5])
    fake_calibrate(baseline, [1.0])
    usnet.set_width(us, 0.5)
    base = {0.25: 1.0, 0.5: 2.0, 1.0: 4.0}
    burst = range(3 * 3, 4 * 3)  # round 3: +50 ms for every model
    clock = ScheduledClock(us, lambda w, call, nth: base[w] + (50.0 if call in burst else 0.0))
    baseline.register_forward_pre_hook(clock._tick)  # one clock for both models

    targets = [(us, 0.25), (baseline, 1.0), (us, 0.5)]
    timings = interleaved_latency_of(targets, rounds=8, warmup=1, timer=clock)

    rounds = [clock.calls[i : i + 3] for i in range(0, len(clock.calls), 3)]
    assert len(rounds) == 9 and all(sorted(r) == [0.25, 0.5, 1.0] for r in rounds)
    assert [t.median_ms for t in timings] == pytest.approx([1.0, 4.0, 2.0])
    assert [t.max_ms for t in timings] == pytest.approx([51.0, 54.0, 52.0])
    assert usnet.get_width(us) == 0.5 and us.training and not baseline.training
    with pytest.raises(ValueError, match="None"):
        interleaved_latency_of([(us, None), (us, 0.5)], rounds=1)
    assert len(interleaved_latency_of([(us, None), (baseline, 1.0)], rounds=1)) == 2
    # a forward that raises (an uncalibrated width) leaves every model as it was
    usnet.set_width(baseline, 0.3)
    with pytest.raises(UncalibratedWidthError):
        interleaved_latency_of([(us, 0.25), (baseline, 0.25)], rounds=1)
    assert usnet.get_width(us) == 0.5 and usnet.get_width(baseline) == 0.3
    assert us.training and not baseline.training


def test_timing_summary_spread_is_the_relative_interquartile_range() -> None:
    t = Timing.of([3.0, 6.0] * 6)
    assert (t.median_ms, t.q1_ms, t.q3_ms) == (4.5, 3.0, 6.0)
    assert t.spread == pytest.approx(3.0 / 4.5)
    assert Timing.of([2.0]).spread == 0.0
