"""The reproduction study's runner (benchmarks/study): plans, skip, resume, kill and restart,
lock, gather. A fake ``usnet`` (tests/fake_usnet.py) stands in for training."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from study_helpers import (
    CONFIG,
    FAKE,
    ROOT,
    fake_calls,
    plan_file,
    study,
)

from benchmarks.study.plan import PlanError, load_plan
from benchmarks.study.process import spawn, terminate
from benchmarks.study.runner import Runner


def test_plan_expands_grids_into_named_runs_with_overrides_in_order(tmp_path):
    path = plan_file(
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
        load_plan(plan_file(tmp_path, **fields))


def test_dry_run_lists_runs_and_adds_up_the_timing_table(tmp_path, fake_usnet, capsys):
    plan = plan_file(
        tmp_path,
        grids=[{"method": ["us", "ind-1.0"], "epochs": [4, 8]}],
        timing={"seconds_per_epoch": {"us": 300}, "seconds_per_run": {"us": 60}},
    )
    assert study(tmp_path, "run", plan, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "us-e4-s0" in out and "ind-1.0-e8-s0" in out
    assert "1.0 CPU hours in all" in out  # (4 + 8) * 300 + 2 * 60 s; ind-1.0 has no time
    assert "no timing for methods: ind-1.0" in out
    assert fake_calls(fake_usnet) == []  # nothing ran


def test_runs_are_recorded_gathered_and_skipped_when_finished(tmp_path, fake_usnet, capsys):
    plan = plan_file(tmp_path, grids=[{"method": ["us", "ind-0.35"], "epochs": [2, 3]}])
    assert study(tmp_path, "run", plan) == 0
    assert len(fake_calls(fake_usnet)) == 4
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
    assert study(tmp_path, "run", plan) == 0  # a finished plan: no work
    assert len(fake_calls(fake_usnet)) == 4 and "4 finished, 0 to run" in capsys.readouterr().out
    # the committed results alone (a fresh checkout without runs/) also count as finished
    import shutil

    shutil.rmtree(tmp_path / "runs")
    assert study(tmp_path, "run", plan) == 0 and len(fake_calls(fake_usnet)) == 4


def test_spectrum_adds_widths_to_us_nets_only(tmp_path, fake_usnet):
    plan = plan_file(tmp_path, spectrum_widths="0.35:1.0:0.325",
                 grids=[{"method": ["us", "ind-1.0"], "epochs": [2]}])  # fmt: skip
    assert study(tmp_path, "run", plan) == 0
    assert [c[0] for c in fake_calls(fake_usnet)] == ["train", "spectrum", "train"]
    doc = json.loads((tmp_path / "results/p/us-e2-s0.json").read_text())
    assert [(w["width"], w["source"]) for w in doc["widths"]] == [
        (0.35, "train"), (0.675, "spectrum"), (1.0, "train")]  # fmt: skip
    spec = next(a for a in doc["attempts"] if a["phase"] == "spectrum")
    assert "--no-latency" in spec["command"] and spec["exit_code"] == 0


def test_a_failed_spectrum_is_redone_without_training_again(tmp_path, fake_usnet, monkeypatch):
    plan = plan_file(tmp_path, spectrum_widths="0.35,1.0", runs=[{"method": "us", "epochs": 2}])
    monkeypatch.setenv("FAKE_FAIL", "spectrum us-e2-s0")
    assert study(tmp_path, "run", plan) == 1
    assert not (tmp_path / "results/p/us-e2-s0.json").exists()
    monkeypatch.delenv("FAKE_FAIL")
    assert study(tmp_path, "run", plan) == 0
    assert [c[0] for c in fake_calls(fake_usnet)] == ["train", "spectrum", "spectrum"]
    doc = json.loads((tmp_path / "results/p/us-e2-s0.json").read_text())
    assert [(a["phase"], a["exit_code"]) for a in doc["attempts"]] == [
        ("train", 0), ("spectrum", 1), ("spectrum", 0)]  # fmt: skip


def test_runner_killed_mid_run_resumes_it_and_skips_finished_runs(tmp_path, fake_usnet):
    plan = plan_file(tmp_path, grids=[{"method": ["us"], "epochs": [3], "seed": [0, 1, 2]}])
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
    child = int(fake_calls(fake_usnet)[-1][4])
    deadline = time.monotonic() + 10
    while _alive(child):  # the train process dies with its runner
        assert time.monotonic() < deadline, "usnet train outlived its killed runner"
        time.sleep(0.05)
    assert subprocess.run(command, cwd=ROOT, env=env, capture_output=True).returncode == 0
    calls = [c[:4] for c in fake_calls(fake_usnet)]
    assert calls[0] == ["train", "us-e3-s0", "fresh", "0"]
    assert calls[1] == ["train", "us-e3-s1", "fresh", "0"]
    assert calls[2][:3] == ["train", "us-e3-s1", "resume"] and int(calls[2][3]) >= 1
    assert calls[3] == ["train", "us-e3-s2", "fresh", "0"] and len(calls) == 4
    rec = json.loads((tmp_path / "runs/p/us-e3-s1/study.json").read_text())
    assert [a["mode"] for a in rec["attempts"]] == ["fresh", "resume"]
    assert rec["attempts"][0]["interrupted"] and rec["attempts"][0]["exit_code"] is None
    assert len(rec["training"]["history"]) == 3


def test_runner_stopped_by_sigterm_says_so_in_one_line_and_records_the_run(
    tmp_path, fake_usnet
):
    plan = plan_file(tmp_path, grids=[{"method": ["us"], "epochs": [3], "seed": [0]}])
    command = [sys.executable, "-m", "benchmarks.study", "run", str(plan),
               "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
               "--usnet", f"{sys.executable} {FAKE}"]  # fmt: skip
    env = {**os.environ, "FAKE_EPOCH_SECONDS": "0.4", "PYTHONPATH": os.pathsep.join(sys.path)}
    runner = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    started = tmp_path / "runs/p/us-e3-s0/study.json"
    deadline = time.monotonic() + 60
    while not started.is_file():
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.05)
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 130, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "stopped (SIGTERM)" in err and "resumes" in err
    assert json.loads(started.read_text())["status"] == "interrupted"


def test_a_stopped_child_that_ignores_sigterm_is_killed_after_one_shared_grace_period():
    """The runner waited forever on a child that ignored SIGTERM, holding the plan's lock; then
    it waited a grace period per child, one after another."""

    def child(handler: str) -> subprocess.Popen:
        code = f"import signal, time; signal.signal(signal.SIGTERM, {handler}); print(1, flush=True)"
        proc = spawn([sys.executable, "-c", code + "; time.sleep(60)"], {}, subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == "1\n"  # its handler is set
        return proc

    procs = [child("signal.SIG_IGN"), child("signal.SIG_DFL"), child("signal.SIG_IGN")]
    start = time.monotonic()
    ends = terminate(procs, grace=2.0)
    assert [e.code for e in ends] == [-signal.SIGKILL, -signal.SIGTERM, -signal.SIGKILL]
    assert time.monotonic() - start < 2.0 * 1.9  # one grace period, not one per stubborn child
    for proc in procs:
        assert proc.stdout is not None
        proc.stdout.close()


def test_ctrl_c_that_reached_the_children_too_records_every_run_as_interrupted(
    tmp_path, fake_usnet, monkeypatch, capsys
):
    """Ctrl-C goes to the whole process group: a child may exit before the runner acts on the
    flag. It was reaped twice ("No child processes", runs left "running") or marked failed."""
    plan = plan_file(tmp_path, grids=[{"method": ["us"], "epochs": [2], "seed": [0, 1]}])
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "5")  # us-e2-s0 still trains when s1 is stopped
    monkeypatch.setenv("FAKE_CTRL_C", "us-e2-s1 0")
    assert study(tmp_path, "run", plan, "--jobs", "2") == 130
    err = capsys.readouterr().err
    assert err.startswith("study run: stopped (SIGINT)") and err.count("\n") == 1, err
    for run in ("us-e2-s0", "us-e2-s1"):
        rec = json.loads((tmp_path / f"runs/p/{run}/study.json").read_text())
        assert rec["status"] == "interrupted" and rec["attempts"][-1]["interrupted"], rec
    assert [c[1] for c in fake_calls(fake_usnet)] == ["us-e2-s0", "us-e2-s1"]


def test_a_resume_stopped_before_its_first_epoch_resumes_again_not_afresh(
    tmp_path, fake_usnet, monkeypatch
):
    """Stopping twice within an epoch counted the second stop as a failed resume without
    progress, and the third start wiped the run's trained epochs."""
    plan = plan_file(tmp_path, grids=[{"method": ["us"], "epochs": [3], "seed": [0]}])
    monkeypatch.setenv("FAKE_CTRL_C", "us-e3-s0 1")
    assert study(tmp_path, "run", plan) == 130  # after epoch 1
    assert study(tmp_path, "run", plan) == 130  # its resume, before epoch 2
    monkeypatch.delenv("FAKE_CTRL_C")
    assert study(tmp_path, "run", plan) == 0
    calls = [c[:4] for c in fake_calls(fake_usnet)]
    assert [c[2:] for c in calls] == [["fresh", "0"], ["resume", "1"], ["resume", "1"]]
    rec = json.loads((tmp_path / "runs/p/us-e3-s0/study.json").read_text())
    assert [a.get("interrupted", False) for a in rec["attempts"]] == [True, True, False]
    assert len(rec["training"]["history"]) == 3


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_state_resumes_a_cut_off_run_and_restarts_one_whose_resume_failed(
    tmp_path, fake_usnet
):
    plan = load_plan(plan_file(tmp_path, runs=[{"method": "us", "epochs": 2}]))
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
    assert runner.state(run) == "resume"  # usnet train --resume evaluates only
    at(1, [{"mode": "resume", "exit_code": 1, "epoch_at_start": 1}])  # resume failed, no progress
    assert runner.state(run) == "fresh"
    # killed after its final save (results written, exit code never seen): trained, not wiped
    at(2, [{"mode": "fresh", "exit_code": None, "epoch_at_start": 0}])
    (ckpt / "usnet.json").write_text(json.dumps({"meta": {"epoch": 2, "results": [{}]}}))
    assert runner.state(run) == "trained"
    (folder / "study.json").write_text(json.dumps({"spec": {"other": 1}, "status": "running"}))
    assert runner.state(run) == "changed"  # trained with other settings: refused, not wiped
    (ckpt / "usnet.json").write_text(json.dumps({"meta": {"epoch": 1}}))
    assert runner.state(run) == "fresh"  # other settings, not trained: start over
    (ckpt / "usnet.json").write_text(json.dumps({"meta": {"epoch": 2, "results": [{}]}}))
    (folder / "study.json").unlink()
    assert runner.state(run) == "orphan"  # trained, nothing says what it is: never wiped


def test_a_finished_run_whose_settings_changed_is_refused_not_overwritten(
    tmp_path, fake_usnet, capsys
):
    assert study(tmp_path, "run", plan_file(tmp_path, runs=[{"method": "us", "epochs": 2}])) == 0
    before = (tmp_path / "runs/p/us-e2-s0/checkpoint/usnet.json").read_text()
    changed = plan_file(tmp_path, set=["optim.lr=0.1"], runs=[{"method": "us", "epochs": 2}])
    assert study(tmp_path, "run", changed) == 2
    err = capsys.readouterr().err
    assert err.startswith("study run: error: runs us-e2-s0 finished with other settings")
    assert (tmp_path / "runs/p/us-e2-s0/checkpoint/usnet.json").read_text() == before
    assert len(fake_calls(fake_usnet)) == 1


def test_a_failed_run_is_reported_the_others_go_on_and_it_is_retried(tmp_path, fake_usnet, monkeypatch,
                                                                     capsys):  # fmt: skip
    plan = plan_file(tmp_path, grids=[{"method": ["us"], "epochs": [2], "seed": [0, 1]}])
    monkeypatch.setenv("FAKE_FAIL", "us-e2-s0")
    assert study(tmp_path, "run", plan) == 1
    out = capsys.readouterr().out
    assert "FAILED us-e2-s0: train exit 1: " in out and "failed as asked" in out
    assert "finished us-e2-s1" in out
    rec = json.loads((tmp_path / "runs/p/us-e2-s0/study.json").read_text())
    assert rec["status"] == "failed" and "failed as asked" in rec["error"]
    monkeypatch.delenv("FAKE_FAIL")
    assert study(tmp_path, "run", plan) == 0
    assert [c[1] for c in fake_calls(fake_usnet)] == ["us-e2-s0", "us-e2-s1", "us-e2-s0"]


def test_a_flag_usnet_train_does_not_know_stops_the_plan(tmp_path, fake_usnet, monkeypatch, capsys):
    plan = plan_file(tmp_path, grids=[{"method": ["us"], "epochs": [2], "seed": [0, 1, 2]}])
    monkeypatch.setenv("FAKE_REJECT", "--no-progress")
    assert study(tmp_path, "run", plan) == 1
    out = capsys.readouterr().out
    assert "unrecognized arguments: --no-progress" in out and "no further runs start" in out
    assert len(fake_calls(fake_usnet)) == 0  # rejected before the fake_usnet logs a call
    assert not (tmp_path / "runs/p/us-e2-s1").exists()


def test_a_second_runner_on_the_same_plan_is_refused(tmp_path, fake_usnet, capsys):
    plan = plan_file(tmp_path, runs=[{"method": "us", "epochs": 2}])
    lock = tmp_path / "runs/p/.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as f:
        f.write("4242")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        assert study(tmp_path, "run", plan) == 1
    assert "plan p is being run by another runner (pid 4242" in capsys.readouterr().err
    assert fake_calls(fake_usnet) == []


def test_baselines_from_another_plan_are_gathered_not_run(tmp_path, fake_usnet, capsys):
    assert study(tmp_path, "run", plan_file(tmp_path, runs=[{"method": "us", "epochs": 2}])) == 0
    other = plan_file(
        tmp_path,
        name="q",
        runs=[{"method": "ind-1.0", "epochs": 2}],
        baselines=[{"plan": "p", "runs": ["us-e2-s0", "us-e9-s0"]}],
    )
    assert study(tmp_path, "run", other) == 0
    assert [c[1] for c in fake_calls(fake_usnet)] == ["us-e2-s0", "ind-1.0-e2-s0"]
    with open(tmp_path / "results/q.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {(r["plan"], r["run"]) for r in table} == {("p", "us-e2-s0"), ("q", "ind-1.0-e2-s0")}
    out = capsys.readouterr().out
    assert "not finished (1): p/us-e9-s0" in out
    doc = json.loads((tmp_path / "results/q/ind-1.0-e2-s0.json").read_text())
    hours = sum(a["cpu_seconds"] for a in doc["attempts"]) / 3600  # q's own run, not p's baseline
    assert f"CPU time of its 1 finished run: {hours:.2f} h" in out


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_bounds_how_many_runs_train_at_once(tmp_path, fake_usnet, monkeypatch, jobs):
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0.3")
    plan = plan_file(tmp_path, grids=[{"method": ["us"], "epochs": [2], "seed": [0, 1]}])
    assert study(tmp_path, "run", plan, "--jobs", str(jobs)) == 0
    order = [c[0] for c in fake_calls(fake_usnet, ends=True)]
    assert order == (["train", "end"] * 2 if jobs == 1 else ["train", "train", "end", "end"])
