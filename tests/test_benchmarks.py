"""benchmarks/run.py: the smoke run on a tiny model prints every ratio and writes the doc block."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "usnet_benchmarks_run", ROOT / "benchmarks/run.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_quick_run_prints_every_ratio_and_keeps_the_analysis(bench, tmp_path, capsys) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(
        f"# Benchmarks\n\nintro\n\n{bench.START}\nold\n{bench.END}\n\n## Analysis\nkept\n"
    )
    assert bench.main(["--model", "tiny", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("inference", "switch", "training", "calibration", "memory"):
        lines = [ln for ln in printed.splitlines() if ln.startswith(name)]
        assert lines, name
        assert all(
            re.search(r"ratio +\d+\.\d{3} \(target [<>]= [\d.]+: (met|MISSED)\)", ln)
            for ln in lines
        ), lines
    assert re.search(r"\d+ of 16 measurements meet their target", printed)
    text = out.read_text()
    assert "old" not in text and "intro" in text and "## Analysis\nkept" in text
    assert text.count("| inference |") == 8 and "| inference | w=0.35 batch=1 frozen |" in text
    assert "| calibration | w=0.5 single_pass |" in text
    assert "| calibration | w=0.5 exact channels-last |" in text
    assert "torch threads 1" in text and "python benchmarks/run.py --model tiny" in text


def test_result_targets(bench) -> None:
    r = bench.Result("x", "c", "us", 1.04, "dense", 1.0, "ms", "<= 1.05")
    assert r.met and abs(r.ratio - 1.04) < 1e-12
    assert not bench.Result("x", "c", "a", 0.8, "b", 1.0, "img/s", ">= 0.9").met


def test_paired_results_give_the_median_pair_and_its_quartiles(bench) -> None:
    pairs = [1.10, 0.90, 1.00, 1.30, 1.02]  # a/b per pair; a and b are the sides' medians
    r = bench.Result("x", "c", "us", 2.0, "dense", 1.0, "ms", "<= 1.05", pairs=pairs)
    assert r.ratio == 1.02 and r.met  # not a / b = 2.0
    assert r.spread == "0.950-1.200"  # statistics.quantiles, exclusive method
    assert "pairs 0.950-1.200" in r.line()
    assert bench.Result("x", "c", "a", 1.0, "b", 1.0, "ms", "<= 1.05", pairs=pairs[:3]).spread == ""


def test_no_monkeypatch_copy_of_library_code(bench) -> None:
    """The proposed fixes are in the library now: no ``--with-patches``, no ``patches.py``."""
    assert not (ROOT / "benchmarks/patches.py").exists()
    with pytest.raises(SystemExit):
        bench.main(["--model", "tiny", "--quick", "--no-write", "--with-patches"])
