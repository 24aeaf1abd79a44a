"""A study plan (``benchmarks/plans/NAME.yaml``): one base config, named methods, runs and grids.

A plan expands into named runs, each one ``usnet train CONFIG --set ...`` invocation::

    config: configs/fashion_mnist_paper.yaml  # relative to the repository root
    set: [eval.widths=0.25:1.0:0.25]     # overrides shared by every run
    methods:                                  # what differs between the contenders
      us: {set: [train.sampling=sandwich]}
      ind-1.0: {set: [train.sampling=fixed, "train.widths=[1.0]"], family: individual}
    grids:                                    # cartesian products, expanded in order
      - {method: [us, ind-1.0], epochs: [4, 32], seed: [0, 1, 2]}
    runs:                                     # single runs (a name is optional)
      - {method: us, epochs: 8, lr: 0.4}
    baselines: [{plan: other, runs: [us-e4-s0]}]  # finished runs of another plan, drawn too
    timing: {seconds_per_epoch: {us: 120, ind-1.0: 40}, seconds_per_run: {us: 30, ind-1.0: 15}}

A run's overrides are, in order: the plan's ``set``, its method's ``set``, ``train.epochs``,
``train.seed``, ``optim.lr`` (only when given), the run's or grid's own ``set``. Its name is
``METHOD-eEPOCHS[-lrLR][-TAG]-sSEED`` unless given.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PlanError(ValueError):
    """A plan that cannot be run: the message names the file and the bad field."""


def _override(item: str) -> str:
    if "=" not in item or item.startswith("output.dir"):
        raise ValueError(
            f"override {item!r} must be KEY=VALUE and not output.dir (the runner sets it)"
        )
    return item


Override = Annotated[str, AfterValidator(_override)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Method(_Strict):
    """A contender: its overrides, and the family it is drawn with (e.g. all individually
    trained widths as one series)."""

    set: list[Override] = []
    family: str | None = None


class Grid(_Strict):
    """A cartesian product of methods, epochs, seeds and learning rates."""

    method: list[str]
    epochs: list[int] = Field(min_length=1)
    seed: list[int] = [0]
    lr: list[float] | None = None
    set: list[Override] = []
    tag: str | None = None


class RunEntry(_Strict):
    """One run written out."""

    method: str
    epochs: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    lr: float | None = Field(None, gt=0)
    set: list[Override] = []
    tag: str | None = None
    name: str | None = None


class Timing(_Strict):
    """Measured CPU seconds (one thread) per full epoch of each method, validation included, and
    per run (start-up and the final calibration and evaluation): what ``--dry-run`` adds up."""

    measured: str = ""
    seconds_per_epoch: dict[str, float] = {}
    seconds_per_run: dict[str, float] = {}


class Baseline(_Strict):
    """Finished runs of another plan drawn and tabulated with this one (not run again): e.g. the
    ablations compare with the schedule plan's US-Nets instead of training them twice."""

    plan: str
    runs: list[str] = Field(min_length=1)


class PlanFile(_Strict):
    description: str = ""
    config: str
    set: list[Override] = []
    threads: int = Field(1, ge=1)
    spectrum_widths: str | None = None
    methods: dict[str, Method]
    grids: list[Grid] = []
    runs: list[RunEntry] = []
    baselines: list[Baseline] = []
    timing: Timing = Timing()


class Run(BaseModel):
    """One expanded run: everything the runner needs to launch it and label its results."""

    model_config = ConfigDict(frozen=True)

    name: str
    method: str
    family: str
    epochs: int
    seed: int
    lr: float | None
    overrides: tuple[str, ...]

    def spec(self, config: str) -> dict[str, Any]:
        """What makes two runs the same run: compared before skipping or resuming one."""
        return {"config": config, "overrides": list(self.overrides)}


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    description: str
    config: str
    threads: int
    spectrum_widths: str | None
    runs: tuple[Run, ...]
    baselines: tuple[Baseline, ...]
    timing: Timing


def _run(plan: PlanFile, entry: RunEntry, where: str) -> Run:
    if entry.method not in plan.methods:
        raise PlanError(
            f"{where}: method {entry.method!r} is not among methods: {', '.join(plan.methods)}"
        )
    method = plan.methods[entry.method]
    overrides = [*plan.set, *method.set, f"train.epochs={entry.epochs}", f"train.seed={entry.seed}"]
    if entry.lr is not None:
        overrides.append(f"optim.lr={entry.lr:g}")
    overrides += entry.set
    name = entry.name or "-".join(
        p
        for p in (
            entry.method,
            f"e{entry.epochs}",
            f"lr{entry.lr:g}" if entry.lr is not None else "",
            entry.tag or "",
            f"s{entry.seed}",
        )
        if p
    )
    if not NAME.match(name):
        raise PlanError(f"{where}: run name {name!r} may hold only letters, digits, '.', '_', '-'")
    return Run(
        name=name,
        method=entry.method,
        family=method.family or entry.method,
        epochs=entry.epochs,
        seed=entry.seed,
        lr=entry.lr,
        overrides=tuple(overrides),
    )


def expand(plan: PlanFile) -> list[Run]:
    """The plan's runs in launch order: grids first (in order), then single runs; identical
    duplicates collapse into one, a name reused for different settings is an error."""
    entries: list[tuple[RunEntry, str]] = []
    for i, g in enumerate(plan.grids):
        for method, epochs, seed, lr in itertools.product(
            g.method, g.epochs, g.seed, g.lr if g.lr is not None else [None]
        ):
            entry = RunEntry(method=method, epochs=epochs, seed=seed, lr=lr, set=g.set, tag=g.tag)
            entries.append((entry, f"grids[{i}]"))
    entries += [(e, f"runs[{i}]") for i, e in enumerate(plan.runs)]
    runs: dict[str, Run] = {}
    for entry, where in entries:
        run = _run(plan, entry, where)
        if run.name in runs and runs[run.name] != run:
            raise PlanError(f"{where}: run name {run.name!r} is used twice with different settings")
        runs[run.name] = run
    if not runs:
        raise PlanError("the plan has no runs: add grids or runs")
    return list(runs.values())


def load_plan(path: str | Path, root: Path | None = None) -> Plan:
    """Read and check a plan; ``root`` (default: the current folder) resolves its config path."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"plan {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        data = PlanFile.model_validate(raw)
    except yaml.YAMLError as e:
        raise PlanError(f"{path}: invalid YAML: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise PlanError(f"{path}: {field}: {first['msg']}") from None
    if not NAME.match(path.stem):
        raise PlanError(f"{path}: the plan's file name must be a valid run name")
    config = (root or Path.cwd()) / data.config
    if not config.is_file():
        raise PlanError(
            f"{path}: config {data.config!r} does not exist (relative to {config.parent})"
        )
    try:
        runs = expand(data)
    except PlanError as e:
        raise PlanError(f"{path}: {e}") from None
    return Plan(
        name=path.stem,
        path=path,
        description=data.description,
        config=data.config,
        threads=data.threads,
        spectrum_widths=data.spectrum_widths,
        runs=tuple(runs),
        baselines=tuple(data.baselines),
        timing=data.timing,
    )


def estimate_seconds(plan: Plan, run: Run) -> float | None:
    """CPU seconds the plan's timing table predicts for ``run`` (None: no number for its method)."""
    per_epoch = plan.timing.seconds_per_epoch.get(run.method)
    if per_epoch is None:
        return None
    return run.epochs * per_epoch + plan.timing.seconds_per_run.get(run.method, 0.0)
