"""The study's command line: ``run``, ``gather``, ``time``, ``calibration`` (see ``__main__``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from usnet.commands._args import positive_int

from .plan import PlanError, load_plan

ROOT = Path.cwd()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def plan_command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("plan", type=Path, help="benchmarks/plans/NAME.yaml")
        c.add_argument(
            "--runs-dir",
            type=Path,
            default=Path("runs/study"),
            metavar="DIR",
            help="where run folders go: DIR/PLAN/RUN (default: %(default)s)",
        )
        c.add_argument(
            "--results-dir",
            type=Path,
            default=Path("benchmarks/results"),
            metavar="DIR",
            help="committed results: DIR/PLAN.csv, DIR/PLAN/RUN.json",
        )
        c.add_argument(
            "--usnet",
            default=f"{shlex.quote(sys.executable)} -m usnet",
            help="the usnet command to run (default: %(default)s)",
        )
        return c

    r = plan_command("run", "train the plan's runs that are not finished, then gather")
    r.add_argument("--jobs", type=positive_int, default=1, help="runs at a time (default 1; <= cores)")
    r.add_argument("--threads", type=positive_int, help="OMP_NUM_THREADS per run (default: the plan's)")
    r.add_argument("--dry-run", action="store_true", help="list the runs and estimated CPU time")
    r.add_argument("--only", nargs="+", metavar="RUN", help="only these runs (names)")
    plan_command("gather", "write the CSV, per-run JSON and plots of the finished runs")
    t = plan_command("time", "measure the CPU time of one epoch of each method")
    t.add_argument("--methods", nargs="+", help="only these methods")
    t.add_argument("--steps", type=positive_int, default=40, help="steps per timed epoch (default 40)")
    t.add_argument("--steps-per-epoch", type=positive_int, default=468, help="a full epoch (default 468)")
    t.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for the timing runs (e.g. data.root=...)",
    )
    t.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    t.add_argument("--repeat", type=int, default=1, help="tries per method; the fastest counts")
    c = sub.add_parser("calibration", help="the calibration study on one trained checkpoint")
    c.add_argument("plan", type=Path, help="benchmarks/plans/calibration.yaml")
    c.add_argument("--runs-dir", type=Path, default=Path("runs/study"), metavar="DIR")
    c.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"), metavar="DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "calibration":
            from .calibration import run_calibration

            return run_calibration(args.plan, args.runs_dir, args.results_dir)
        plan = load_plan(args.plan, ROOT)
        usnet = shlex.split(args.usnet)
        if args.command == "time":
            from .timing import measure_plan, timing_yaml

            record = measure_plan(
                plan,
                args.methods,
                usnet,
                ROOT,
                args.steps,
                args.steps_per_epoch,
                tuple(args.extra),
                args.repeat,
            )
            if args.out:
                from .records import write_json

                write_json(args.out, record)
            print(timing_yaml(record))
            return 0
        if args.command == "gather":
            from .gather import gather

            return gather(plan, args.results_dir)
        from .runner import Runner

        runner = Runner(plan, args.runs_dir, args.results_dir, usnet, ROOT)
        if args.dry_run:
            print(runner.describe(args.only))
            return 0
        if not 1 <= args.jobs <= 64:
            raise PlanError(f"--jobs must be between 1 and 64, got {args.jobs}")
        return runner.run(args.jobs, args.threads or plan.threads, args.only)
    except (PlanError, ValueError, OSError, RuntimeError) as e:
        print(f"study {args.command}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, PlanError) else 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (the runner turns it into this)
        why = str(e) or "SIGINT"
        print(
            f"study {args.command}: stopped ({why}); runs in progress are recorded as "
            "interrupted, and the same command resumes them",
            file=sys.stderr,
        )
        return 130
