"""The config sections every task shares, so the same thing has the same key in every recipe:
``model``, ``train``, ``optim``, ``schedule``, ``eval`` and ``output``. A task's schema
(``usnet.tasks.<name>.config``) adds its own sections (``data``, ``calibrate``, ``env``...) and
may extend these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..devices import MAX_THREADS
from .errors import ConfigError
from .errors import suggest as _suggest
from .typed import Pair, Positive, Section, Seed
from .widths import WidthGrid, check_width_sampling


class ModelConfig(Section):
    """Which registered model to build: ``create_model(name, **kwargs)``."""

    name: str = "us_mobilenet_v1_small"
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="passed to create_model (in_chans, switches...)"
    )

    def check(self) -> None:
        super().check()
        from ..models import is_known_model, list_models  # imported late: config stays light

        known = list_models()
        if not is_known_model(self.name):
            raise ConfigError(
                "name",
                f"unknown model {self.name!r}; available: {', '.join(known)}"
                + _suggest(self.name, known),
            )


class WidthTraining(Section):
    """The ``train:`` keys every task shares: how each step picks widths, seeds, the machine.

    ``sampling``: ``sandwich`` (largest, smallest and ``num_widths - 2`` random widths; the
    paper), ``random`` (``num_widths`` random widths; the ablation), ``switches`` (every width in
    ``widths``; the 4-switch baseline) or ``fixed`` (the one width in ``widths``; an individually
    trained model: a number, or a per-group ``{group: width}`` with ``"*"`` for the rest, the
    channel configuration a search chose trained alone from scratch). ``inplace_distillation``:
    the widths other than the largest learn from its detached outputs
    (:mod:`usnet.training.step`). ``nonuniform``: every random width gives each channel group
    its own width (the training AutoSlim searches; the largest and smallest stay uniform).
    ``smallest_weight`` scales the narrowest width's loss in a step that trains several widths
    (an ablation: does the hardest width need more weight?). ``device``: null = CUDA when
    available (the command's ``--device`` overrides it); ``threads``: torch CPU threads, 0 =
    torch's default.
    """

    sampling: Literal["sandwich", "random", "switches", "fixed"] = "sandwich"
    num_widths: int = Field(4, ge=1)
    widths: list[Positive | dict[str, Positive]] | None = None
    inplace_distillation: bool = True
    nonuniform: bool = Field(
        False, description="the random widths per channel group (sandwich/random sampling)"
    )
    smallest_weight: float = Field(
        1.0, gt=0, description="the narrowest width's loss weight in a multi-width step; 1 = paper"
    )
    seed: Seed = 0
    device: str | None = Field(None, description="cpu, cuda, cuda:1...; null = cuda when available")
    threads: int = Field(
        0, ge=0, le=MAX_THREADS, description="torch CPU threads; 0 = torch's default"
    )
    log_every: int = Field(50, ge=1)
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; null = no clipping")

    def check(self) -> None:
        super().check()
        check_width_sampling(self.sampling, self.num_widths, self.widths)
        if self.nonuniform and not self.trains_range:
            raise ConfigError(
                "nonuniform",
                f"draws per-group random widths: it needs 'sandwich' or 'random' sampling, not "
                f"{self.sampling!r}",
            )
        if self.smallest_weight != 1.0 and self.sampling not in ("sandwich", "switches"):
            # random draws the narrowest width almost never, fixed trains one width alone
            raise ConfigError(
                "smallest_weight",
                f"{self.smallest_weight:g} has no effect with {self.sampling!r} sampling; it "
                "weights the narrowest width of 'sandwich' or 'switches' steps (keep 1.0)",
            )

    @property
    def trains_range(self) -> bool:
        """Whether the widths come from the whole range (not from the list ``widths``)."""
        return self.sampling in ("sandwich", "random")


class TrainingConfig(WidthTraining):
    """The shared keys plus the options of the loop over a data set (classification, SR):
    ``epochs``; ``amp``: null (fp32), ``bf16`` (CPU or CUDA) or ``fp16`` (CUDA only);
    ``channels_last`` memory format."""

    epochs: int = Field(4, ge=1)
    amp: Literal["bf16", "fp16"] | None = None
    channels_last: bool = True


class OptimConfig(Section):
    """The optimizer. SGD uses ``momentum``/``nesterov``; Adam and AdamW use ``betas`` and
    ``eps``. BN weights and biases get no weight decay; ``no_weight_decay_depthwise`` also
    exempts depthwise conv weights (the paper)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.2, gt=0, description="peak learning rate for the global batch")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1.0e-4, ge=0)
    no_weight_decay_depthwise: bool = True
    betas: Pair = (0.9, 0.999)
    eps: float = Field(1.0e-8, gt=0, description="Adam/AdamW's epsilon")

    def check(self) -> None:
        super().check()
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov", "needs momentum > 0; set nesterov: false or a momentum")


class ScheduleConfig(Section):
    """The learning-rate schedule, evaluated per iteration at fractional epoch ``e``:
    ``linear`` (to ``min_lr`` at the end; the paper), ``cosine`` (to ``min_lr``), ``multistep``
    (times ``gamma`` at each of ``milestones``, in epochs), ``exponential`` (times ``gamma`` once
    per epoch: the 4-switch recipe's 0.98) or ``constant``; after ``warmup_epochs`` of linear
    warm-up from 0."""

    name: Literal["linear", "cosine", "multistep", "exponential", "constant"] = "linear"
    warmup_epochs: float = Field(0.0, ge=0)
    milestones: list[Positive] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0, description="where linear and cosine decay end")

    def check(self) -> None:
        super().check()
        if self.name == "multistep":
            if not self.milestones:
                raise ConfigError("milestones", "'multistep' needs at least one milestone epoch")
            if list(self.milestones) != sorted(set(self.milestones)):
                raise ConfigError(
                    "milestones", f"must be strictly increasing, got {self.milestones}"
                )
        elif self.milestones:
            raise ConfigError(
                "milestones",
                f"is only used by the 'multistep' schedule, not {self.name!r}; set it to []",
            )
        if self.min_lr and self.name not in ("linear", "cosine"):
            raise ConfigError(
                "min_lr", f"is only used by 'linear' and 'cosine', not {self.name!r}; set it to 0"
            )


class EvalConfig(WidthGrid):
    """The widths evaluated after training (``widths``: a grid string ``"start:stop:step"``,
    ``"0.35,0.5,1.0"`` or a list) and how often the smallest and largest are evaluated during
    training (``every`` epochs). A model trained at a list of widths (``fixed``/``switches``
    sampling) is evaluated at those widths instead."""

    widths: str | float | list[float] = "0.25,0.5,1.0"
    every: int = Field(1, ge=1)


class OutputConfig(Section):
    """Where the run writes its checkpoint, CSV metrics and (optionally) TensorBoard logs."""

    dir: str = "runs/default"
    tensorboard: bool = False


def check_schedule(
    schedule: ScheduleConfig, epochs: int, lr: float, length: str = "train.epochs"
) -> None:
    """Checks across the schedule, the run length (``epochs``, named ``length``) and the
    optimizer (a run config's)."""
    if schedule.warmup_epochs >= epochs:
        raise ConfigError(
            "schedule.warmup_epochs",
            f"must be < {length} ({epochs}), got {schedule.warmup_epochs:g}",
        )
    if schedule.milestones and max(schedule.milestones) > epochs:
        raise ConfigError(
            "schedule.milestones",
            f"must lie within {length} ({epochs}), got {schedule.milestones}",
        )
    if schedule.min_lr > lr:
        raise ConfigError(
            "schedule.min_lr", f"must be <= optim.lr ({lr:g}), got {schedule.min_lr:g}"
        )


def check_amp(amp: str | None, device_type: str) -> None:
    """``train.amp`` against the machine: call once the device is known ('cpu', 'cuda')."""
    if amp == "fp16" and device_type != "cuda":
        raise ConfigError(
            "train.amp",
            f"'fp16' autocast needs a CUDA device (this run is on {device_type!r}); "
            "use 'bf16' or null",
        )
    if amp == "bf16" and device_type not in ("cuda", "cpu"):
        raise ConfigError(
            "train.amp", f"'bf16' autocast runs on 'cpu' or 'cuda', not {device_type!r}"
        )
