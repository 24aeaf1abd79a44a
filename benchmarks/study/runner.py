"""Run a plan: launch what is not finished, resume what was cut off, record and gather results.

Files, per run ``R`` of plan ``P``::

    RUNS/P/.lock          held (flock) by the one runner working on P
    RUNS/P/R/             usnet train's output.dir (checkpoint/, resume.pt, metrics.csv, ...)
    RUNS/P/R/study.json   the runner's record: spec, status, every attempt (command, commit,
                          machine, threads, times, exit code); status "finished" = the
                          completion record, written only after train exited 0 and the results
                          were read
    RUNS/P/R/study.log    the output of every attempt
    RESULTS/P/R.json      the committed copy: the record plus per-width results (no weights)
    RESULTS/P.csv         every finished run, one row per width, plus the plan's baselines
                          (finished runs of other plans; written by ``gather.gather``)

A run is finished when its completion record, or its committed results, match its spec (config
and overrides); a finished run whose spec changed is refused, never overwritten. Unfinished
runs resume with ``--resume`` when ``resume.pt`` exists (one cut off in its final evaluation then
only evaluates), else start afresh in a cleared folder, so ``usnet train`` never writes into a finished run.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import IO, Any

from . import results
from .gather import gather
from .plan import Plan, PlanError, Run, estimate_seconds
from .process import Exit, reap, spawn, terminate
from .records import git, load, machine, now, read_json, software, write_json

RECORD, LOG = "study.json", "study.log"
US_SAMPLING = ("sandwich", "random")
UNKNOWN_FLAG = "unrecognized arguments"  # argparse: every run would fail alike


@dataclass
class Job:
    run: Run
    record: dict[str, Any]
    phase: str = "train"
    proc: Popen | None = None
    log: IO | None = None
    started: float = 0.0
    attempt: dict[str, Any] = field(default_factory=dict)


class Runner:
    def __init__(
        self, plan: Plan, runs_dir: Path, results_dir: Path, usnet: list[str], root: Path
    ) -> None:
        self.plan, self.usnet, self.root = plan, usnet, root
        self.dir = runs_dir / plan.name
        self.results = results_dir
        self.threads = plan.threads
        self.abort: str | None = None

    # -- where things are -------------------------------------------------------------------
    def folder(self, run: Run) -> Path:
        return self.dir / run.name

    def result_path(self, run: Run) -> Path:
        return results.committed(self.results, self.plan.name, run.name)

    def spec(self, run: Run) -> dict[str, Any]:
        return run.spec(self.plan.config)

    # -- state ------------------------------------------------------------------------------
    def state(self, run: Run) -> str:
        """finished | changed (finished with another spec) | orphan (a trained checkpoint that
        no record of this spec vouches for: never deleted) | trained | resume | fresh."""
        record = read_json(self.folder(run) / RECORD)
        done = [
            d
            for d in (record, read_json(self.result_path(run)))
            if d and d.get("status") == "finished"
        ]
        if done:
            return "finished" if all(d.get("spec") == self.spec(run) for d in done) else "changed"
        ckpt = self.folder(run) / "checkpoint" / "usnet.json"
        trained = bool((read_json(ckpt) or {}).get("meta", {}).get("results"))
        if not record:
            return "orphan" if trained else "fresh"
        if record.get("spec") != self.spec(run):
            return "changed" if trained else "fresh"
        if trained:
            # usnet train writes results last: whatever its exit code (killed after that
            # save), only the spectrum or reading the results is left
            return "trained"
        if not (self.folder(run) / "resume.pt").is_file():
            return "fresh"
        epoch = self._epoch(run)
        last = (record.get("attempts") or [{}])[-1]
        stuck = last.get("mode") == "resume" and last.get("exit_code") not in (0, None)
        stuck = stuck and not last.get("interrupted")  # stopped on purpose: not a failure
        if stuck and epoch <= last.get("epoch_at_start", -1):
            return "fresh"  # the last resume failed without progress: do not loop on it
        return "resume"  # usnet train --resume also finishes a cut-off final evaluation

    def _epoch(self, run: Run) -> int:
        """Epochs in the run's last checkpoint (written right after resume.pt each epoch)."""
        info = read_json(self.folder(run) / "checkpoint" / "usnet.json") or {}
        return int(info.get("meta", {}).get("epoch", 0))

    def _selected(self, only: list[str] | None) -> list[Run]:
        runs = list(self.plan.runs)
        if only:
            names = {r.name for r in runs}
            unknown = [n for n in only if n not in names]
            if unknown:
                raise PlanError(f"--only: no run named {', '.join(unknown)} in {self.plan.name}")
            runs = [r for r in runs if r.name in only]
        return runs

    # -- dry run ----------------------------------------------------------------------------
    def describe(self, only: list[str] | None = None) -> str:
        """The expanded runs, their state and the CPU time the plan's timing table predicts."""
        lines = [f"plan {self.plan.name}: {self.plan.config}, {self.plan.threads} thread(s)"]
        total = todo = 0.0
        missing = set()
        for r in self._selected(only):
            est = estimate_seconds(self.plan, r)
            state = self.state(r)
            if est is None:
                missing.add(r.method)
            else:
                total += est
                todo += est if state != "finished" else 0
            cpu = f"{est / 3600:6.2f} h" if est is not None else "     ? h"
            lines.append(f"  {r.name:32s} {state:9s} {cpu}  --set " + " --set ".join(r.overrides))
        lines.append(
            f"{len(self._selected(only))} runs: {total / 3600:.1f} CPU hours in all, "
            f"{todo / 3600:.1f} still to run (one thread each; wall ~ CPU / jobs)"
        )
        if missing:
            lines.append(f"no timing for methods: {', '.join(sorted(missing))} (plan timing:)")
        return "\n".join(lines)

    # -- running ----------------------------------------------------------------------------
    def _lock(self) -> IO:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / ".lock", "a+")  # noqa: SIM115 (held for the runner's lifetime)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise RuntimeError(
                f"plan {self.plan.name} is being run by another runner (pid {holder}; lock "
                f"{self.dir / '.lock'})"
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        return f

    def run(self, jobs: int, threads: int, only: list[str] | None = None) -> int:
        """Run every unfinished run, ``jobs`` at a time; then gather. 0 when all finished."""
        self.threads = threads
        lock = self._lock()
        try:
            runs = self._selected(only)
            changed = [r.name for r in runs if self.state(r) == "changed"]
            if changed:
                raise PlanError(
                    f"runs {', '.join(changed)} finished with other settings than the plan now "
                    f"gives them; rename them in the plan, or move their folders under {self.dir} "
                    f"and their results under {self.results / self.plan.name} away"
                )
            orphans = [r.name for r in runs if self.state(r) == "orphan"]
            if orphans:
                raise PlanError(
                    f"runs {', '.join(orphans)} hold a trained checkpoint but no {RECORD} or "
                    f"committed result of this plan's settings, so the runner cannot tell what "
                    f"they are and does not delete them; move their folders under {self.dir} "
                    "away to train them again"
                )
            todo = deque(r for r in runs if self.state(r) != "finished")
            print(f"plan {self.plan.name}: {len(runs) - len(todo)} finished, {len(todo)} to run")
            failed = self._schedule(todo, jobs)
        finally:
            lock.close()
        gather(self.plan, self.results)
        if self.abort:
            print(f"stopped: {self.abort}")
        return 1 if failed or self.abort else 0

    def _schedule(self, todo: deque[Run], jobs: int) -> int:
        """Keep ``jobs`` runs going until none is left. SIGTERM and Ctrl-C only set a flag,
        acted on at the top of the loop: a signal that lands while a child is being forked or a
        record written would otherwise be lost, or leave a run started but not tracked."""
        active: list[Job] = []
        failed = 0
        stop: list[int] = []

        def request_stop(signum: int, frame: object) -> None:
            stop.append(signum)

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while todo or active:
                if stop:
                    procs = []
                    for job in active:
                        assert job.proc is not None  # an active job has a child
                        procs.append(job.proc)
                    for job, end in zip(active, terminate(procs), strict=True):
                        self._end_attempt(job, end, "interrupted")
                    raise KeyboardInterrupt(signal.Signals(stop[0]).name)
                while todo and len(active) < jobs and not self.abort and not stop:
                    job = self._start(todo.popleft())
                    if job.proc is not None:
                        active.append(job)
                    else:  # only results were left to read
                        failed += job.record["status"] == "failed"
                for job in list(active):
                    assert job.proc is not None
                    done = reap(job.proc, block=False)
                    if done is None:
                        continue
                    if stop:  # it got the Ctrl-C too: not a failure, and no next phase
                        self._end_attempt(job, done, "interrupted")
                        active.remove(job)
                        continue
                    outcome = self._phase_done(job, done)
                    if outcome != "running":
                        active.remove(job)
                        failed += outcome == "failed"
                if self.abort and not active:
                    break
                time.sleep(0.2)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return failed

    def _start(self, run: Run) -> Job:
        folder, state = self.folder(run), self.state(run)
        old = read_json(folder / RECORD) or {}
        attempts = old.get("attempts", []) if old.get("spec") == self.spec(run) else []
        for a in attempts:
            if "end" not in a:  # its runner was killed: nobody saw it end
                a.update(end=None, exit_code=None, interrupted=True)
        if state == "fresh" and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "plan": self.plan.name, "run": run.name, "method": run.method, "family": run.family,
            "series": run.family if run.lr is None else f"{run.family} lr={run.lr:g}",
            "epochs": run.epochs, "seed": run.seed, "lr": run.lr, "spec": self.spec(run),
            "status": "running", "attempts": attempts,
        }  # fmt: skip
        job = Job(run, record)
        if state == "trained":
            self._after_training(job)
            return job
        self._launch(job, "train", "resume" if state == "resume" else "fresh")
        return job

    def _launch(self, job: Job, phase: str, mode: str) -> None:
        folder = self.folder(job.run)
        if phase == "train":
            command = [*self.usnet, "train", self.plan.config, "--no-progress"]
            for o in (*job.run.overrides, f"output.dir={folder}"):
                command += ["--set", o]
            if mode == "resume":
                command.append("--resume")
        else:
            command = [*self.usnet, "spectrum", str(folder / "checkpoint"), "--widths",
                       str(self.plan.spectrum_widths), "--no-latency", "--quiet",
                       "--threads", str(self.threads), "--out", str(folder / "spectrum")]  # fmt: skip
        job.phase = phase
        job.attempt = {
            "phase": phase, "mode": mode, "command": shlex.join(command),
            "threads": self.threads, "epoch_at_start": self._epoch(job.run), "start": now(),
            "git": git(self.root), "machine": machine(), **software(), "load_start": load(),
        }  # fmt: skip
        job.record["attempts"].append(job.attempt)
        job.record["status"] = "running"
        write_json(folder / RECORD, job.record)
        job.log = open(folder / LOG, "a", encoding="utf-8")  # noqa: SIM115 (closed at exit)
        job.log.write(f"=== {job.attempt['start']} {phase} ({mode}): {job.attempt['command']}\n")
        job.log.flush()
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        job.started = time.perf_counter()
        job.proc = spawn(command, env, job.log, self.root)
        print(f"{now()} start {job.run.name}: {phase} ({mode})", flush=True)

    def _end_attempt(self, job: Job, done: Exit | None, status: str) -> None:
        job.attempt.update(
            end=now(),
            wall_seconds=round(time.perf_counter() - job.started, 2),
            cpu_seconds=round(done.cpu_seconds, 2) if done else None,
            exit_code=done.code if done else None,
            load_end=load(),
        )
        if status == "interrupted":
            job.attempt["interrupted"] = True
        job.record["status"] = status
        if job.log is not None:
            job.log.close()
            job.log = None
        write_json(self.folder(job.run) / RECORD, job.record)

    def _phase_done(self, job: Job, done: Exit) -> str:
        """Record the exit; start the next phase. Returns running | finished | failed."""
        if done.code != 0:
            tail = _tail(self.folder(job.run) / LOG)
            job.record["error"] = tail
            self._end_attempt(job, done, "failed")
            print(f"{now()} FAILED {job.run.name}: {job.phase} exit {done.code}: {tail}")
            if UNKNOWN_FLAG in tail:
                self.abort = (
                    f"usnet {job.phase} does not accept the runner's flags ({tail}); every run "
                    "would fail alike, so no further runs start"
                )
            return "failed"
        self._end_attempt(job, done, "trained" if job.phase == "train" else "running")
        if job.phase == "train":
            return self._after_training(job)
        return self._finish(job)

    def _after_training(self, job: Job) -> str:
        """Start the spectrum of a US-Net if the plan asks for one (running), else finish now."""
        sampling = (
            (read_json(self.folder(job.run) / "checkpoint" / "usnet.json") or {})
            .get("meta", {})
            .get("config", {})
            .get("train", {})
            .get("sampling")
        )
        if self.plan.spectrum_widths and sampling in US_SAMPLING:
            self._launch(job, "spectrum", "widths")
            return "running"
        job.proc = None
        return self._finish(job)

    def _finish(self, job: Job) -> str:
        try:
            collected = results.collect(self.folder(job.run))
        except (ValueError, KeyError, OSError) as e:
            job.record.update(status="failed", error=f"results unreadable: {e}")
            job.proc = None
            write_json(self.folder(job.run) / RECORD, job.record)
            print(f"{now()} FAILED {job.run.name}: results unreadable: {e}")
            return "failed"
        job.record.pop("error", None)
        job.record["status"] = "finished"
        doc = {**job.record, "status": "finished", "finished": now(), **collected}
        write_json(self.result_path(job.run), doc)  # the committed copy first, then completion
        write_json(self.folder(job.run) / RECORD, doc)
        top = ", ".join(f"{w['width']:g}: {100 * w['top1']:.2f}" for w in doc["widths"])
        print(f"{now()} finished {job.run.name}: top-1 % {top}", flush=True)
        return "finished"


def _tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log, as one line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join([ln.strip() for ln in text.splitlines() if ln.strip()][-lines:])
