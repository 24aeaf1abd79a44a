"""usnet.spectrum: one row per network, calibration on demand, interleaved timing, files, tables,
validation, the plot."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import usnet
from usnet.calibration import calibrate, is_calibrated
from usnet.nn import USBatchNorm2d, width_space
from usnet.spectrum import (
    Metric,
    MetricProvider,
    ProviderOptions,
    baseline_points,
    compute_spectrum,
    format_table,
    load_spectrum,
    metric_provider,
    register_metric_provider,
    save_spectrum,
)
from usnet.spectrum.plot import plot_spectrum
from usnet.training.evaluate import evaluate

PNG = b"\x89PNG\r\n\x1a\n"
# The tiny model's widths 0.35..0.55 all round to the same network (so do 0.85..1.0).
GRID = [0.35, 0.45, 0.55, 0.7, 1.0]


def _model(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v2_small",
        input_size=16,
        blocks=((1, 8, 1, 1), (6, 16, 2, 2)),
        last_channels=64,
        **kw,
    )


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 1, 16, 16, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=24)


def _provider(loader: DataLoader) -> MetricProvider:
    return MetricProvider(
        task="classification",
        metrics=(
            Metric("top1", "top-1 accuracy", True, fraction=True),
            Metric("loss", "cross-entropy", False),
        ),
        evaluate=lambda m, w: evaluate(m, loader, w),
        calibration=lambda: loader,
        num_samples=48,
        dataset="noise",
    )



@pytest.fixture(scope="module")
def measured():
    """One spectrum with latency, computed once: (model, spectrum)."""
    model = _model()
    spec = compute_spectrum(
        model,
        GRID,
        _provider(_loader()),
        batch_size_throughput=4,
        repeats=2,
        warmup=1,
        progress=False,
    )
    return model, spec


def test_widths_that_round_alike_are_one_row(measured):
    model, spec = measured
    space = width_space(model)
    keys = {w: space.resolve(w)[1] for w in GRID}
    assert keys[0.35] == keys[0.45] == keys[0.55] and len(set(keys.values())) == 3
    assert len(spec.rows) == 3
    first = spec.rows[0]
    assert first.widths == [0.35, 0.45, 0.55]
    assert first.width == 0.55  # closest to its real share of channels (128 of 200)
    assert first.channels / first.channels_full == pytest.approx(0.64)
    assert spec.rows[-1].width == 1.0
    assert first.shared == "0.35..0.55 (3)"
    assert [r.macs for r in spec.rows] == sorted(r.macs for r in spec.rows)
    assert spec.rows[-1].channels == spec.rows[-1].channels_full  # full width: every channel
    assert spec.rows[0].channels < spec.rows[1].channels
    assert spec.rows[-1].macs == usnet.profile.macs(model, 1.0)
    assert spec.rows[-1].params == usnet.profile.params(model, 1.0)


def test_uncalibrated_widths_are_calibrated_first(measured):
    model, spec = measured
    assert all(is_calibrated(model, w) for w in GRID)
    assert sorted(spec.calibrated_here) == sorted(f"{w:g}" for w in GRID)
    for row in spec.rows:
        assert set(row.metrics) >= {"top1", "loss"} and 0 <= row.metrics["top1"] <= 1
        assert row.latency_ms > 0 and row.throughput > 0
    env = spec.env
    assert env["device"] == "cpu" and env["threads"] == torch.get_num_threads()
    assert env["torch"] == torch.__version__ and env["throughput_batch_size"] == 4
    # The metric is the model's own at that width.
    want = evaluate(model, _loader(), 0.7)["top1"]
    assert spec.rows[1].metrics["top1"] == pytest.approx(want)


def test_without_calibration_data_widths_are_timed_but_not_scored():
    model = _model()
    loader = _loader()
    calibrate(model, loader, [1.0], 48, progress=False)
    provider = _provider(loader)
    provider.calibration = None  # no data to calibrate with
    spec = compute_spectrum(
        model, [0.35, 1.0], provider, batch_size_throughput=2, repeats=1, warmup=0, progress=False
    )
    narrow, full = spec.rows
    assert narrow.metrics == {} and narrow.latency_ms > 0  # timed with placeholder statistics
    assert set(full.metrics) >= {"top1"} and spec.calibrated_here == []
    key = width_space(model).resolve(0.35)[1]
    assert all(bn.get_stats(key) is None for bn in model.modules() if isinstance(bn, USBatchNorm2d))


def test_bad_grid_is_rejected_before_any_work():
    with pytest.raises(ValueError, match="outside the model's width range"):
        compute_spectrum(_model(), [0.2, 0.5], latency=False, progress=False)
    with pytest.raises(ValueError, match="widths is empty"):
        compute_spectrum(_model(), [], latency=False, progress=False)


def test_files_round_trip(measured, tmp_path):
    _, spec = measured
    paths = save_spectrum(spec, tmp_path)
    assert [p.name for p in paths] == ["spectrum.csv", "spectrum.json", "spectrum.md"]
    again = load_spectrum(tmp_path)
    assert again.to_dict() == spec.to_dict()
    with open(tmp_path / "spectrum.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["widths"] == "0.35 0.45 0.55"
    assert float(rows[2]["top1"]) == pytest.approx(spec.rows[2].metrics["top1"])
    md = (tmp_path / "spectrum.md").read_text()
    assert "| width |" in md and "top-1 accuracy (%)" in md and "1 thread," in md
    assert "0.35..0.55 (3)" in format_table(spec)
    bad = json.loads((tmp_path / "spectrum.json").read_text())
    bad["format"] = "other"
    (tmp_path / "spectrum.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="not a usnet spectrum"):
        load_spectrum(tmp_path)


def test_plot_is_a_png_with_baselines_and_without_latency(measured, tmp_path):
    _, spec = measured
    fixed = load_spectrum_copy(spec)
    fixed.label, fixed.kind, fixed.rows = "individually trained", "individual", fixed.rows[:1]
    spec_b = load_spectrum_copy(spec)
    spec_b.baselines = [fixed]
    path = plot_spectrum(spec_b, tmp_path / "a" / "spectrum.png")
    assert path.read_bytes()[:8] == PNG
    costs_only = load_spectrum_copy(spec)
    costs_only.metrics, costs_only.rows = [], costs_only.rows
    for r in costs_only.rows:
        r.metrics = {}
    assert plot_spectrum(costs_only, tmp_path / "b.png").read_bytes()[:8] == PNG
    no_latency = load_spectrum_copy(spec)
    for r in no_latency.rows:
        r.latency_ms = r.throughput = None
    assert plot_spectrum(no_latency, tmp_path / "c.png").read_bytes()[:8] == PNG
    costs_only.rows = [r for r in no_latency.rows]
    for r in costs_only.rows:
        r.metrics = {}
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_spectrum(costs_only, tmp_path / "d.png")


def load_spectrum_copy(spec):
    return type(spec).from_dict(json.loads(json.dumps(spec.to_dict())))


def test_metric_provider_dispatches_on_the_task():
    seen = {}

    @register_metric_provider("toy")
    def _toy(model, config, options):
        seen["config"], seen["options"] = config, options
        return MetricProvider("toy", (Metric("score", "score"),), lambda m, w: {"score": 1.0})

    model = _model()
    model.task = "toy"
    provider = metric_provider(model, {"config": {"a": 1}}, ProviderOptions(max_eval_samples=5))
    assert provider(model, 0.5) == {"score": 1.0} and provider.primary.name == "score"
    assert seen["config"] == {"a": 1} and seen["options"].max_eval_samples == 5
    with pytest.raises(ValueError, match="no training config"):
        metric_provider(model, {})
    model.task = "nothing"
    with pytest.raises(ValueError, match="no metric provider for task 'nothing'"):
        metric_provider(model, {"config": {}})
    with pytest.raises(ValueError, match="declares no ranked metric"):
        MetricProvider("x", (Metric("std", "std", None),), lambda m, w: {})
    bad = MetricProvider("x", (Metric("a", "a"),), lambda m, w: {"b": 1.0})
    with pytest.raises(ValueError, match=r"\['a'\] missing"):
        bad(model, 1.0)


def test_baseline_points_by_kind():
    grid = [0.35, 0.5, 0.75, 1.0]
    switchable = _model(switches=[0.35, 0.5, 0.75, 1.0])
    assert baseline_points(switchable, {}, grid) == (
        "switches",
        "4-switch S-Net",
        [0.35, 0.5, 0.75, 1.0],
    )
    fixed = {"config": {"train": {"sampling": "fixed", "widths": [0.5]}}}
    assert baseline_points(_model(), fixed, grid) == ("individual", "individually trained", [0.5])
    narrow = _model(width_min=0.5)
    assert baseline_points(narrow, {"config": {}}, grid)[2] == [0.5, 0.75, 1.0]


def test_switches_are_separate_rows_even_with_equal_channels():
    model = _model(switches=[0.35, 0.5, 1.0])  # 0.35 and 0.5 round alike but have their own BN
    spec = compute_spectrum(
        model,
        [0.35, 0.5, 1.0],
        _provider(_loader()),
        latency=False,
        progress=False,
        kind="switches",
    )
    assert [r.widths for r in spec.rows] == [[0.35], [0.5], [1.0]]
    assert spec.rows[0].network == spec.rows[1].network and spec.rows[0].macs == spec.rows[1].macs
    assert spec.calibrated_here == [] and all("top1" in r.metrics for r in spec.rows)
