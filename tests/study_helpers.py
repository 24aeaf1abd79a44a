"""Shared by the study tests (fixtures in conftest.py): the fake ``usnet``, a
plan writer and the runner's command line. ``benchmarks/`` is not installed: its parent goes on
sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package

from benchmarks.study import cli  # noqa: E402

FAKE = Path(__file__).with_name("fake_usnet.py")
CONFIG = str(ROOT / "configs" / "fashion_mnist.yaml")
TINY = {"input_size": 28, "blocks": [[1, 8, 1, 1], [6, 16, 1, 2]], "last_channels": 32}
METHODS = {
    "us": {"set": ["train.sampling=sandwich"]},
    "ind-1.0": {"set": ["train.sampling=fixed", "train.widths=[1.0]"], "family": "individual"},
    "ind-0.35": {"set": ["train.sampling=fixed", "train.widths=[0.35]"], "family": "individual"},
}


def plan_file(tmp_path: Path, name: str = "p", **fields) -> Path:
    doc = {"config": CONFIG, "methods": METHODS, **fields}
    path = tmp_path / "plans" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def study(tmp_path: Path, command: str, plan: Path, *extra: str) -> int:
    return cli.main([command, str(plan), "--runs-dir", str(tmp_path / "runs"),
                     "--results-dir", str(tmp_path / "results"),
                     "--usnet", f"{sys.executable} {FAKE}", *extra])  # fmt: skip


def fake_calls(log: Path, ends: bool = False) -> list[list[str]]:
    lines = [ln.split() for ln in log.read_text().splitlines()]
    return [c for c in lines if ends or c[0] != "end"]
