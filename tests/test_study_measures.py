"""The study's measurements: training compute, per-epoch timing, the calibration study, and one
end-to-end run of the real ``usnet train`` through the runner on the generated Fashion-MNIST."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from fixtures import write_fashion_mnist
from study_helpers import (
    METHODS,
    fake_calls,
    plan_file,
    study,
)

import usnet
from benchmarks.study import cli, results


def test_training_compute_follows_the_sampling_rule(study_template):
    model = usnet.load(study_template)
    lo, hi = 0.35, 1.0
    expected = results.expected_macs(model, lo, hi)
    brute = sum(usnet.macs(model, lo + (hi - lo) * (i + 0.5) / 50) for i in range(50)) / 50
    assert usnet.macs(model, lo) < expected < usnet.macs(model, hi)
    assert expected == pytest.approx(brute, rel=0.02)
    train = {"sampling": "sandwich", "num_widths": 4, "widths": None}
    sandwich = results.step_macs(model, train, [lo, hi])
    assert sandwich == pytest.approx(usnet.macs(model, hi) + usnet.macs(model, lo) + 2 * expected)
    random = results.step_macs(model, {**train, "sampling": "random", "num_widths": 3}, [lo, hi])
    assert random == pytest.approx(3 * expected)
    fixed = results.step_macs(model, {**train, "sampling": "fixed", "widths": [0.5]}, [lo, hi])
    assert fixed == usnet.macs(model, 0.5)


def test_end_to_end_real_usnet_train_through_the_runner(tmp_path):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=128, n_test=64)
    plan = plan_file(
        tmp_path,
        set=[
            f"data.root={data}",
            "train.max_steps_per_epoch=2",
            "data.batch_size=32",
            "data.val_batch_size=64",
            "calibrate.num_samples=64",
            "eval.widths=0.25,1.0",
        ],  # fmt: skip
        spectrum_widths="0.25,0.5,1.0",
        methods={"us": METHODS["us"]},
        runs=[{"method": "us", "epochs": 1}],
    )
    out = tmp_path / "results"
    assert cli.main(["run", str(plan), "--runs-dir", str(tmp_path / "runs"),
                     "--results-dir", str(out)]) == 0  # fmt: skip
    meta = usnet.checkpoint.read_meta(tmp_path / "runs/p/us-e1-s0/checkpoint")
    with open(out / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    us = {float(r["width"]): r for r in table if r["run"] == "us-e1-s0"}
    assert sorted(us) == [0.25, 0.5, 1.0] and us[0.5]["source"] == "spectrum"
    for r in meta["results"]:
        assert float(us[r["width"]]["top1"]) == pytest.approx(r["top1"])
    model = usnet.checkpoint.load(tmp_path / "runs/p/us-e1-s0/checkpoint")
    assert int(us[1.0]["macs"]) == usnet.macs(model, 1.0)
    assert float(us[1.0]["train_macs"]) == pytest.approx(
        3 * 64 * results.step_macs(model, meta["config"]["train"], [0.25, 1.0])
    )
    assert float(us[1.0]["cpu_seconds"]) > 0 and float(us[1.0]["wall_seconds"]) > 0


def test_calibration_study_compares_settings_with_the_reference_and_skips_done_ones(
    tmp_path, study_template, capsys
):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=128, n_test=64)
    model = usnet.load(study_template)
    config = {"data": {"name": "fashion_mnist", "root": str(data), "val_batch_size": 64}}
    usnet.save(model, tmp_path / "runs/sched/us-e4-s0/checkpoint", meta={"config": config})
    plan = tmp_path / "calib.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "checkpoint": {"plan": "sched", "run": "us-e4-s0"},
                "widths": "0.35,1.0",
                "num_samples": [32, 64],
                "seeds": [0],
                "reference": {"num_samples": 64},
                "batch_size": 16,
            }
        )
    )
    args = ["calibration", str(plan), "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results")]  # fmt: skip
    assert cli.main(args) == 0
    assert capsys.readouterr().out.count(" s for 2 widths") == 4  # the reference is one of them
    with open(tmp_path / "results/calib.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 * 2
    ref = [r for r in table if (r["num_samples"], r["method"]) == ("64", "exact")]
    assert [float(r["diff_pp"]) for r in ref] == [0.0, 0.0]
    for r in table:
        assert float(r["diff_pp"]) == pytest.approx(
            100 * (float(r["top1"]) - float(r["top1_reference"])), abs=1e-3
        )
        assert float(r["seconds"]) > 0
    assert (tmp_path / "results/calib/calibration.png").stat().st_size > 1000
    assert cli.main(args) == 0 and " s for 2 widths" not in capsys.readouterr().out
    (tmp_path / "runs/sched/us-e4-s0/checkpoint/usnet.json").unlink()
    assert cli.main(args) == 2
    assert "run plan sched first" in capsys.readouterr().err


def test_timing_measures_two_short_epochs_per_method_and_prints_the_plan_block(
    tmp_path, fake_usnet, capsys
):
    plan = plan_file(tmp_path, grids=[{"method": ["us", "ind-1.0"], "epochs": [32], "seed": [3]}])
    out = tmp_path / "timing.json"
    args = ["--methods", "us", "--steps", "10", "--steps-per-epoch", "100", "--out", str(out)]
    assert study(tmp_path, "time", plan, *args) == 0
    (call,) = fake_calls(fake_usnet)
    assert call[0] == "train" and call[2] == "fresh"
    printed = capsys.readouterr().out
    assert "timing:\n  measured: " in printed and "  seconds_per_epoch:\n    us: " in printed
    (m,) = json.loads(out.read_text())["methods"]
    assert m["step_seconds"] == pytest.approx(0.128)  # the fake's 1.28 s per 10-step epoch
    assert m["epoch_seconds"] == pytest.approx(100 * 0.128 + m["validation_seconds"], abs=0.1)
    assert 0 < m["cpu_per_wall"] <= 1.5 and m["epoch_cpu_seconds"] > 0


def test_a_collapsed_run_does_not_squeeze_the_other_curves():
    """The y-axis spans FOCUS_SPAN points below the best mean; the point below is marked on the
    bottom edge with its value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from benchmarks.study import plots

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ok = [{"mean": m, "lo": m, "hi": m} for m in (91.0, 91.5)]
    bad = [{"mean": m, "lo": m, "hi": m} for m in (65.9, 91.8)]
    drawn = plots._draw(ax, [0.5, 1.0], ok, "us", ("us", "C0"))
    drawn += plots._draw(ax, [0.5, 1.0], bad, "n2", ("us", "C1"))
    plots._focus(ax, drawn)
    assert ax.get_ylim()[0] == pytest.approx(91.8 - plots.FOCUS_SPAN)
    assert [t.get_text() for t in ax.texts] == ["65.9"]
    other = fig.add_subplot(2, 1, 2)
    plots._focus(other, plots._draw(other, [1.0], ok[:1], "us", ("us", "C0")))
    assert not other.texts  # nothing below the span: the default limits stay


def test_summary_gives_mean_spread_and_the_difference_to_individual_training():
    from benchmarks.study.summary import summary_markdown

    def row(series, seed, top1, source="train", width=0.25):
        return {"series": series, "epochs": 4, "width": width, "seed": seed, "top1": top1,
                "train_macs": 1.0, "source": source}  # fmt: skip

    rows = [row("us", 0, 0.90), row("us", 1, 0.92), row("us", 0, 0.5, source="spectrum"),
            row("individual", 0, 0.895), row("individual", 1, 0.905)]  # fmt: skip
    lines = summary_markdown(rows).splitlines()
    # spectrum rows left out; s.e. = sqrt(1.414^2 / 2 + 0.707^2 / 2) = 1.12
    assert lines[2] == "| 4 | us | 0.25 | 91.00 [90.00, 92.00] | 2 | +1.00 | 1.12 |"
    assert lines[3] == "| 4 | individual | 0.25 | 90.00 [89.50, 90.50] | 2 |  |  |"
    assert lines[-1] == "| 4 | 0.25 | us | individual | +1.00 | 1.12 |"  # the pairs table


def test_the_gap_during_training_is_per_epoch_against_the_same_seed_and_width():
    from benchmarks.study.summary import training_gap_markdown

    def doc(series, seed, widths, history, epochs=2):
        return {"series": series, "family": series, "epochs": epochs, "seed": seed, "lr": None,
                "widths": [{"width": w} for w in widths],
                "training": {"history": [dict(epoch=i + 1, **h) for i, h in enumerate(history)]}}  # fmt: skip

    docs = [
        doc("us", 0, [1.0, 0.25], [{"top1@0.25": 0.80, "top1@1": 0.85}, {"top1@0.25": 0.88, "top1@1": 0.90}]),
        doc("us", 1, [1.0, 0.25], [{"top1@0.25": 0.82, "top1@1": 0.85}, {"top1@0.25": 0.90, "top1@1": 0.90}]),
        doc("individual", 0, [0.25], [{"top1@0.25": 0.84}, {"top1@0.25": 0.87}]),
        doc("individual", 1, [0.25], [{"top1@0.25": 0.84}, {"top1@0.25": 0.89}]),
        doc("individual", 2, [1.0], [{"top1@1": 0.5}, {"top1@1": 0.5}]),  # no US-Net of seed 2
        doc("individual", 0, [1.0], [{"top1@1": 0.9}]),  # one epoch validated of two: skipped
    ]  # fmt: skip
    lines = training_gap_markdown(docs).splitlines()
    # width 0.25, seeds 0 and 1: epoch 1 (-4 and -2) / 2, epoch 2 (+1 and +1) / 2
    assert lines[2:] == ["| 2 | us | 0.25 | 2 | -3.00 +1.00 |"]
    assert training_gap_markdown(docs[2:]) == ""


def test_the_training_loss_is_compared_at_the_widest_width_with_the_same_seed_and_smoothing():
    from benchmarks.study.summary import training_loss_markdown

    def doc(family, seed, widths, losses, sampling="sandwich", smoothing=0.0):
        return {"series": family, "family": family, "epochs": 3, "seed": seed, "lr": None,
                "widths": [{"width": w} for w in widths],
                "config": {"train": {"sampling": sampling, "label_smoothing": smoothing}},
                "training": {"history": [{"epoch": i + 1, "loss_first": x} for i, x in enumerate(losses)]}}  # fmt: skip

    docs = [
        doc("us", 0, [0.25, 1.0], [0.9, 0.5, 0.3]),
        doc("us", 1, [0.25, 1.0], [0.9, 0.5, 0.1]),  # lower than its reference ever got
        doc("individual", 0, [1.0], [0.6, 0.3, 0.1], sampling="fixed"),
        doc("individual", 1, [1.0], [0.6, 0.3, 0.2], sampling="fixed"),
        doc("individual", 0, [0.25], [0.0, 0.0, 0.0], sampling="fixed"),  # not the widest width
        doc("random", 0, [0.25, 1.0], [0.9, 0.5, 0.3], sampling="random"),  # first width random
        doc("smooth", 0, [0.25, 1.0], [0.9, 0.5, 0.3], smoothing=0.1),  # no reference smoothed
    ]  # fmt: skip
    lines = training_loss_markdown(docs).splitlines()
    # seed 0 ends at 0.3, first reached by its reference after epoch 2; seed 1 at 0.1: never
    assert lines[2:] == ["| 3 | us | 2 | 0.200 | 0.150 | 2, - |"]
    assert training_loss_markdown(docs[2:]) == ""
