"""benchmarks/search_evidence.py: which searches it runs on the plans' checkpoints, and the CSV."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import usnet
from usnet.config import from_dict, to_dict
from usnet.tasks.classification import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
KW = {"blocks": [[32, 1, 1], [32, 1, 2]], "stem_channels": 32}


@pytest.fixture
def evidence():
    spec = importlib.util.spec_from_file_location(
        "search_evidence", ROOT / "benchmarks/search_evidence.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _run(runs: Path, name: str, status: str, nonuniform: bool) -> Path:
    folder = runs / "search_v1_mobilenet" / name
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"status": status}))
    cfg = from_dict(
        TrainConfig,
        {
            "model": {"name": "us_mobilenet_v1_small", "kwargs": KW},
            "train": {"nonuniform": nonuniform, "seed": 2},
        },
    )
    torch.manual_seed(0)
    model = usnet.create_model("us_mobilenet_v1_small", **KW)
    return usnet.save(model, folder / "checkpoint", meta={"config": to_dict(cfg)})


def test_the_searches_of_finished_runs_and_their_rows(evidence, tmp_path, capsys):
    runs = tmp_path / "runs"
    ckpt = _run(runs, "nonuniform-e4-s2", "finished", True)
    _run(runs, "uniform-e4-s2", "running", False)  # not finished: not searched
    assert evidence.main(["run", "--runs", str(runs), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "6 searches to run" in printed and "uniform-e4-s2" not in printed.replace(
        "nonuniform", ""
    )
    full = usnet.macs(usnet.load(ckpt), 1.0)
    assert f"--max-macs {int(0.25 * full)} --method greedy" in printed
    part = ["--methods", "evolution", "--budgets", "0.5", "--generations", "3"]
    assert evidence.main(["run", "--runs", str(runs), "--only", "nonuniform-e4-s2", *part,
                          "--dry-run"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "1 searches to run" in printed and f"--max-macs {int(0.5 * full)}" in printed
    assert "--method evolution" in printed and "--generations 3" in printed
    assert evidence.main(["run", "--runs", str(runs), "--only", "uniform-e4-s2", "--dry-run"]) == 0
    assert "0 searches to run" in capsys.readouterr().out

    entry = {"width": 0.5, "macs": 10, "metrics": {"top1": 0.9}, "test_metrics": {"top1": 0.88}}
    doc = {
        "budget": {"max_macs": 11},
        "method": "greedy",
        "chosen": {**entry, "width": {"stem": 0.5}, "test_metrics": {"top1": 0.885}},
        "best_uniform": entry,
        "best": {**entry, "width": {"stem": 0.75}, "test_metrics": {"top1": 0.87}},
        "candidates": 40,
        "seconds": 12.3,
        "step": 0.05,
        "validation": {"split": "validation", "samples": 2000},
        "trace": ["a", "b"],
    }
    (ckpt / "search_greedy_25.json").write_text(json.dumps(doc))
    took = {"wall_seconds": 20.5, "cpu_seconds": 15.0, "load_average": [1.0, 2.0]}
    (ckpt / "time_greedy_25.json").write_text(json.dumps(took))
    out = tmp_path / "search.csv"
    assert evidence.main(["gather", "--runs", str(runs), "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["training"] == "nonuniform" and row["seed"] == "2" and row["budget"] == "0.25"
    assert float(row["test_gain_points"]) == pytest.approx(0.5) and row["val_gain_points"] == "0.0"
    assert float(row["best_test_gain_points"]) == pytest.approx(-1.0)
    assert row["command_wall_seconds"] == "20.5" and row["val_samples"] == "2000"
    copied = json.loads(
        (tmp_path / "search" / "nonuniform-e4-s2" / "search_greedy_25.json").read_text()
    )
    assert "trace" not in copied and copied["command_time"] == took and copied["seconds"] == 12.3


def test_the_summary_tables_come_from_the_csvs(evidence, tmp_path, capsys):
    training = tmp_path / "search_v1_mobilenet.csv"
    lines = ["method,seed,width,top1,source"]
    for seed, (u, n) in enumerate([(0.90, 0.91), (0.92, 0.92)]):
        lines += [f"uniform,{seed},1.0,{u},train", f"nonuniform,{seed},1.0,{n},train"]
    lines.append("uniform,0,0.3,0.5,spectrum")  # not one of the trained evaluation widths
    training.write_text("\n".join(lines) + "\n")
    search = tmp_path / "search_v1.csv"
    with search.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=evidence.FIELDS)
        writer.writeheader()
        for seed, gain in enumerate([0.5, -0.5]):
            writer.writerow({
                "training": "nonuniform", "method": "greedy", "budget": 0.5, "seed": seed,
                "uniform_width": "0.5", "uniform_test_top1": 90.0, "test_gain_points": gain,
                "best_val_gain_points": 1.0, "best_test_gain_points": "",
            })  # fmt: skip
    assert evidence.main(["summary", "--out", str(search)]) == 0
    out = capsys.readouterr().out
    assert "| 1 | s0: 90.00, s1: 92.00 | s0: 91.00, s1: 92.00 | +0.50 ± 0.71 (2) |" in out
    assert "| 0.3 |" not in out
    assert (
        "| nonuniform | greedy | 50% | 0, 1 | s0: 0.5 90.00, s1: 0.5 90.00 | +0.00 ± 0.71 (2) |"
        in out
    )
    assert "| +1.00 ± 0.00 (2) | - |\n" in out


def test_record_names_keep_runs_of_different_plans_apart(evidence):
    names = {
        evidence.record_name(plan, "nonuniform-e4-s0") for plan in evidence.PLANS
    }
    assert len(names) == len(evidence.PLANS)  # the same run name, a folder per plan
    assert evidence.record_name("search_v1_mobilenet", "uniform-e4-s1") == "uniform-e4-s1"
    report = sys.modules["search_evidence_report"]
    for plan in evidence.PLANS:
        name = evidence.record_name(plan, "uniform-e4-s1")
        assert report.plan_of(name) == (plan, "uniform-e4-s1")
