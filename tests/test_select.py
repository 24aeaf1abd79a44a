"""Choosing a width (usnet.spectrum.select), budget parsing, and `usnet spectrum` / `usnet select`
end to end on a tiny checkpoint whose config points at a generated Fashion-MNIST."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import usnet
from usnet import checkpoint, cli
from usnet.config import from_dict, to_dict
from usnet.spectrum import (
    Metric,
    Spectrum,
    SpectrumRow,
    load_spectrum,
    parse_count,
    parse_latency_ms,
    parse_target,
    select,
)
from usnet.tasks.classification import TrainConfig


def _spectrum(rows: list[tuple[float, float, float, float | None]], metrics=None) -> Spectrum:
    """Rows of (width, MACs in millions, latency ms, top1)."""
    return Spectrum(
        rows=[
            SpectrumRow(
                width=w,
                widths=[w],
                network=f"n{w}",
                channels=int(100 * w),
                channels_full=100,
                macs=int(m * 1e6),
                params=1000,
                latency_ms=ms,
                metrics={} if top1 is None else {"top1": top1, "loss": 1 - top1},
            )
            for w, m, ms, top1 in rows
        ],
        model="toy",
        task="classification",
        metrics=metrics
        if metrics is not None
        else [
            Metric("top1", "top-1 accuracy", True, fraction=True),
            Metric("loss", "cross-entropy", False),
        ],
        input_size=(1, 28, 28),
        env={"device": "cpu"},
    )


# A noisy curve: width 0.75 scores better than the full width.
SPEC = _spectrum(
    [(0.35, 60, 2.0, 0.70), (0.5, 100, 3.0, 0.80), (0.75, 200, 4.5, 0.86), (1.0, 300, 6.0, 0.85)]
)


def test_macs_budget_takes_the_best_metric_that_fits():
    assert select(SPEC, max_macs=150e6).row.width == 0.5
    assert select(SPEC, max_macs=250e6).row.width == 0.75
    choice = select(SPEC, max_macs=1e9)
    assert choice.row.width == 0.75 and choice.fitting == 4  # best, not widest
    assert "best top-1 accuracy of 4 networks within MACs <= 1G" in choice.reason


def test_latency_budget_and_combined_budgets():
    assert select(SPEC, max_latency_ms=3.5).row.width == 0.5
    assert select(SPEC, max_latency_ms=5, max_macs=90e6).row.width == 0.35
    with pytest.raises(
        ValueError, match=r"no width fits latency <= 1 ms: the cheapest .* width 0.35"
    ):
        select(SPEC, max_latency_ms=1)
    no_latency = _spectrum([(0.5, 100, None, 0.8)])
    with pytest.raises(ValueError, match="has no latency"):
        select(no_latency, max_latency_ms=5)


def test_metric_floor_takes_the_cheapest_that_reaches_it():
    choice = select(SPEC, target=("top1", 0.8))
    assert choice.row.width == 0.5 and choice.fitting == 3
    assert "cheapest of 3 networks reaching top1 >= 80.00%" in choice.reason
    assert select(SPEC, target=("top1", 0.85)).row.width == 0.75
    assert select(SPEC, target=("loss", 0.25)).row.width == 0.5  # lower is better: at most
    with pytest.raises(
        ValueError, match=r"no width reaches top1 >= 90.00%: the best is width 0.75"
    ):
        select(SPEC, target=("top1", 0.9))
    with pytest.raises(ValueError, match="within MACs <= 150M: the best is width 0.5"):
        select(SPEC, target=("top1", 0.85), max_macs=150e6)
    with pytest.raises(ValueError, match="metric 'psnr' is not in this spectrum"):
        select(SPEC, target=("psnr", 30))


def test_no_fit_names_the_cheapest_and_no_budget_is_an_error():
    with pytest.raises(
        ValueError, match=r"no width fits MACs <= 10M: the cheapest .*width 0.35, 60M MACs"
    ):
        select(SPEC, max_macs=10e6)
    with pytest.raises(ValueError, match="give a budget"):
        select(SPEC)


def test_without_metrics_the_widest_network_that_fits_is_chosen():
    costs = _spectrum([(0.35, 60, 2.0, None), (0.5, 100, 3.0, None)], metrics=[])
    choice = select(costs, max_macs=200e6)
    assert choice.row.width == 0.5 and "no quality metric" in choice.reason


def test_budget_parsing():
    assert parse_count("150M") == 150e6
    assert parse_count("1.2G") == pytest.approx(1.2e9)
    assert parse_count("5e8") == 5e8 and parse_count("300k") == 3e5 and parse_count("42") == 42
    for bad in ("150X", "", "M", "-5M", "1..2M"):
        with pytest.raises(ValueError, match="suffix k, M, G or T|must be positive"):
            parse_count(bad, "--max-macs")
    assert parse_latency_ms("5") == 5 and parse_latency_ms("5ms") == 5
    assert parse_latency_ms("500us") == pytest.approx(0.5) and parse_latency_ms("0.01s") == 10
    with pytest.raises(ValueError, match="milliseconds"):
        parse_latency_ms("fast")
    assert parse_target("top1=0.9") == ("top1", 0.9)
    assert parse_target("top1=90%", SPEC.metrics) == ("top1", pytest.approx(0.9))
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\] \\(or 0% to 100%\\), got 90; did you mean 0.9"):
        parse_target("top1=90", SPEC.metrics)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_target("top1")


# -- the commands, end to end -----------------------------------------------------------------
def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fashion_mnist(root: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 48), ("t10k", 32)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def _checkpoint(path: Path, data: Path, **train: object) -> Path:
    kwargs = {"blocks": [[1, 8, 1, 1], [6, 16, 2, 2]], "last_channels": 64}
    config = from_dict(
        TrainConfig,
        {
            "model": {"name": "us_mobilenet_v2_small", "kwargs": kwargs},
            "data": {"root": str(data), "val_batch_size": 16},
            "train": train,
            "calibrate": {"num_samples": 48, "batch_size": 24},
        },
    )
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v2_small", **kwargs)
    return checkpoint.save(model, path, meta={"config": to_dict(config)})


def test_spectrum_and_select_commands(tmp_path, capsys):
    data = tmp_path / "fmnist"
    data.mkdir()
    _fashion_mnist(data)
    ckpt = _checkpoint(tmp_path / "us", data)
    fixed = _checkpoint(tmp_path / "fixed", data, sampling="fixed", widths=[0.5])
    common = ["--threads", "1", "--repeats", "2", "--batch-size", "2", "--quiet"]

    rc = cli.main(
        ["spectrum", str(ckpt), "--widths", "0.35,0.45,0.7,1.0", *common, "--baseline", str(fixed)]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "us_mobilenet_v2_small on fashion_mnist" in out and "0.35..0.45 (2)" in out
    for name in ("spectrum.csv", "spectrum.json", "spectrum.md", "spectrum.png"):
        assert (ckpt / name).is_file(), name
    assert (ckpt / "spectrum.png").read_bytes()[:4] == b"\x89PNG"
    spec = load_spectrum(ckpt)
    assert len(spec.rows) == 3 and spec.dataset == "fashion_mnist" and spec.has_latency
    assert all("top1" in r.metrics for r in spec.rows)
    (base,) = spec.baselines
    assert base.kind == "individual" and [r.width for r in base.rows] == [0.5]
    # the baseline was timed in the US-Net's rounds, not after them
    assert base.has_latency and spec.env["latency_order"].endswith("shuffled, with 1 other model")
    assert base.env["latency_order"] == spec.env["latency_order"]
    # New statistics went back into both checkpoints, and the spectrum names the new save.
    calibrated = {c["width"] for c in checkpoint.read_info(ckpt)["calibrated"]}
    assert calibrated == {0.35, 0.45, 0.7, 1.0}
    assert spec.source["save_id"] == checkpoint.read_info(ckpt)["save_id"]
    assert usnet.calibration.is_calibrated(checkpoint.load(fixed), 0.5)

    macs = sorted(r.macs for r in spec.rows)
    rc = cli.main(["select", str(ckpt), "--max-macs", str(macs[1]), *common])
    out = capsys.readouterr().out
    assert rc == 0 and "using the saved spectrum" in out and "selected width" in out
    best = max((r for r in spec.rows if r.macs <= macs[1]), key=lambda r: r.metrics["top1"])
    assert f"selected width {best.label}" in out

    rc = cli.main(["select", str(ckpt), "--max-latency-ms", "1e4", *common])
    assert rc == 0 and "using the saved spectrum" in capsys.readouterr().out

    rc = cli.main(["select", str(ckpt), "--min-top1", "0.0", "--widths", "0.35,0.5", *common])
    out = capsys.readouterr().out  # 0.5 was not measured: measure here, in memory only
    assert rc == 0 and "measuring the spectrum here" in out
    assert "selected width 0.5 (the same network as widths 0.35..0.5 (2))" in out
    assert {c["width"] for c in checkpoint.read_info(ckpt)["calibrated"]} == calibrated

    exported = tmp_path / "chosen.onnx"
    rc = cli.main(["select", str(ckpt), "--max-macs", "1G", "--export", str(exported), *common])
    out = capsys.readouterr().out
    assert rc == 0 and "as onnx to" in out and exported.stat().st_size > 0

    rc = cli.main(["select", str(ckpt), "--max-macs", "1k", *common])
    err = capsys.readouterr().err
    assert rc == 2 and "no width fits MACs <= 1k: the cheapest available is width 0.45" in err
    rc = cli.main(["select", str(ckpt), *common])
    assert rc == 2 and "give a budget" in capsys.readouterr().err

    json.loads((ckpt / "spectrum.json").read_text())  # still valid after the selects


def test_select_survives_a_hand_edited_spectrum_file(tmp_path, capsys):
    """Regression: a string where a number belongs in CKPT/spectrum.json used to end `usnet
    select` in a TypeError traceback; now the file is refused naming the row and field, and the
    spectrum is measured afresh."""
    ckpt = _checkpoint(tmp_path / "us", tmp_path)
    common = ["--threads", "1", "--repeats", "2", "--batch-size", "2", "--quiet", "--no-metric"]
    assert cli.main(["spectrum", str(ckpt), "--widths", "0.35,0.7,1.0", *common]) == 0
    doc = json.loads((ckpt / "spectrum.json").read_text())
    doc["rows"][1]["macs"] = "12M"
    (ckpt / "spectrum.json").write_text(json.dumps(doc))
    capsys.readouterr()

    rc = cli.main(["select", str(ckpt), "--max-macs", "1G", *common])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert (
        f"saved spectrum unreadable ({ckpt / 'spectrum.json'}: row 2 (width 0.7), field macs" in out
    )
    assert "selected width 1" in out


def test_a_latency_budget_without_a_saved_spectrum_measures_latency_here(tmp_path, capsys):
    """`select --max-latency-ms` on a checkpoint without spectrum.json times the widths itself
    (the one caller of the spectrum command's `measure(latency=True)`)."""
    ckpt = _checkpoint(tmp_path / "us", tmp_path)
    common = ["--threads", "1", "--repeats", "2", "--batch-size", "2", "--quiet", "--no-metric"]
    rc = cli.main(["select", str(ckpt), "--max-latency-ms", "1e4", "--widths", "0.35,1.0", *common])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "measuring the spectrum here" in out and "selected width 1" in out
    assert " ms" in out.split("selected width 1", 1)[1]  # the chosen row's measured latency
    assert not (ckpt / "spectrum.json").exists()  # measured in memory only


def test_an_unknown_target_metric_is_refused_before_anything_is_measured(
    tmp_path, capsys, monkeypatch
):
    """Regression: ``--target bogus=3`` named its error only after minutes of measuring."""
    from usnet.commands import select as select_command

    data = tmp_path / "fmnist"
    data.mkdir()
    _fashion_mnist(data)
    ckpt = _checkpoint(tmp_path / "us", data)

    def never(*args, **kwargs):
        raise AssertionError("measured before checking the target")

    monkeypatch.setattr(select_command, "measure", never)
    rc = cli.main(["select", str(ckpt), "--target", "bogus=3", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "metric 'bogus' is not in what a classification model measures" in err
    assert "'top1'" in err


def test_a_baseline_that_cannot_be_compared_is_refused_before_anything_is_measured(
    tmp_path, capsys, monkeypatch
):
    """Regression: a baseline of another task (an SR model beside a classifier) was evaluated
    with the classifier's data and loss and ended in a RuntimeError traceback, and a mistyped
    baseline path was named only after the checkpoint had been measured."""
    from usnet.commands import spectrum as spectrum_command

    data = tmp_path / "fmnist"
    data.mkdir()
    _fashion_mnist(data)
    ckpt = _checkpoint(tmp_path / "us", data)
    sr = checkpoint.save(
        usnet.create_model("us_edsr", n_resblocks=1, n_feats=8), tmp_path / "sr", meta={}
    )

    def never(*args, **kwargs):
        raise AssertionError("measured before checking the baselines")

    monkeypatch.setattr(spectrum_command, "measure", never)
    common = ["--threads", "1", "--repeats", "2", "--batch-size", "2", "--quiet"]
    for baseline, message in (
        (sr, f"baseline {sr} is a 'sr' model, the checkpoint a 'classification' one"),
        (tmp_path / "nope", "no such checkpoint folder"),
    ):
        rc = cli.main(["spectrum", str(ckpt), "--widths", "0.35,1.0", *common,
                       "--baseline", str(ckpt), str(baseline)])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not (ckpt / "spectrum.json").exists()


def test_spectrum_out_paths_are_checked_first_and_a_file_path_means_its_checkpoint(
    tmp_path, capsys, monkeypatch
):
    """Regression: `spectrum CKPT/usnet.json` and `--out FILE` measured everything and then
    ended in `[Errno 17] File exists`; a file path now means its checkpoint folder and an
    --out that is a file is refused before anything is measured."""
    from usnet.commands import spectrum as spectrum_command

    ckpt = _checkpoint(tmp_path / "us", tmp_path)
    common = ["--threads", "1", "--repeats", "2", "--batch-size", "2", "--quiet", "--no-metric"]
    rc = cli.main(["spectrum", str(ckpt / "usnet.json"), "--widths", "0.35,1.0", *common])
    assert rc == 0, capsys.readouterr().err
    assert (ckpt / "spectrum.json").is_file()  # written into the folder the file names

    monkeypatch.setattr(spectrum_command, "measure", lambda *a, **k: pytest.fail("measured"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc = cli.main(["spectrum", str(ckpt), "--out", str(afile), *common])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"--out {afile}: is a file" in err, err


def test_individually_trained_checkpoint_takes_no_spectrum_select_or_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint trained at one per-group width has no other trained width: spectrum,
    select and search refuse it in one line (before any measuring) and point at --baseline."""
    data = tmp_path / "data"
    data.mkdir()
    _fashion_mnist(data)
    fixed = _checkpoint(tmp_path / "fixed", data, sampling="fixed", widths=[{"*": 0.5}])
    for argv in (
        ["spectrum", str(fixed), "--quiet"],
        ["select", str(fixed), "--max-macs", "1M", "--quiet"],
        ["search", str(fixed), "--max-macs", "1M", "--quiet"],
    ):
        rc = cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert rc != 0, argv
        assert len(err.splitlines()) == 1, err
        assert "'fixed'" in err and "--baseline" in err and f"takes no {argv[0]}" in err, err
        assert err.startswith(f"usnet {argv[0]}: error: this checkpoint"), err
    assert not (fixed / "spectrum.json").exists() and not (fixed / "search.json").exists()
    # export: the trained width only (the full width of this checkpoint was never trained)
    assert cli.main(["export", str(fixed), "--width", "1.0", "--out", str(tmp_path / "w.pt")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained at one width only" in err and "0.5" in err, err
    assert not (tmp_path / "w.pt").exists()
    assert cli.main(["export", str(fixed), "--width", "0.5", "--out", str(tmp_path / "h.pt")]) == 0
    assert (tmp_path / "h.pt").is_file()
