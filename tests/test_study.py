"""The reproduction study's runner (benchmarks/study): plans, skip, resume, kill and restart,
gather. A fake ``usnet`` (tests/fake_usnet.py) stands in for training, except in the one
end-to-end test, which trains for real on the generated Fashion-MNIST fixture."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from fixtures import write_fashion_mnist

import usnet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package

from benchmarks.study import cli, results  # noqa: E402
from benchmarks.study.plan import PlanError, load_plan  # noqa: E402
from benchmarks.study.runner import Runner  # noqa: E402

FAKE = Path(__file__).with_name("fake_usnet.py")
CONFIG = str(ROOT / "configs" / "fashion_mnist.yaml")
TINY = {"input_size": 28, "blocks": [[1, 8, 1, 1], [6, 16, 1, 2]], "last_channels": 32}
METHODS = {
    "us": {"set": ["train.sampling=sandwich"]},
    "ind-1.0": {"set": ["train.sampling=fixed", "train.widths=[1.0]"], "family": "individual"},
    "ind-0.35": {"set": ["train.sampling=fixed", "train.widths=[0.35]"], "family": "individual"},
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    model = usnet.create_model("us_mobilenet_v2_small", in_chans=1, num_classes=10, **TINY)
    return usnet.save(model, tmp_path_factory.mktemp("template") / "ckpt")


@pytest.fixture
def fake(tmp_path, template, monkeypatch) -> Path:
    """The fake usnet's environment; returns its call log."""
    calls = tmp_path / "calls.log"
    calls.touch()
    monkeypatch.setenv("FAKE_TEMPLATE", str(template))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_REJECT", raising=False)
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0")
    return calls


def _plan(tmp_path: Path, name: str = "p", **fields) -> Path:
    doc = {"config": CONFIG, "methods": METHODS, **fields}
    path = tmp_path / "plans" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _study(tmp_path: Path, command: str, plan: Path, *extra: str) -> int:
    return cli.main([command, str(plan), "--runs-dir", str(tmp_path / "runs"),
                     "--results-dir", str(tmp_path / "results"),
                     "--usnet", f"{sys.executable} {FAKE}", *extra])  # fmt: skip


def _calls(log: Path, ends: bool = False) -> list[list[str]]:
    lines = [ln.split() for ln in log.read_text().splitlines()]
    return [c for c in lines if ends or c[0] != "end"]


def test_plan_expands_grids_into_named_runs_with_overrides_in_order(tmp_path):
    path = _plan(
        tmp_path,
        set=["calibrate.num_samples=64"],
        grids=[{"method": ["us", "ind-1.0"], "epochs": [4, 8], "seed": [0, 1]}],
        runs=[{"method": "us", "epochs": 4, "lr": 0.4}, {"method": "us", "epochs": 4, "seed": 1}],
    )
    plan = load_plan(path)
    names = [r.name for r in plan.runs]
    assert names[:3] == ["us-e4-s0", "us-e4-s1", "us-e8-s0"] and len(names) == 9  # dup collapsed
    assert "us-e4-lr0.4-s0" in names
    run = next(r for r in plan.runs if r.name == "us-e4-lr0.4-s0")
    assert run.overrides == ("calibrate.num_samples=64", "train.sampling=sandwich",
                             "train.epochs=4", "train.seed=0", "optim.lr=0.4")  # fmt: skip
    ind = next(r for r in plan.runs if r.method == "ind-1.0")
    assert ind.family == "individual"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"runs": [{"method": "snet", "epochs": 4}]}, "method 'snet' is not among methods"),
        (
            {
                "runs": [
                    {"method": "us", "epochs": 4, "name": "a"},
                    {"method": "us", "epochs": 8, "name": "a"},
                ]
            },
            "run name 'a' is used twice",
        ),  # fmt: skip
        ({"runs": [{"method": "us", "epochs": 0}]}, "runs.0.epochs"),
        ({"runs": [{"method": "us", "epochs": 4, "set": ["output.dir=x"]}]}, "not output.dir"),
        (
            {"methods": {"us": {"set": ["train.epochs"]}}, "runs": [{"method": "us", "epochs": 4}]},
            "methods.us.set.0: .*must be KEY=VALUE",
        ),  # fmt: skip
        ({"grids": [{"method": ["us"], "epochs": [4], "seeds": [1]}]}, "grids.0.seeds"),
        ({}, "the plan has no runs"),
    ],
)
def test_bad_plans_get_one_clear_error(tmp_path, fields, message):
    with pytest.raises(PlanError, match=message):
        load_plan(_plan(tmp_path, **fields))


def test_dry_run_lists_runs_and_adds_up_the_timing_table(tmp_path, fake, capsys):
    plan = _plan(
        tmp_path,
        grids=[{"method": ["us", "ind-1.0"], "epochs": [4, 8]}],
        timing={"seconds_per_epoch": {"us": 300}, "seconds_per_run": {"us": 60}},
    )
    assert _study(tmp_path, "run", plan, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "us-e4-s0" in out and "ind-1.0-e8-s0" in out
    assert "1.0 CPU hours in all" in out  # (4 + 8) * 300 + 2 * 60 s; ind-1.0 has no time
    assert "no timing for methods: ind-1.0" in out
    assert _calls(fake) == []  # nothing ran


def test_runs_are_recorded_gathered_and_skipped_when_finished(tmp_path, fake, capsys):
    plan = _plan(tmp_path, grids=[{"method": ["us", "ind-0.35"], "epochs": [2, 3]}])
    assert _study(tmp_path, "run", plan) == 0
    assert len(_calls(fake)) == 4
    rec = json.loads((tmp_path / "runs/p/us-e2-s0/study.json").read_text())
    assert rec["status"] == "finished" and rec["spec"]["config"] == CONFIG
    (attempt,) = rec["attempts"]
    assert attempt["exit_code"] == 0 and attempt["mode"] == "fresh" and attempt["threads"] == 1
    assert "--set train.epochs=2" in attempt["command"] and "--no-progress" in attempt["command"]
    assert f"output.dir={tmp_path / 'runs/p/us-e2-s0'}" in attempt["command"]
    assert len(attempt["git"]["commit"]) == 40 and isinstance(attempt["git"]["dirty"], bool)
    assert attempt["machine"]["cores"] >= 1 and attempt["torch"] == torch.__version__
    assert attempt["wall_seconds"] > 0 and attempt["cpu_seconds"] >= 0 and attempt["start"]
    committed = json.loads((tmp_path / "results/p/us-e2-s0.json").read_text())
    assert committed["widths"] == rec["widths"] and "model.safetensors" not in str(committed)
    with open(tmp_path / "results/p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * 2 + 2 * 1  # US runs: 2 widths each; individual: 1
    row = next(r for r in table if r["run"] == "us-e3-s0" and r["width"] == "1.0")
    assert float(row["top1"]) == pytest.approx(0.5 + 0.03 + 0.2)
    assert row["kind"] == "us" and row["family"] == "us" and int(row["epochs"]) == 3
    assert float(row["images_per_s"]) == pytest.approx(1000) and row["cpu"]
    ind = next(r for r in table if r["run"] == "ind-0.35-e2-s0")
    assert ind["kind"] == "individual" and ind["series"] == "individual"
    for name in ("width", "epochs", "compute"):
        assert (tmp_path / f"results/p/{name}.png").stat().st_size > 1000
    capsys.readouterr()
    assert _study(tmp_path, "run", plan) == 0  # a finished plan: no work
    assert len(_calls(fake)) == 4 and "4 finished, 0 to run" in capsys.readouterr().out
    # the committed results alone (a fresh checkout without runs/) also count as finished
    import shutil

    shutil.rmtree(tmp_path / "runs")
    assert _study(tmp_path, "run", plan) == 0 and len(_calls(fake)) == 4


def test_spectrum_adds_widths_to_us_nets_only(tmp_path, fake):
    plan = _plan(tmp_path, spectrum_widths="0.35:1.0:0.325",
                 grids=[{"method": ["us", "ind-1.0"], "epochs": [2]}])  # fmt: skip
    assert _study(tmp_path, "run", plan) == 0
    assert [c[0] for c in _calls(fake)] == ["train", "spectrum", "train"]
    doc = json.loads((tmp_path / "results/p/us-e2-s0.json").read_text())
    assert [(w["width"], w["source"]) for w in doc["widths"]] == [
        (0.35, "train"), (0.675, "spectrum"), (1.0, "train")]  # fmt: skip
    spec = next(a for a in doc["attempts"] if a["phase"] == "spectrum")
    assert "--no-latency" in spec["command"] and spec["exit_code"] == 0


def test_a_failed_spectrum_is_redone_without_training_again(tmp_path, fake, monkeypatch):
    plan = _plan(tmp_path, spectrum_widths="0.35,1.0", runs=[{"method": "us", "epochs": 2}])
    monkeypatch.setenv("FAKE_FAIL", "spectrum us-e2-s0")
    assert _study(tmp_path, "run", plan) == 1
    assert not (tmp_path / "results/p/us-e2-s0.json").exists()
    monkeypatch.delenv("FAKE_FAIL")
    assert _study(tmp_path, "run", plan) == 0
    assert [c[0] for c in _calls(fake)] == ["train", "spectrum", "spectrum"]
    doc = json.loads((tmp_path / "results/p/us-e2-s0.json").read_text())
    assert [(a["phase"], a["exit_code"]) for a in doc["attempts"]] == [
        ("train", 0), ("spectrum", 1), ("spectrum", 0)]  # fmt: skip


def test_runner_killed_mid_run_resumes_it_and_skips_finished_runs(tmp_path, fake):
    plan = _plan(tmp_path, grids=[{"method": ["us"], "epochs": [3], "seed": [0, 1, 2]}])
    command = [sys.executable, "-m", "benchmarks.study", "run", str(plan),
               "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
               "--usnet", f"{sys.executable} {FAKE}"]  # fmt: skip
    env = {**os.environ, "FAKE_EPOCH_SECONDS": "0.4", "PYTHONPATH": os.pathsep.join(sys.path)}
    runner = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    second = tmp_path / "runs/p/us-e3-s1/checkpoint/usnet.json"
    deadline = time.monotonic() + 60
    while not (second.is_file() and json.loads(second.read_text())["meta"]["epoch"] >= 1):
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.05)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    child = int(_calls(fake)[-1][4])
    deadline = time.monotonic() + 10
    while _alive(child):  # the train process dies with its runner
        assert time.monotonic() < deadline, "usnet train outlived its killed runner"
        time.sleep(0.05)
    assert subprocess.run(command, cwd=ROOT, env=env, capture_output=True).returncode == 0
    calls = [c[:4] for c in _calls(fake)]
    assert calls[0] == ["train", "us-e3-s0", "fresh", "0"]
    assert calls[1] == ["train", "us-e3-s1", "fresh", "0"]
    assert calls[2][:3] == ["train", "us-e3-s1", "resume"] and int(calls[2][3]) >= 1
    assert calls[3] == ["train", "us-e3-s2", "fresh", "0"] and len(calls) == 4
    rec = json.loads((tmp_path / "runs/p/us-e3-s1/study.json").read_text())
    assert [a["mode"] for a in rec["attempts"]] == ["fresh", "resume"]
    assert rec["attempts"][0]["interrupted"] and rec["attempts"][0]["exit_code"] is None
    assert len(rec["training"]["history"]) == 3


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_state_restarts_a_run_whose_epochs_are_all_done_or_whose_resume_failed(tmp_path, fake):
    plan = load_plan(_plan(tmp_path, runs=[{"method": "us", "epochs": 2}]))
    runner = Runner(
        plan, tmp_path / "runs", tmp_path / "results", [sys.executable, str(FAKE)], ROOT
    )
    (run,) = plan.runs
    assert runner.state(run) == "fresh"
    folder = runner.folder(run)
    ckpt = folder / "checkpoint"
    ckpt.mkdir(parents=True)
    (folder / "resume.pt").write_text("{}")

    def at(epoch: int, attempts: list) -> None:
        (ckpt / "usnet.json").write_text(json.dumps({"meta": {"epoch": epoch}}))
        rec = {"spec": runner.spec(run), "status": "failed", "attempts": attempts}
        (folder / "study.json").write_text(json.dumps(rec))

    at(1, [{"mode": "fresh", "exit_code": None, "epoch_at_start": 0}])
    assert runner.state(run) == "resume"
    at(2, [{"mode": "fresh", "exit_code": None}])  # killed during the final evaluation
    assert runner.state(run) == "fresh"
    at(1, [{"mode": "resume", "exit_code": 1, "epoch_at_start": 1}])  # resume failed, no progress
    assert runner.state(run) == "fresh"
    (folder / "study.json").write_text(json.dumps({"spec": {"other": 1}, "status": "running"}))
    assert runner.state(run) == "fresh"  # settings changed: start over


def test_a_finished_run_whose_settings_changed_is_refused_not_overwritten(tmp_path, fake, capsys):
    assert _study(tmp_path, "run", _plan(tmp_path, runs=[{"method": "us", "epochs": 2}])) == 0
    before = (tmp_path / "runs/p/us-e2-s0/checkpoint/usnet.json").read_text()
    changed = _plan(tmp_path, set=["optim.lr=0.1"], runs=[{"method": "us", "epochs": 2}])
    assert _study(tmp_path, "run", changed) == 2
    err = capsys.readouterr().err
    assert err.startswith("study run: error: runs us-e2-s0 finished with other settings")
    assert (tmp_path / "runs/p/us-e2-s0/checkpoint/usnet.json").read_text() == before
    assert len(_calls(fake)) == 1


def test_a_failed_run_is_reported_the_others_go_on_and_it_is_retried(tmp_path, fake, monkeypatch,
                                                                     capsys):  # fmt: skip
    plan = _plan(tmp_path, grids=[{"method": ["us"], "epochs": [2], "seed": [0, 1]}])
    monkeypatch.setenv("FAKE_FAIL", "us-e2-s0")
    assert _study(tmp_path, "run", plan) == 1
    out = capsys.readouterr().out
    assert "FAILED us-e2-s0: train exit 1: " in out and "failed as asked" in out
    assert "finished us-e2-s1" in out
    rec = json.loads((tmp_path / "runs/p/us-e2-s0/study.json").read_text())
    assert rec["status"] == "failed" and "failed as asked" in rec["error"]
    monkeypatch.delenv("FAKE_FAIL")
    assert _study(tmp_path, "run", plan) == 0
    assert [c[1] for c in _calls(fake)] == ["us-e2-s0", "us-e2-s1", "us-e2-s0"]


def test_a_flag_usnet_train_does_not_know_stops_the_plan(tmp_path, fake, monkeypatch, capsys):
    plan = _plan(tmp_path, grids=[{"method": ["us"], "epochs": [2], "seed": [0, 1, 2]}])
    monkeypatch.setenv("FAKE_REJECT", "--no-progress")
    assert _study(tmp_path, "run", plan) == 1
    out = capsys.readouterr().out
    assert "unrecognized arguments: --no-progress" in out and "no further runs start" in out
    assert len(_calls(fake)) == 0  # rejected before the fake logs a call
    assert not (tmp_path / "runs/p/us-e2-s1").exists()


def test_a_second_runner_on_the_same_plan_is_refused(tmp_path, fake, capsys):
    plan = _plan(tmp_path, runs=[{"method": "us", "epochs": 2}])
    lock = tmp_path / "runs/p/.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as f:
        f.write("4242")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        assert _study(tmp_path, "run", plan) == 1
    assert "plan p is being run by another runner (pid 4242" in capsys.readouterr().err
    assert _calls(fake) == []


def test_training_compute_follows_the_sampling_rule(template):
    model = usnet.load(template)
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
    plan = _plan(
        tmp_path,
        set=[
            f"data.root={data}",
            "train.max_steps_per_epoch=2",
            "data.batch_size=32",
            "data.val_batch_size=64",
            "calibrate.num_samples=64",
            "calibrate.widths=0.25,1.0",
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
    tmp_path, template, capsys
):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=128, n_test=64)
    model = usnet.load(template)
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


def test_baselines_from_another_plan_are_gathered_not_run(tmp_path, fake, capsys):
    assert _study(tmp_path, "run", _plan(tmp_path, runs=[{"method": "us", "epochs": 2}])) == 0
    other = _plan(
        tmp_path,
        name="q",
        runs=[{"method": "ind-1.0", "epochs": 2}],
        baselines=[{"plan": "p", "runs": ["us-e2-s0", "us-e9-s0"]}],
    )
    assert _study(tmp_path, "run", other) == 0
    assert [c[1] for c in _calls(fake)] == ["us-e2-s0", "ind-1.0-e2-s0"]
    with open(tmp_path / "results/q.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {(r["plan"], r["run"]) for r in table} == {("p", "us-e2-s0"), ("q", "ind-1.0-e2-s0")}
    assert "not finished (1): p/us-e9-s0" in capsys.readouterr().out


def test_timing_measures_two_short_epochs_per_method_and_prints_the_plan_block(
    tmp_path, fake, capsys
):
    plan = _plan(tmp_path, grids=[{"method": ["us", "ind-1.0"], "epochs": [32], "seed": [3]}])
    out = tmp_path / "timing.json"
    args = ["--methods", "us", "--steps", "10", "--steps-per-epoch", "100", "--out", str(out)]
    assert _study(tmp_path, "time", plan, *args) == 0
    (call,) = _calls(fake)
    assert call[0] == "train" and call[2] == "fresh"
    printed = capsys.readouterr().out
    assert "timing:\n  measured: " in printed and "  seconds_per_epoch:\n    us: " in printed
    (m,) = json.loads(out.read_text())["methods"]
    assert m["step_seconds"] == pytest.approx(0.128)  # the fake's 1.28 s per 10-step epoch
    assert m["epoch_seconds"] == pytest.approx(100 * 0.128 + m["validation_seconds"], abs=0.1)
    assert 0 < m["cpu_per_wall"] <= 1.5 and m["epoch_cpu_seconds"] > 0


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_bounds_how_many_runs_train_at_once(tmp_path, fake, monkeypatch, jobs):
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.3")
    plan = _plan(tmp_path, grids=[{"method": ["us"], "epochs": [2], "seed": [0, 1]}])
    assert _study(tmp_path, "run", plan, "--jobs", str(jobs)) == 0
    order = [c[0] for c in _calls(fake, ends=True)]
    assert order == (["train", "end"] * 2 if jobs == 1 else ["train", "train", "end", "end"])
