"""`usnet search`, `usnet latency` and the searched widths in export, select and spectrum, end to
end on a tiny checkpoint whose config holds out a validation split of a generated Fashion-MNIST."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import write_fashion_mnist

import usnet
from usnet import checkpoint, cli
from usnet.config import from_dict, to_dict
from usnet.search import read, searched_widths
from usnet.spectrum import load_spectrum
from usnet.tasks.classification import TrainConfig

KW = {"blocks": [[32, 1, 1], [32, 1, 2]], "stem_channels": 32}
FAST = ["--val-samples", "64", "--calibration-samples", "64", "--quiet"]


def _checkpoint(root, val_size: int):
    data = write_fashion_mnist(root / "fm", 200, 64)
    cfg = from_dict(
        TrainConfig,
        {
            "model": {"name": "us_mobilenet_v1_small", "kwargs": KW},
            "data": {"root": str(data), "val_batch_size": 64, "val_size": val_size},
            "calibrate": {"num_samples": 64, "batch_size": 32},
        },
    )
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v1_small", **KW)
    return checkpoint.save(model, root / "ckpt", meta={"config": to_dict(cfg)})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("search"), 64)


@pytest.fixture(scope="module")
def unsplit(tmp_path_factory):
    """A checkpoint trained without a validation split."""
    return _checkpoint(tmp_path_factory.mktemp("unsplit"), 0)


def test_search_writes_the_front_and_other_commands_take_its_widths(ckpt, tmp_path, capsys):
    assert cli.main(["search", str(ckpt), "--max-macs", "200k", *FAST]) == 0
    out = capsys.readouterr().out
    assert "64 of the 64 fashion_mnist training images held out" in out and "chosen:" in out
    doc = read(ckpt / "search.json")
    assert doc["validation"]["split"] == "validation" and doc["chosen"]["macs"] <= 200e3
    assert all(e["test_metrics"] and e["latency_ms"] > 0 for e in doc["front"])
    assert [e["macs"] for e in doc["front"]] == sorted(e["macs"] for e in doc["front"])
    for name in ("search.md", "search.png"):
        assert (ckpt / name).is_file()
    assert "| chosen |" in (ckpt / "search.md").read_text()
    again = read(ckpt / "search.json")  # a rerun replays the stored measurements
    assert cli.main(["search", str(ckpt), "--max-macs", "200k", "--no-test", *FAST]) == 0
    capsys.readouterr()
    rerun = read(ckpt / "search.json")
    assert (
        rerun["resumed"] == rerun["candidates"]
        and rerun["front"][0]["metrics"] == again["front"][0]["metrics"]
    )

    # another method's results are not replaced silently
    rc = cli.main(["search", str(ckpt), "--max-macs", "200k", "--method", "evolution", *FAST])
    assert rc == 2 and "--out FILE or --overwrite" in capsys.readouterr().err

    chosen = searched_widths(str(ckpt / "search.json"))[0]
    out_file = tmp_path / "chosen.onnx"
    assert (
        cli.main(["export", str(ckpt), "--width", f"@{ckpt}/search.json", "--out", str(out_file)])
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        out_file.stat().st_size > 0
        and usnet.nn.format_width(usnet.nn.width_space(checkpoint.load(ckpt)).canonical(chosen))
        in printed
    )
    entry = json.dumps(doc["front"][0])
    assert searched_widths(entry) == [doc["front"][0]["width"]]
    with pytest.raises(ValueError, match="the front has"):
        searched_widths(f"{ckpt}/search.json#99")

    common = [
        "--threads",
        "1",
        "--repeats",
        "2",
        "--batch-size",
        "2",
        "--quiet",
        "--num-samples",
        "64",
    ]
    assert (
        cli.main(
            [
                "spectrum",
                str(ckpt),
                "--widths",
                "0.25,1.0",
                "--search",
                f"{ckpt}/search.json",
                *common,
            ]
        )
        == 0
    )
    capsys.readouterr()
    spec = load_spectrum(ckpt)
    (found,) = spec.baselines
    assert found.kind == "searched" and len(found.rows) >= 1 and found.has_latency
    assert (
        cli.main(
            [
                "select",
                str(ckpt),
                "--max-macs",
                "200k",
                "--search",
                f"{ckpt}/search.json#chosen",
                *common,
            ]
        )
        == 0
    )
    assert "selected width" in capsys.readouterr().out


def test_latency_command_and_a_latency_budget(unsplit, tmp_path, capsys):
    """On a checkpoint without a validation split: the search says what it measured on."""
    ckpt = unsplit
    lm = tmp_path / "lm.json"
    args = [
        "latency",
        str(ckpt),
        "--fit",
        "6",
        "--validate",
        "3",
        "--rounds",
        "3",
        "--out",
        str(lm),
        "--quiet",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "median absolute error" in out and "| 3 |" in out
    predicted = json.loads(lm.read_text())["validation"]["rows"][0]["predicted_ms"]
    out_json = tmp_path / "s.json"
    rc = cli.main(
        [
            "search",
            str(ckpt),
            "--max-latency-ms",
            str(10 * predicted),
            "--latency-model",
            str(lm),
            "--out",
            str(out_json),
            "--no-test",
            *FAST,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "these images were trained on" in out
    doc = read(out_json)
    assert doc["cost"] == "latency_ms" and doc["chosen"]["predicted_latency_ms"] <= 10 * predicted
    assert doc["validation"]["split"] == "train" and "trained on" in doc["validation"]["note"]
    assert "holds no validation split" in out_json.with_suffix(".md").read_text()
    rc = cli.main(
        [
            "search",
            str(ckpt),
            "--max-latency-ms",
            "1",
            "--latency-model",
            str(tmp_path / "no.json"),
            *FAST,
        ]
    )
    assert rc == 2


def test_a_rerun_with_another_budget_reads_the_front_test_metrics_it_has(ckpt, tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert cli.main(["search", str(ckpt), "--max-macs", "150k", "--out", str(first), *FAST]) == 0
    doc = read(first)
    # the newest: other tests of the module search the same checkpoint with other threads
    stored = max((ckpt / "search_cache").glob("test-*.json"), key=lambda f: f.stat().st_mtime_ns)
    cache = json.loads(stored.read_text())
    assert set(cache["metrics"]) >= {e["network"] for e in doc["front"]}
    # a sentinel in the stored metrics shows the rerun read them instead of measuring again
    key = doc["front"][0]["network"]
    cache["metrics"][key]["top1"] = 0.123
    stored.write_text(json.dumps(cache))
    assert cli.main(["search", str(ckpt), "--max-macs", "250k", "--out", str(second), *FAST]) == 0
    capsys.readouterr()
    again = {e["network"]: e["test_metrics"] for e in read(second)["front"]}
    assert again[key]["top1"] == 0.123
    others = {e["network"]: e["test_metrics"] for e in doc["front"][1:]}
    assert all(again[k] == m for k, m in others.items() if k in again)
