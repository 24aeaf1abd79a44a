"""Post-statistics batch norm: compute each width's BN statistics after training (paper, design.md).

Two estimators, both *exact* averages over every calibration sample and position (pooled mean and
unbiased variance, merged across batches in float64), never moving averages:

- ``exact`` (default): each BN's statistics are those of its inputs when every BN before it
  already normalises with its own final statistics (eval mode): what the eval network sees, so
  the result does not depend on the calibration batch size. The model (or, stage by stage, the
  chain of stages its forward starts with: ``calibration_stages()``) runs *layer-major*: every
  layer runs once over all calibration batches, whose activations are kept within
  ``cache_bytes``, and a BN's statistics are pooled before any batch goes past it (about one
  forward in all). What does not fit, or cannot be traced by ``torch.fx``, is calibrated by
  truncated passes that stop at the BN being calibrated (more passes, less memory).
- ``single_pass``: the authors' recipe, one forward pass with BN normalising by batch statistics
  while every BN's inputs are pooled. About one forward; upstream batch normalisation makes deep
  layers depend slightly on the batch size.

Collected inputs stay on the CPU and go to the model's device one batch at a time. On a CPU the
batches run in chunks of a few MiB (``single_pass``: still normalised with the whole batch's
statistics), and a BN normalises its input in place where nothing else reads it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..logs import progress_bar
from ..nn import (
    USBatchNorm2d,
    Width,
    WidthConfig,
    format_width,
    modes_kept,
    unwrap_model,
    width_space,
)
from ..nn.space import is_real
from . import graph
from .moments import Moments, batch_moments, pooled

METHODS = ("exact", "single_pass")
logger = logging.getLogger("usnet")
#: The ids of the models :func:`calibrate` is running in this thread or task: their forward
#: passes inside it are calibration's own (attached calibration data must not start another).
#: Per thread/task, so a forward of the same model in another thread is an ordinary call.
CALIBRATING: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "usnet_calibrating", default=frozenset()
)


def collect_batches(loader: Iterable, num_samples: int) -> list[Tensor]:
    """The first ``num_samples`` inputs of ``loader`` (batches of ``x`` or ``(x, y, ...)``), on the
    CPU: calibration moves one batch at a time to the model's device."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UsageError(f"num_samples must be an int >= 1, got {num_samples!r}")
    batches, n = [], 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        x = x[: num_samples - n].to("cpu")
        batches.append(x)
        n += len(x)
        if n >= num_samples:
            break
    if n == 0:
        raise UsageError("the calibration loader yielded no samples")
    return batches


def _bn_layers(model: nn.Module) -> list[USBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, USBatchNorm2d)]


def needs_calibration(model: nn.Module) -> bool:
    """Whether ``model`` has per-width batch norm (:class:`USBatchNorm2d`) to calibrate; a
    network without BN (SR, RL) or with switchable BN (an S-Net's trained statistics per
    switch) runs every width as it is."""
    return bool(_bn_layers(model))


def is_calibrated(model: nn.Module, width: WidthConfig) -> bool:
    """Whether every batch norm of ``model`` has statistics for the network ``width`` selects."""
    key = width_space(model).resolve(width)[1]
    return all(bn.get_stats(key) is not None for bn in _bn_layers(model))


def _width_list(widths: WidthConfig | Iterable[WidthConfig]) -> list[WidthConfig]:
    """``widths`` as a list: one number or mapping is one width; a string is refused."""
    if isinstance(widths, (str, bytes)):
        raise UsageError(
            f"widths must be a width (a number or a {{group: number}} mapping) or a list of "
            f"them, got the string {widths!r}; parse text with usnet.nn.parse_widths({widths!r})"
        )
    if is_real(widths) or isinstance(widths, Mapping):
        return [widths]  # type: ignore[list-item]
    return list(widths)  # type: ignore[arg-type]


def default_cache_bytes(device: torch.device) -> int:
    """Half the memory free on ``device`` now (CUDA: the GPU's; otherwise the host's RAM)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # not Linux
        return 2 << 30


@dataclass
class _Run:
    """One width being calibrated: what every step needs, and the message of a bad result."""

    model: nn.Module
    key: str
    width: str
    names: dict[nn.Module, str]
    budget: float
    programs: dict[tuple[int, str], object]

    pending: dict[USBatchNorm2d, Moments] = field(default_factory=dict)

    def moments(self, bn: USBatchNorm2d) -> Moments:
        return self.pending.setdefault(bn, Moments())

    def normalise_exact(self, bn: USBatchNorm2d, inputs: list[Tensor], in_place: bool) -> list[Tensor]:
        """Layer-major ``exact``: pool the statistics from all batches, then normalise with them."""
        if bn.get_stats(self.key) is None:
            moments = Moments()
            for x in inputs:
                moments.add(x)
            self.store(bn, moments)
        stats = bn.get_stats(self.key)
        assert stats is not None
        return [bn.normalise_with(x, *stats, in_place) for x in inputs]

    def normalise_batch(self, bn: USBatchNorm2d, inputs: list[Tensor], in_place: bool) -> list[Tensor]:
        """``single_pass``: normalise the chunks of one batch with the batch's statistics (as
        training mode does: biased variance), keeping its moments."""
        n, mean, m2 = pooled([batch_moments(x) for x in inputs])
        self.moments(bn).parts.append((n, mean, m2))
        return [bn.normalise_with(x, mean, m2 / n, in_place) for x in inputs]

    def store(self, bn: USBatchNorm2d, moments: Moments) -> None:
        mean, var = moments.result()
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
            raise UsageError(
                f"calibration at width {self.width}: batch norm '{self.names.get(bn, '?')}' got "
                f"non-finite statistics (NaN or inf) from the calibration data; check the inputs "
                f"and the weights for NaN/inf. Nothing was stored for width {self.width}."
            )
        bn.set_stats(self.key, mean, var)


@torch.no_grad()
def calibrate(
    model: nn.Module,
    loader: Iterable | Sequence[Tensor],
    widths: WidthConfig | Iterable[WidthConfig],
    num_samples: int = 2000,
    method: str = "exact",
    cache_bytes: int | None = None,
) -> int:
    """Compute and store BN statistics of ``model`` at each of ``widths`` from ``num_samples``
    inputs; returns how many inputs there were (fewer where ``loader`` holds fewer).

    ``widths`` is a list of widths (numbers or ``{group: number}`` mappings), or one of them.
    Works for any width at any time after training; existing statistics of those widths are
    replaced, or kept if the calibration fails. Widths that select the same network are computed
    once; a width whose network already has the statistics of another calibrated width not named
    here keeps them, with a warning (never silently changing what that width computes).
    ``cache_bytes`` bounds the activations ``exact`` keeps on the model's device (default: half
    the free memory); ``cache_bytes=0`` also traces nothing with ``torch.fx`` (whose tracing
    patches ``nn.Module.__call__`` for the whole process): truncated passes for ``exact``, BN
    training mode for ``single_pass``, the path for a model other threads may be calling. The
    model's width, train/eval modes and weights are left as they were.
    """
    if method not in METHODS:
        raise UsageError(f"calibration method {method!r} is unknown; allowed: {list(METHODS)}")
    if cache_bytes is not None and (not isinstance(cache_bytes, int) or cache_bytes < 0):
        raise UsageError(f"cache_bytes must be an int >= 0 or None (auto), got {cache_bytes!r}")
    core = unwrap_model(model)  # run the module itself, not a DDP / torch.compile wrapper
    space = width_space(core)
    configs = [space.canonical(w) for w in _width_list(widths)]
    bns = _bn_layers(core)
    batches = collect_batches(loader, num_samples)
    device = next(core.parameters()).device
    budget = default_cache_bytes(device) if cache_bytes is None else cache_bytes
    names = {m: name for name, m in core.named_modules()}
    token = CALIBRATING.set(CALIBRATING.get() | {id(core)})
    done: set[str] = set()
    try:
        with modes_kept(core):
            for config in progress_bar(configs, desc="calibrate", unit="width"):
                with space.at(config) as plan:
                    if _kept_for_others(space.calibrated, config, plan.key, configs):
                        done.add(plan.key)
                    if bns and plan.key not in done:
                        run = _Run(core, plan.key, format_width(config), names, budget, space.programs)
                        with _kept_on_error(bns, plan.key):
                            (_exact if method == "exact" else _single_pass)(run, bns, batches, device)
                        done.add(plan.key)
                    space.calibrated[config] = plan.key
    finally:
        CALIBRATING.reset(token)
    return sum(len(x) for x in batches)


def _kept_for_others(
    calibrated: Mapping[Width, str], config: Width, key: str, asked: list[Width]
) -> bool:
    """Whether ``config`` selects a network whose statistics belong to other calibrated widths
    the caller did not name (a converted model's narrow width that slims nothing shares the
    full width's pretrained statistics): those are kept, and said so, because recomputing them
    would silently change what those widths compute."""
    others = [c for c, k in calibrated.items() if k == key and c != config and c not in asked]
    if others:
        names = ", ".join(format_width(c) for c in others)
        logger.warning(
            "width %s selects the same network as calibrated width(s) %s, so it keeps their "
            "statistics (recomputing them would change what %s computes); calibrate %s as well "
            "to recompute them",
            format_width(config), names, names, names,
        )  # fmt: skip
    return bool(others)


@contextlib.contextmanager
def _kept_on_error(bns: list[USBatchNorm2d], key: str) -> Iterator[None]:
    """Restore the statistics ``key`` had (or none) if calibrating it fails."""
    before = {bn: bn.get_stats(key) for bn in bns}
    try:
        yield
    except BaseException:
        for bn, stats in before.items():
            bn.remove_stats(key)
            if stats is not None:
                bn.set_stats(key, *stats)
        raise


#: On a CPU, calibration runs its layers on chunks of at most this many bytes of an NCHW input:
#: ops whose tensors stay in the caches run ~1.5-2x faster than on batch-32 224 px ones
#: (docs/benchmarks.md). Statistics do not depend on it: ``exact`` pools all samples and
#: ``single_pass`` normalises each chunk with its whole batch's statistics. (Channels-last
#: batches measured no faster in chunks: torch picks slower convolutions for them.)
_CPU_CHUNK_BYTES = 4 << 20


def _chunks(batches: list[Tensor], device: torch.device) -> list[Tensor]:
    if device.type != "cpu":
        return batches
    return [
        chunk
        for x in batches
        for chunk in (
            x.split(max(1, _CPU_CHUNK_BYTES * len(x) // max(x.nbytes, 1)))
            if x.is_contiguous()
            else [x]
        )
    ]


# -- exact --------------------------------------------------------------------------------------
def _exact(run: _Run, bns: list[USBatchNorm2d], batches: list[Tensor], device: torch.device) -> None:
    for bn in bns:
        bn.remove_stats(run.key)
    batches = _chunks(batches, device)
    stages = getattr(run.model, "calibration_stages", lambda: None)()
    chain = [run.model] if stages is None else list(stages)  # no stages: the model is one
    feed = graph.Feed(batches, device)
    for i, stage in enumerate(chain):
        stage.eval()
        outputs = None
        if any(bn.get_stats(run.key) is None for bn in _bn_layers(stage)):
            program = graph.Program.of(stage, run.key, run.programs) if run.budget else None
            if program is not None:
                outputs = program.run_layer_major(feed, run.budget, run.normalise_exact)
            if outputs is None:  # untraceable or over budget: the rest by truncated passes
                _truncated(run, stage, feed)
        if i + 1 < len(chain):
            feed = feed.then(stage, outputs, run.budget)
    if any(bn.get_stats(run.key) is None for bn in bns):  # BNs outside the stages
        _truncated(run, run.model, graph.Feed(batches, device))


class _Stop(Exception):
    """Ends a forward pass once the BN being calibrated has seen its input."""


def _truncated(run: _Run, module: nn.Module, feed: Iterable[Tensor]) -> None:
    """Calibrate the not yet calibrated BNs of ``module`` in execution order, one truncated pass
    over ``feed`` each (``module`` is in eval mode: calibrated BNs use their final statistics)."""
    bns = [bn for bn in _bn_layers(module) if bn.get_stats(run.key) is None]
    if not bns:
        return
    order = _execution_order(module, bns, next(iter(feed)))
    module.eval()
    for target in order:
        moments = Moments()

        def pre_hook(_m: nn.Module, args: tuple, moments: Moments = moments) -> None:
            moments.add(args[0])
            raise _Stop

        handle = target.register_forward_pre_hook(pre_hook)
        try:
            for x in feed:
                with contextlib.suppress(_Stop):
                    module(x)
        finally:
            handle.remove()
        run.store(target, moments)


def _execution_order(module: nn.Module, bns: list[USBatchNorm2d], x: Tensor) -> list[USBatchNorm2d]:
    """BNs in the order a forward pass reaches them (train mode: no statistics needed yet)."""
    seen: list[USBatchNorm2d] = []
    hooks = [bn.register_forward_pre_hook(lambda m, _: seen.append(m)) for bn in bns]
    try:
        for bn in bns:
            bn.train()
        module(x[:2] if len(x) > 1 else x)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(seen))


# -- single pass --------------------------------------------------------------------------------
def _single_pass(
    run: _Run, bns: list[USBatchNorm2d], batches: list[Tensor], device: torch.device
) -> None:
    run.model.eval()
    program = graph.Program.of(run.model, run.key, run.programs) if run.budget else None
    if program is not None:  # each batch layer-major in chunks: its own statistics, in place
        for x in batches:
            feed = graph.Feed(_chunks([x], device), device)
            program.run_layer_major(feed, math.inf, run.normalise_batch)
    else:  # untraceable: BNs in training mode hand back their batches' moments
        for bn in bns:
            bn.train()
            bn.batch_moments = []
        try:
            for x in batches:
                run.model(x.to(device, non_blocking=True))
            for bn in bns:
                for n, mean, var in bn.batch_moments or ():
                    run.moments(bn).parts.append((n, mean.double(), var.double() * (n - 1)))
        finally:
            for bn in bns:
                bn.batch_moments = None
    for bn in bns:
        if bn in run.pending:
            run.store(bn, run.pending[bn])


# -- keeping statistics ---------------------------------------------------------------------------
def clear_calibration(model: nn.Module) -> None:
    """Forget every width's statistics (e.g. after the weights changed)."""
    for bn in _bn_layers(model):
        for key in bn.calibrated_keys():
            bn.remove_stats(key)
    width_space(model).calibrated.clear()
