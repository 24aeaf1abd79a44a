"""The one trainer: every task trains here (classification, super-resolution, RL).

The task (:class:`~usnet.training.task.TrainTask`) supplies the model, its batches, its loss and
its evaluation; the trainer owns the rest, for every task alike: the run folder, device and
seeding, optimizer, learning-rate schedule and AMP scaler, the optimizer-step sequence (the
sandwich step, gradient clipping, one step), checkpoints and exact resume, logging, and the
evaluation of the width grid shared by the ranks of a DDP run. Run folder (``output.dir``)::

    checkpoint/      the model (model.safetensors + usnet.json), saved every
                     ``checkpoint_every`` epochs and at the end, with the final results
    resume.pt        everything a resumed run needs (weights, optimizer, schedule, scaler, RNG,
                     epoch, history), one atomic file, so a crash never leaves weights and
                     optimizer out of step
    metrics.csv      one row per recorded epoch (:mod:`.records`), also logged as a line
    config.yaml      the resolved config
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .. import checkpoint
from ..calibration import clear_calibration
from ..config import dump_yaml, to_dict
from ..config.sections import check_amp
from ..config.widths import check_model_widths
from ..errors import UsageError
from ..io import write_text
from ..logs import LOG, progress_bar
from ..nn import WidthConfig, format_width, width_space
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .grid import evaluate_widths
from .optim import create_optimizer, create_scheduler
from .records import LossTotals, Row, add_scalars, format_row, tensorboard, write_csv
from .resume import (
    CHECKPOINT,
    ResumeState,
    check_run_folder,
    clear_run_folder,
    hold_run_folder,
)
from .sampling import step_widths
from .step import sandwich_step
from .task import C, Plan, Run, RunConfig, TrainResult, TrainTask


def train(
    task: TrainTask[C],
    cfg: C,
    *,
    resume: bool = False,
    device: str | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``cfg`` (under ``torchrun``: on every rank), then evaluate its width grid.

    ``resume=True`` continues from ``output.dir/resume.pt`` exactly where the last saved epoch
    left off. A folder that already holds a run is refused unless ``resume`` or ``overwrite``
    (which starts afresh). ``device`` overrides ``train.device``.
    """
    out = Path(cfg.output.dir)
    check_run_folder(out, resume, overwrite)
    plan = task.plan(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info, dev = init_distributed(device or cfg.train.device)
    check_amp(plan.amp, dev.type)
    try:
        with hold_run_folder(out) if info.is_main else contextlib.nullcontext():
            check_run_folder(out, resume, overwrite)  # again: now no other process can start
            return Trainer(task, cfg, plan, info, dev).run(resume, overwrite)
    finally:
        cleanup(info)


def final_widths(cfg: RunConfig) -> Sequence[WidthConfig]:
    """The widths evaluated after training: ``eval.widths``, or the trained list of a model
    trained at fixed widths (``fixed``: its one width, per group or not; ``switches``)."""
    return cfg.eval.grid if cfg.train.trains_range else _trained(cfg)


def _end_widths(cfg: RunConfig, width_min: float, width_max: float) -> Sequence[WidthConfig]:
    """The widths evaluated during training: the range's ends, or the trained list."""
    return sorted({width_min, width_max}) if cfg.train.trains_range else _trained(cfg)


def _trained(cfg: RunConfig) -> Sequence[WidthConfig]:
    """The list a ``fixed``/``switches`` run trains: switches' numbers in order, ``fixed``'s
    one width as given (a per-group ``{group: width}`` has no order)."""
    widths: list[WidthConfig] = list(cfg.train.widths or [])
    numbers = [float(w) for w in widths if not isinstance(w, (Mapping, tuple))]
    return sorted(set(numbers)) if len(numbers) == len(widths) else widths


def _to(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Tensors of a batch (alone, in tuples, lists or dicts) on ``device``; 4-D inputs in the
    channels-last memory format when asked."""
    if isinstance(obj, Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.dim() == 4:
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, Mapping):
        return {k: _to(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device, channels_last) for v in obj)
    return obj


def _count(inputs: Any) -> int:
    """Samples in a batch's inputs (the first tensor's first axis)."""
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    return next(_count(v) for v in values)


def _has_results(out: Path) -> bool:
    """Whether the run's checkpoint holds its final evaluation (the run is finished)."""
    try:
        return "results" in checkpoint.read_meta(out / CHECKPOINT)
    except (FileNotFoundError, ValueError):
        return False


class Trainer(Generic[C]):
    """One run of ``task`` on ``cfg``: built on every rank, then :meth:`run`."""

    def __init__(
        self, task: TrainTask[C], cfg: C, plan: Plan, info: DistInfo, device: torch.device
    ) -> None:
        self.task, self.cfg, self.plan, self.info, self.device = task, cfg, plan, info, device
        self.out = Path(cfg.output.dir)
        tc = cfg.train
        torch.manual_seed(tc.seed)
        model = task.build_model(cfg).to(device)
        check_model_widths(model, {"train.widths": tc.widths or [], "eval.widths": cfg.eval.grid})
        if plan.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.generator = torch.Generator().manual_seed(tc.seed)  # identical on every rank
        run = Run(device, info.world_size, info.rank, self.generator)
        self.source = task.batches(cfg, model, run)
        self.optimizer = create_optimizer(cfg.optim, model)
        per_epoch = 1 if plan.anneal_per_epoch else self.source.steps
        self.scheduler = create_scheduler(cfg.schedule, self.optimizer, per_epoch, plan.epochs)
        self.scaler = torch.amp.GradScaler(device.type, enabled=plan.amp == "fp16")
        self.config = to_dict(cfg)
        self.meta = {"task": task.name, "config": self.config}
        generators = {"widths": self.generator, **self.source.generators}
        self.state = ResumeState(
            self.out, model, self.optimizer, self.scheduler, self.scaler, generators, self.config
        )
        self.loss = task.loss(cfg)
        self.evaluation = task.metric_provider(model, cfg)
        self.history: list[Row] = []
        self.totals = LossTotals()

    # -- the run ----------------------------------------------------------------------------
    def run(self, resume: bool, overwrite: bool = False) -> TrainResult:
        plan, main = self.plan, self.info.is_main
        start = self._resume() if resume else 0
        if start > plan.epochs or (start == plan.epochs and _has_results(self.out)):
            raise UsageError(
                f"{self.out} already finished {start} epochs ({plan.length}); lengthen the run "
                "to train longer"
            )
        # (all epochs trained but the final evaluation cut off: no epoch is left, and the
        # resumed run only evaluates)
        model = self._wrapped()
        if overwrite and main:  # only now: the model, data and optimizer are all valid
            clear_run_folder(self.out)
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.yaml", dump_yaml(self.config))
        writer = tensorboard(self.out) if self.cfg.output.tensorboard and main else None
        steps = self.source.steps
        bar = progress_bar(
            total=plan.epochs * steps, initial=start * steps, unit="step", hidden=not main
        )
        try:
            for epoch in range(start, plan.epochs):
                bar.set_description(f"epoch {epoch + 1}/{plan.epochs}")
                self._epoch(model, epoch, bar)
                self._end_epoch(epoch, writer)
        finally:
            bar.close()
            self.source.close()
        return self._finish()

    def _resume(self) -> int:
        counters, self.history = self.state.load()
        if "epoch" not in counters:
            raise UsageError(
                f"cannot resume: {self.state.path} counts no epochs (written by another version); "
                "start afresh with --overwrite"
            )
        start = int(counters["epoch"])
        if self.info.is_main:
            LOG.info(f"resumed {self.out} after epoch {start}")
        return start

    def _wrapped(self) -> nn.Module:
        """The model as the steps run it: DDP-wrapped across ranks (one all-reduce per step)."""
        if not self.info.enabled:
            return self.model
        dev = self.device
        return DistributedDataParallel(
            self.model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=getattr(self.model, "switches", None) is not None,
        )

    def _epoch(self, model: nn.Module, epoch: int, bar: Any) -> None:
        tc = self.cfg.train
        clear_calibration(self.model)  # statistics of the old weights are stale
        self.model.train()
        self.source.set_epoch(epoch)
        unit = f"{self.source.unit}_s"
        seen, t0 = 0, time.perf_counter()
        for i, (x, y) in enumerate(self.source):
            x, y = _to(x, self.device, self.plan.channels_last), _to(y, self.device)
            widths = step_widths(tc, self.model, self.generator)
            parts = self._step(model, x, y, widths)
            n = _count(x) * self.info.world_size
            self.totals.add(parts, widths, n)
            seen += n
            if (i + 1) % tc.log_every == 0 or i + 1 == self.source.steps:
                bar.set_postfix(
                    {
                        "loss": f"{parts[0]['loss'].item():.3f}",
                        "lr": f"{self.scheduler.get_last_lr()[0]:.4g}",
                        unit: f"{seen / (time.perf_counter() - t0):.0f}",
                    }
                )
            bar.update(1)
        if self.plan.anneal_per_epoch:
            self.scheduler.step()
        self.totals.seconds += time.perf_counter() - t0

    def _step(
        self, model: nn.Module, x: Any, y: Any, widths: list[WidthConfig]
    ) -> list[dict[str, Tensor]]:
        """One optimizer step: every width's forward and backward (the sandwich step), the
        accumulated gradient clipped, one update of the weights and of the schedule."""
        tc, scaler = self.cfg.train, self.scaler
        self.optimizer.zero_grad(set_to_none=True)
        parts = sandwich_step(
            model,
            x,
            y,
            widths,
            self.loss,
            tc.inplace_distillation,
            self._autocast(),
            self._backward(),
            tc.smallest_weight,
        )
        if tc.grad_clip is not None:
            scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        scaler.step(self.optimizer)
        scaler.update()
        if not self.plan.anneal_per_epoch:
            self.scheduler.step()
        return parts

    def _autocast(self) -> Callable[[], contextlib.AbstractContextManager]:
        amp = self.plan.amp
        if amp is None:
            return contextlib.nullcontext
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return lambda: torch.autocast(self.device.type, dtype=dtype)

    def _backward(self) -> Callable[[Tensor], None]:
        if self.plan.amp != "fp16":
            return Tensor.backward
        scale = self.scaler.scale
        return lambda loss: scale(loss).backward()

    def _end_epoch(self, epoch: int, writer: Any) -> None:
        """Record, evaluate and save as the plan says; every rank calls it."""
        plan, cfg, main = self.plan, self.cfg, self.info.is_main
        done = epoch + 1
        last = done == plan.epochs
        evaluated = plan.eval_every is not None and (done % plan.eval_every == 0 or last)
        row: Row | None = None
        if evaluated or done % plan.record_every == 0 or last:
            lr = float(self.scheduler.get_last_lr()[0])
            row = {"epoch": done, "lr": lr, **self.totals.row(self.source.unit)}
            row.update(self.source.summary())
            self.totals = LossTotals()
        if evaluated and row is not None:  # on every rank: the ranks share the widths
            space = width_space(self.model)
            ends = [
                space.canonical(w) for w in _end_widths(cfg, space.width_min, space.width_max)
            ]
            primary = self.task.primary
            for w, m in evaluate_widths(self.evaluation, self.model, ends, self.info).items():
                row[f"{primary}@{format_width(w)}"] = m[primary]
        if main:
            if row is not None:
                self.history.append(row)
                write_csv(self.out / "metrics.csv", self.history)
                if writer is not None:
                    add_scalars(writer, row)
            if done % plan.checkpoint_every == 0 or last:
                meta = {**self.meta, "epoch": done, "history": self.history}
                checkpoint.save(self.model, self.out / CHECKPOINT, meta=meta)
                self.state.save({"epoch": done}, self.history)  # after the checkpoint: paired
            if row is not None:
                LOG.info(format_row(row))
        barrier(self.info)

    def _finish(self) -> TrainResult:
        """Evaluate the final widths (shared by the ranks); rank 0 reports and saves them."""
        space = width_space(self.model)
        widths = [space.canonical(w) for w in final_widths(self.cfg)]  # hashable: results' keys
        results = evaluate_widths(self.evaluation, self.model, widths, self.info)
        summary: Any = None
        text = ""
        if self.info.is_main:
            summary, text = self.task.report(self.model, self.cfg, results, self.out, self.history)
            meta = {
                **self.meta,
                "epoch": self.plan.epochs,
                "history": self.history,
                "results": summary,
            }
            checkpoint.save(self.model, self.out / CHECKPOINT, meta=meta)
            self.state.save({"epoch": self.plan.epochs}, self.history)
        barrier(self.info)
        return TrainResult(self.out / CHECKPOINT, summary, text)
