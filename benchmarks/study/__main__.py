"""``python -m benchmarks.study``: the reproduction study's runner (issue 10).

    python -m benchmarks.study run benchmarks/plans/schedule_v1.yaml --jobs 2   # train, gather, plot
    python -m benchmarks.study run PLAN --dry-run        # the runs and their estimated CPU time
    python -m benchmarks.study gather PLAN               # CSV + plots from the finished runs
    python -m benchmarks.study time PLAN [--methods A B]  # measure per-epoch times for the plan
    python -m benchmarks.study calibration benchmarks/plans/calibration.yaml

Run from the repository root (plans name their config relative to it). See docs/reproduction.md.
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
