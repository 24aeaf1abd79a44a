"""What a task gives the one trainer (:func:`usnet.training.train`), and what the trainer gives it.

A task (classification, super-resolution, RL, or one registered from outside) supplies a typed
config, a model, a :class:`BatchSource` (a data loader's batches, or PPO's collect-then-minibatch
rollouts), its loss (a :class:`~usnet.training.step.SandwichLoss`), its evaluation (the same
``metric_provider`` that ``usnet spectrum``, ``calibrate``, ``select`` and ``export`` use, so a
checkpoint is calibrated and measured one way) and the report of its final results. The trainer
owns everything else: run folder, device, seeding, optimizer, schedule, AMP scaler, the
optimizer-step sequence, checkpoints, resume, logging and distributed evaluation.

The config is typed: :class:`RunConfig` names the sections the trainer reads, and a task's
schema (a pydantic model) matches it by having them, so mypy checks every field the trainer
reads against every task's schema.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from ..config.sections import (
    EvalConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    WidthTraining,
)
from ..config.widths import WidthGrid
from ..nn import Width
from .grid import Evaluation
from .step import SandwichLoss


class RunConfig(Protocol):
    """The sections of a run's config the trainer reads (every task's schema has them)."""

    @property
    def task(self) -> str: ...
    @property
    def train(self) -> WidthTraining: ...
    @property
    def optim(self) -> OptimConfig: ...
    @property
    def schedule(self) -> ScheduleConfig: ...
    @property
    def eval(self) -> WidthGrid: ...
    @property
    def output(self) -> OutputConfig: ...


C = TypeVar("C", bound=RunConfig)
C_contra = TypeVar("C_contra", bound=RunConfig, contravariant=True)


@dataclass(frozen=True)
class Plan:
    """How long a run is and how the trainer paces it, in the task's epochs.

    An epoch is the task's unit: a pass over a data set's batches, or one PPO update (a rollout
    and its minibatches). ``length`` says in the config's words what set ``epochs`` (messages
    name it). ``eval_every`` epochs the smallest and largest widths are evaluated (None: only at
    the end); a row is recorded (metrics.csv, the log) every ``record_every`` epochs and on an
    evaluated one; a checkpoint is saved every ``checkpoint_every``. ``anneal_per_epoch`` steps
    the learning-rate schedule once per epoch instead of once per optimizer step (PPO anneals
    once per rollout, as CleanRL and Stable-Baselines3 do).
    """

    epochs: int
    length: str
    eval_every: int | None = None
    record_every: int = 1
    checkpoint_every: int = 1
    amp: str | None = None
    channels_last: bool = False
    anneal_per_epoch: bool = False

    @classmethod
    def of_epochs(cls, train: TrainingConfig, evaluation: EvalConfig) -> Plan:
        """The plan of a loop over a data set (classification, SR): ``train.epochs`` epochs,
        the smallest and largest widths evaluated every ``eval.every``."""
        return cls(
            epochs=train.epochs,
            length=f"train.epochs {train.epochs}",
            eval_every=evaluation.every,
            amp=train.amp,
            channels_last=train.channels_last,
        )


@dataclass(frozen=True)
class Run:
    """What the trainer tells a batch source about the run: where the model runs, the ranks,
    and the run's own generator (identical on every rank), which also draws the widths; a
    source that shuffles draws from it too, so one generator's state resumes both."""

    device: torch.device
    world_size: int
    rank: int
    generator: torch.Generator


class BatchSource(Protocol):
    """The batches of one epoch: ``steps`` ``(inputs, target)`` pairs, one optimizer step each.

    ``inputs`` is a tensor (or a tuple/dict of them) the model is called with, ``target`` what
    the task's loss compares with; both may still be on the CPU. ``unit`` names what ``inputs``
    counts along its first axis (``images``, ``samples``: the throughput column's name).
    ``generators`` are the source's own generators, saved and restored with the run.
    """

    @property
    def steps(self) -> int: ...
    @property
    def unit(self) -> str: ...
    @property
    def generators(self) -> Mapping[str, torch.Generator]: ...

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch's batches (the first call may be a resumed run's epoch)."""
        ...

    def __iter__(self) -> Iterator[tuple[Any, Any]]: ...

    def summary(self) -> dict[str, float]:
        """Columns the source adds to a recorded row (RL: environment steps, return)."""
        ...

    def close(self) -> None: ...


class TrainTask(Protocol[C_contra]):
    """A task as the trainer sees it, generic in its config type."""

    name: str
    #: The metric logged for the smallest and largest width after an evaluated epoch.
    primary: str

    def plan(self, cfg: C_contra) -> Plan: ...

    def build_model(self, cfg: C_contra) -> nn.Module: ...

    def batches(self, cfg: C_contra, model: nn.Module, run: Run) -> BatchSource:
        """This rank's batch source; ``model`` is the one trained (not DDP-wrapped)."""
        ...

    def loss(self, cfg: C_contra) -> SandwichLoss: ...

    def metric_provider(self, model: nn.Module, cfg: C_contra) -> Evaluation:
        """The task's calibration data and evaluation from a run's config."""
        ...

    def report(
        self,
        model: nn.Module,
        cfg: C_contra,
        results: dict[Width, dict[str, float]],
        out: Path,
        history: Sequence[Mapping[str, Any]],
    ) -> tuple[Any, str]:
        """The final results as stored in the checkpoint's metadata, and as a command prints
        them; may write files into the run folder ``out``."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """A finished run: its checkpoint folder and final results (on DDP ranks other than 0,
    ``results`` is None and ``text`` empty: rank 0 speaks for the run)."""

    checkpoint: Path
    results: Any
    text: str
