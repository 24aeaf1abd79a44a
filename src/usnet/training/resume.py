"""A run folder's resume state: one atomic ``resume.pt`` beside the checkpoint, for every task.

``resume.pt`` holds everything a resumed run restores: the model's weights, the optimizer,
the learning-rate schedule, the AMP scaler, the run's generators (widths, minibatches, actions),
the global RNG states, the counters (epoch, step...) and history, and the training config. It is
written *after* the checkpoint and records the checkpoint's weights id, so a crash between the
two writes is detected (and a checkpoint that was only calibrated since is still its own); as it holds the weights too, a resumed run never pairs one save's weights
with another save's optimizer state. It loads with ``torch.load(weights_only=True)`` onto the
CPU (RNG states must be CPU byte tensors; the optimizer's state follows its parameters).

A resumed run must train what was trained: :func:`config_changes` names the fields of the config
that differ (the model, the optimizer, the data...), and resuming refuses them in one line. Only
fields that do not change the training trajectory may differ (:data:`RESUMABLE`), plus the run's
length (``train.epochs``, ``train.total_steps``): a longer run continues.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint
from ..errors import UsageError
from ..io import check_folder, locked
from ..logs import LOG

RESUME = "resume.pt"
CHECKPOINT = "checkpoint"
FORMAT = "usnet-resume"
#: What a run writes into its folder (``--overwrite`` removes them before training).
RUN_FILES = (
    CHECKPOINT,
    RESUME,
    "metrics.csv",
    "results.json",
    "config.yaml",
    *(f"spectrum.{suffix}" for suffix in ("csv", "json", "md", "png")),
)
#: Config fields (dotted prefixes) a resumed run may change: they do not change what is trained.
#: What every resume state holds (a file lacking one is damaged).
_FIELDS = (
    "format",
    "checkpoint_id",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "generators",
    "rng",
    "counters",
    "history",
    "config",
)
RESUMABLE = (
    "output",
    "eval",
    "calibrate",
    "train.epochs",
    "train.total_steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.threads",
    "train.device",
    "data.root",
    "data.train_dir",
    "data.test_dir",
    "data.num_workers",
    "data.val_batch_size",
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted path; an empty mapping has none (``{}`` -> ``{"a": 1}`` is one
    change, ``a``, not also the mapping itself)."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"path (old -> new)"`` for every field that differs, except :data:`RESUMABLE` ones."""
    a, b = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(a.keys() | b.keys()):
        if any(key == p or key.startswith(p + ".") for p in RESUMABLE):
            continue
        old, new = a.get(key, "(unset)"), b.get(key, "(unset)")
        if old != new:
            changes.append(f"{key} ({old!r} -> {new!r})")
    return changes


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an existing one (its checkpoint would be lost) unless
    ``overwrite``; ``resume`` needs the old run's state. Raises in one line that offers only
    what can work: a run without ``resume.pt`` cannot be continued."""
    check_folder(out, "output.dir")
    can_resume = (out / RESUME).is_file()
    if resume:
        if overwrite:
            raise UsageError("--resume continues the run in output.dir; --overwrite replaces it")
        if not can_resume and (out / CHECKPOINT).exists():
            raise UsageError(
                f"cannot resume {out}: it holds a {CHECKPOINT}/ but no {RESUME} (the run stopped "
                f"between writing the two, or the file was removed), and only {RESUME} holds the "
                "optimizer and schedule a run continues from; keep the checkpoint and train into "
                "another folder with --set output.dir=DIR, or start afresh with --overwrite"
            )
        if not can_resume:
            raise FileNotFoundError(f"cannot resume: {out / RESUME} does not exist (no run there)")
        return
    found = [name for name in RUN_FILES[:2] if (out / name).exists()]
    if found and not overwrite:
        options = "continue it with --resume, " if can_resume else ""
        why = "" if can_resume else f" (without {RESUME} it cannot be continued)"
        raise UsageError(
            f"{out} already holds a training run ({', '.join(found)}){why}; {options}train into "
            "another folder with --set output.dir=DIR, or replace it with --overwrite"
        )


@contextlib.contextmanager
def hold_run_folder(out: Path) -> Iterator[None]:
    """Be the only process training into ``out`` for the block: a second ``usnet train`` into
    the same folder is refused in one line instead of silently replacing the first one's run
    (the lock is released when this process ends, however it ends)."""
    busy = (
        f"output.dir {out}: another usnet process is training into this folder; wait for it to "
        "finish, or train into another folder with --set output.dir=DIR"
    )
    with locked(out, busy=busy):
        yield


def clear_run_folder(out: Path) -> None:
    """Remove what a run wrote into ``out`` (for ``--overwrite``); other files stay."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU of the saving machine; a resume on fewer GPUs restores theirs
        states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in states])


class ResumeState:
    """The stateful objects of one run, saved to and restored from ``folder/resume.pt``.

    ``scheduler`` and ``scaler`` may be None; ``generators`` names the run's own
    ``torch.Generator`` objects (e.g. ``{"widths": g}``); ``config`` is the run's validated
    config as plain data (``to_dict(cfg)``).
    """

    def __init__(
        self,
        folder: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        scaler: Any = None,
        generators: Mapping[str, torch.Generator] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder, self.path = Path(folder), Path(folder) / RESUME
        self.model, self.optimizer = model, optimizer
        self.scheduler, self.scaler = scheduler, scaler
        self.generators = dict(generators or {})
        self.config = dict(config or {})

    def save(self, counters: Mapping[str, Any], history: list | None = None) -> Path:
        """Write ``resume.pt`` atomically; call it right *after* saving the checkpoint, whose
        weights id it records."""
        ckpt = self.folder / CHECKPOINT
        state = {
            "format": FORMAT,
            "checkpoint_id": checkpoint.weights_id(checkpoint.read_info(ckpt)) if ckpt.is_dir() else None,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "rng": _rng_state(),
            "counters": dict(counters),
            "history": list(history or []),
            "config": self.config,
        }
        return checkpoint.save_state(state, self.path)

    def load(self) -> tuple[dict[str, Any], list]:
        """Restore every object from ``resume.pt``; returns its counters and history.

        Raises ``ValueError`` in one line when the file is not a resume state or the config
        differs in a field that changes what is trained.
        """
        state = checkpoint.load_state(self.path, map_location="cpu")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise UsageError(
                f"cannot resume: {self.path} is not a usnet resume state (written by another "
                "version?); start afresh with --overwrite"
            )
        missing = sorted(set(_FIELDS) - set(state))
        if missing:
            raise UsageError(
                f"cannot resume: {self.path} is damaged (it lacks {', '.join(missing)}); start "
                "afresh with --overwrite"
            )
        changes = config_changes(state["config"], self.config)
        if changes:
            raise UsageError(
                f"cannot resume {self.folder}: the config differs from the run's in "
                f"{'; '.join(changes)}; restore those values, or start a new run (another "
                "output.dir, or --overwrite)"
            )
        self._check_pair(state)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])  # moves its state to the weights
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None:
                self.scaler.load_state_dict(state["scaler"])
            for name, g in self.generators.items():
                g.set_state(state["generators"][name].cpu())
            _set_rng_state(state["rng"])
            return dict(state["counters"]), list(state["history"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            # what a damaged or hand-edited file raises: its entries do not fit this run
            raise UsageError(
                f"cannot resume: {self.path} does not fit this run ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200] if str(e) else ''}); start afresh with --overwrite"
            ) from None

    def _check_pair(self, state: Mapping[str, Any]) -> None:
        """Whether the checkpoint beside ``resume.pt`` is the one saved with it: if not (a
        crash came between the two writes), the run resumes from ``resume.pt``'s own weights."""
        ckpt = self.folder / CHECKPOINT
        found = checkpoint.weights_id(checkpoint.read_info(ckpt)) if ckpt.is_dir() else None
        if found != state["checkpoint_id"]:
            LOG.warning(
                f"{ckpt} is not the checkpoint saved with {self.path} (a run stopped between "
                f"the two writes); resuming from {self.path} at {dict(state['counters'])}"
            )
