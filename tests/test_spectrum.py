"""usnet.spectrum: one row per network, calibration on demand, interleaved timing, files, tables,
validation, the plot."""

from __future__ import annotations

import csv
import json
from typing import Literal

import pytest
import torch
from fake_clock import ScheduledClock
from tiny import tiny_model
from torch.utils.data import DataLoader, TensorDataset

import usnet
import usnet.tasks
from usnet.calibration import calibrate, is_calibrated
from usnet.config import Section
from usnet.nn import USBatchNorm2d, width_space
from usnet.spectrum import (
    Metric,
    MetricProvider,
    ProviderOptions,
    baseline_points,
    compute_spectrum,
    format_table,
    load_spectrum,
    save_spectrum,
)
from usnet.spectrum.plot import plot_spectrum
from usnet.tasks import metric_provider, register_task
from usnet.tasks.classification.evaluate import evaluate
from usnet.tasks.classification.provider import CLASSIFICATION_METRICS

PNG = b"\x89PNG\r\n\x1a\n"
# The tiny model's widths 0.35..0.55 all round to the same network (so do 0.85..1.0).
GRID = [0.35, 0.45, 0.55, 0.7, 1.0]


_model = tiny_model


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
    calibrate(model, loader, [1.0], 48)
    provider = _provider(loader)
    provider.calibration = None  # no data to calibrate with
    spec = compute_spectrum(
        model, [0.35, 1.0], provider, batch_size_throughput=2, repeats=1, warmup=0
    )
    narrow, full = spec.rows
    assert narrow.metrics == {} and narrow.latency_ms > 0  # timed with placeholder statistics
    assert set(full.metrics) >= {"top1"} and spec.calibrated_here == []
    key = width_space(model).resolve(0.35)[1]
    assert all(bn.get_stats(key) is None for bn in model.modules() if isinstance(bn, USBatchNorm2d))


def test_bad_grid_is_rejected_before_any_work():
    with pytest.raises(ValueError, match="outside the model's width range"):
        compute_spectrum(_model(), [0.2, 0.5], latency=False)
    with pytest.raises(ValueError, match="widths is empty"):
        compute_spectrum(_model(), [], latency=False)


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


class _ToyConfig(Section):
    task: Literal["toy"] = "toy"
    a: int = 0


def test_metric_provider_dispatches_on_the_task(monkeypatch):
    """Through the one task registry, on the checkpoint config's ``task``."""
    monkeypatch.setattr(usnet.tasks, "_TASKS", dict(usnet.tasks._TASKS))  # the toy task stays here
    seen = {}

    class Toy:
        name, config = "toy", _ToyConfig

        def metric_provider(self, model, cfg, options):
            seen["config"], seen["options"] = cfg, options
            return MetricProvider("toy", (Metric("score", "score"),), lambda m, w: {"score": 1.0})

    register_task(Toy())
    model = _model()
    meta = {"config": {"task": "toy", "a": 1}}
    provider = metric_provider(model, meta, ProviderOptions(max_eval_samples=5))
    assert provider(model, 0.5) == {"score": 1.0} and provider.primary.name == "score"
    assert seen["config"] == _ToyConfig(a=1) and seen["options"].max_eval_samples == 5
    with pytest.raises(ValueError, match="no training config"):
        metric_provider(model, {})
    with pytest.raises(ValueError, match="checkpoint meta.config: task: expected one of .*toy.*'nothing'"):
        metric_provider(model, {"config": {"task": "nothing"}})
    with pytest.raises(ValueError, match="checkpoint meta.config: unknown key 'b'"):
        metric_provider(model, {"config": {"task": "toy", "b": 1}})
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
        kind="switches",
    )
    assert [r.widths for r in spec.rows] == [[0.35], [0.5], [1.0]]
    assert spec.rows[0].network == spec.rows[1].network and spec.rows[0].macs == spec.rows[1].macs
    assert spec.calibrated_here == [] and all("top1" in r.metrics for r in spec.rows)


def test_latency_is_interleaved_robust_and_flags_noisy_rows(tmp_path):
    """Regression (latency noise on a busy machine): every width is timed in the same rounds, so
    a burst of load lands on all of them and the median ignores it; a width whose runs spread
    widely is flagged in the JSON, CSV, tables and plot."""
    model = _model()
    n = 3  # networks in GRID (0.35..0.55, 0.7, 1.0)
    burst = range(4 * n, 5 * n)  # one whole round after the warm-up: +40 ms for every width

    def cost(w, call, nth):
        steady = {0.55: 1.0, 0.7: 2.0}.get(w)
        ms = steady if steady is not None else (3.0 if nth % 2 else 6.0)  # 1.0 alternates
        return ms + (40.0 if call in burst else 0.0)

    clock = ScheduledClock(model, cost)
    spec = compute_spectrum(
        model, GRID, batch_size_throughput=2, repeats=12, warmup=1, timer=clock
    )
    first_rounds = [clock.calls[i : i + n] for i in range(0, 13 * n, n)]
    assert all(sorted(r) == [0.55, 0.7, 1.0] for r in first_rounds)
    steady, bursty, noisy = spec.rows
    assert steady.latency_ms == pytest.approx(1.0) and not steady.noisy
    assert steady.latency_iqr_ms == pytest.approx((1.0, 1.0))
    assert (bursty.latency_ms, bursty.noisy) == (pytest.approx(2.0), False)
    assert bursty.throughput == pytest.approx(2 * 1000 / 2.0)
    assert noisy.latency_ms == pytest.approx(4.5) and noisy.noisy
    assert noisy.latency_iqr_ms == pytest.approx((3.0, 6.0))
    assert spec.env["noisy_spread"] == 0.25 and spec.env["repeats"] == 12

    table = format_table(spec).splitlines()
    row = {line.split()[0]: line for line in table[2:5]}
    assert "!" in row["1"] and "!" not in row["0.55"] + row["0.7"]
    assert "4.50 !" in row["1"] and "3.00-6.00" in row["1"]
    assert table[-1].startswith("! noisy timing in 1 of 3 rows")
    save_spectrum(spec, tmp_path)
    assert load_spectrum(tmp_path).to_dict() == spec.to_dict()
    with open(tmp_path / "spectrum.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["noisy"] for r in csv_rows] == ["0", "0", "1"]
    assert (csv_rows[2]["latency_q1_ms"], csv_rows[2]["latency_q3_ms"]) == ("3.0", "6.0")
    assert "! noisy timing in 1 of 3 rows" in (tmp_path / "spectrum.md").read_text()
    spec.metrics = []
    assert plot_spectrum(spec, tmp_path / "noisy.png").read_bytes()[:8] == PNG


def test_a_hand_edited_spectrum_file_names_the_row_and_field(measured, tmp_path):
    """Regression: a string where a number belongs is one clear error, not a later traceback."""
    _, spec = measured
    (path,) = [p for p in save_spectrum(spec, tmp_path) if p.suffix == ".json"]
    good = json.loads(path.read_text())

    def broken(edit):
        doc = json.loads(json.dumps(good))
        edit(doc)
        path.write_text(json.dumps(doc))
        with pytest.raises(ValueError) as e:
            load_spectrum(path)
        return str(e.value)

    msg = broken(lambda d: d["rows"][1].update(macs="12M"))
    assert msg.startswith(f"{path}: row 2 (width 0.7), field macs: ")
    assert "valid integer" in msg and "'12M'" in msg
    msg = broken(lambda d: d["rows"][0]["metrics"].update(top1="high"))
    assert "row 1 (width 0.55), field metrics.top1: Input should be a valid number" in msg
    assert "field latency_ms" in broken(lambda d: d["rows"][2].update(latency_ms=-1.0))
    assert "row 3 (width 1.0), field channels: Field required" in broken(
        lambda d: d["rows"][2].pop("channels")
    )
    assert "field width: Input should be a valid number (got '0.5')" in broken(
        lambda d: d["rows"][0].update(width="0.5")
    )
    assert "field input_size" in broken(lambda d: d.update(input_size="16x16"))
    # a number of the right type but out of range: top-1 of 5.0 would print as 500 %
    assert "row 1 (width 0.55), field metrics.top1: a fraction must lie in [0, 1] (got 5.0)" in (
        broken(lambda d: d["rows"][0]["metrics"].update(top1=5.0))
    )
    # A version-1 file (before timings had quartiles) still loads.
    old = json.loads(json.dumps(good))
    old["format_version"] = 1
    for r in old["rows"]:
        del r["latency_iqr_ms"], r["throughput_iqr"], r["noisy"]
    path.write_text(json.dumps(old))
    assert load_spectrum(path).rows[0].latency_iqr_ms is None


def test_one_formatter_for_text_markdown_and_csv_from_per_width_rows():
    """The end-of-training summaries format per-width rows with the spectrum's formatter."""
    rows = [
        {"width": 1.0, "macs": 4_610_000, "top1": 0.9063, "top5": 0.9912},
        {"width": 0.25, "macs": 370_000, "top1": 0.8725, "top5": 0.98},
    ]
    metrics = CLASSIFICATION_METRICS[:2]
    assert format_table(rows, "markdown", metrics).splitlines() == [
        "| width | MACs | top-1 accuracy (%) | top-5 accuracy (%) |",
        "|---|---:|---:|---:|",
        "| 1 | 4.61M | 90.63 | 99.12 |",
        "| 0.25 | 370k | 87.25 | 98.00 |",
    ]
    text = format_table(rows, "text", metrics).splitlines()
    assert text[0].split()[:2] == ["width", "MACs"] and "top-5 accuracy (%)" in text[0]
    assert text[2].split() == ["1", "4.61M", "90.63", "99.12"] and set(text[1]) == {"-", " "}
    assert format_table(rows, "csv", metrics).splitlines() == [
        "width,macs,top1,top5",
        "1,4610000,0.9063,0.9912",
        "0.25,370000,0.8725,0.98",
    ]
    sr = [{"width": 0.5, "macs": 1e9, "psnr": 33.1}, {"width": "bicubic", "psnr": 30.2}]
    psnr = Metric("psnr", "Y-channel PSNR", unit="dB")
    assert format_table(sr, "markdown", [psnr]).splitlines()[2:] == [
        "| 0.5 | 1G | 33.1 |",
        "| bicubic | - | 30.2 |",
    ]
    with pytest.raises(ValueError, match="table style 'html' is unknown"):
        format_table(rows, "html", metrics)  # type: ignore[arg-type]
