"""Post-statistics batch norm: compute each width's BN statistics after training (paper, design.md).

Two estimators, both *exact* averages over every calibration sample and position (pooled mean and
unbiased variance, merged across batches with Chan's formula), never moving averages:

- ``exact`` (default): layer by layer in execution order, each BN's statistics are computed from
  its inputs when every BN before it already normalises with its own final statistics (eval
  mode). These are the statistics the eval network really sees, so the result does not depend
  on the calibration batch size. Costs about ``L/2`` forward passes for ``L`` BN layers (each pass
  stops at the BN being calibrated).
- ``single_pass``: the authors' recipe, one forward pass with BN normalising by batch statistics
  while every BN's inputs are pooled. About the cost of one forward; upstream batch
  normalisation makes deep layers depend slightly on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .nn import USBatchNorm2d, WidthConfig, width_space

METHODS = ("exact", "single_pass")


class _Moments:
    """Running count, mean and sum of squared deviations per channel (float64, Chan's merge)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, x: Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        nb = x.numel() // x.shape[1]
        x = x.float()
        mean_b = x.mean(dims, keepdim=True)
        var_b = (x - mean_b).square().mean(dims)  # two-pass: ~7x faster than var_mean on NCHW
        mean_b, m2_b = mean_b.flatten().double(), var_b.double() * nb
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        total = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / total)
        self.m2 = self.m2 + m2_b + delta.square() * (self.n * nb / total)
        self.n = total

    def result(self) -> tuple[Tensor, Tensor]:
        assert self.mean is not None and self.m2 is not None
        return self.mean.float(), (self.m2 / max(self.n - 1, 1)).float()


class _Stop(Exception):
    """Ends a forward pass once the BN being calibrated has seen its input."""


def collect_batches(loader: Iterable, num_samples: int) -> list[Tensor]:
    """The first ``num_samples`` inputs of ``loader`` (batches of ``x`` or ``(x, y, ...)``)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    batches, n = [], 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        x = x[: num_samples - n]
        batches.append(x)
        n += len(x)
        if n >= num_samples:
            break
    if n == 0:
        raise ValueError("the calibration loader yielded no samples")
    return batches


def _bn_layers(model: nn.Module) -> list[USBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, USBatchNorm2d)]


def is_calibrated(model: nn.Module, width: WidthConfig) -> bool:
    """Whether every batch norm of ``model`` has statistics for the network ``width`` selects."""
    key = width_space(model).resolve(width)[1]
    return all(bn.get_stats(key) is not None for bn in _bn_layers(model))


@torch.no_grad()
def calibrate(
    model: nn.Module,
    loader: Iterable | Sequence[Tensor],
    widths: Iterable[WidthConfig],
    num_samples: int = 2000,
    method: str = "exact",
    progress: bool = True,
) -> None:
    """Compute and store BN statistics of ``model`` at each of ``widths`` from ``num_samples`` inputs.

    Works for any width at any time after training; existing statistics of those widths are
    replaced. Widths that select the same network are computed once. The model's width,
    train/eval modes and weights are left as they were.
    """
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is unknown; allowed: {list(METHODS)}")
    space = width_space(model)
    configs = [space.canonical(w) for w in widths]
    bns = _bn_layers(model)
    batches = collect_batches(loader, num_samples)
    device = next(model.parameters()).device
    batches = [x.to(device, non_blocking=True) for x in batches]
    modes = {m: m.training for m in model.modules()}
    old, space_guard = space.config, getattr(model, "_usnet_calibrating", False)
    model._usnet_calibrating = True
    done: dict[str, bool] = {}
    try:
        for config in tqdm(configs, desc="calibrate", unit="width", disable=not progress):
            space.set(config)
            if bns and space.key not in done:
                if method == "exact":
                    _exact(model, bns, batches, space.key)
                else:
                    _single_pass(model, bns, batches, space.key)
                done[space.key] = True
            space.calibrated[config] = space.key
    finally:
        model._usnet_calibrating = space_guard
        space.set(old)
        for m, training in modes.items():
            m.train(training)


def _execution_order(
    module: nn.Module, bns: list[USBatchNorm2d], x: Tensor
) -> list[USBatchNorm2d]:
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


def _exact(model: nn.Module, bns: list[USBatchNorm2d], batches: list[Tensor], key: str) -> None:
    for bn in bns:
        bn.remove_stats(key)
    stages = model.calibration_stages() if hasattr(model, "calibration_stages") else None
    if stages is not None:
        # The forward starts with a chain of stages: calibrate stage by stage, feeding each stage
        # the cached outputs of the calibrated stages before it, so a truncated pass runs only
        # from its stage's start (about two forwards in all instead of L/2).
        inputs = batches
        for stage in stages:
            _exact_truncated(stage, inputs, key)
            stage.eval()
            inputs = [stage(x) for x in inputs]
    if any(bn.get_stats(key) is None for bn in bns):
        _exact_truncated(model, batches, key)  # BNs outside the stages, or a model without stages


def _exact_truncated(module: nn.Module, batches: list[Tensor], key: str) -> None:
    """Calibrate the not yet calibrated BNs of ``module`` in execution order, one truncated pass each."""
    bns = [bn for bn in _bn_layers(module) if bn.get_stats(key) is None]
    if not bns:
        return
    order = _execution_order(module, bns, batches[0])
    module.eval()
    for target in order:
        moments = _Moments()

        def pre_hook(_m: nn.Module, args: tuple, moments: _Moments = moments) -> None:
            moments.add(args[0])
            raise _Stop

        handle = target.register_forward_pre_hook(pre_hook)
        try:
            for x in batches:
                try:
                    module(x)
                except _Stop:
                    pass
        finally:
            handle.remove()
        target.set_stats(key, *moments.result())


def _single_pass(
    model: nn.Module, bns: list[USBatchNorm2d], batches: list[Tensor], key: str
) -> None:
    model.eval()
    moments = {bn: _Moments() for bn in bns}
    hooks = [bn.register_forward_pre_hook(lambda m, a: moments[m].add(a[0])) for bn in bns]
    for bn in bns:
        bn.train()  # normalise with batch statistics, as the authors' calibration does
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    for bn, m in moments.items():
        if m.mean is not None:
            bn.set_stats(key, *m.result())


def clear_calibration(model: nn.Module) -> None:
    """Forget every width's statistics (e.g. after the weights changed)."""
    for bn in _bn_layers(model):
        for key in bn.calibrated_keys():
            bn.remove_stats(key)
    width_space(model).calibrated.clear()


def attach_calibration_data(
    model: nn.Module, loader: Iterable, num_samples: int = 2000, method: str = "exact"
) -> None:
    """Calibrate any uncalibrated width on first use in eval mode, from ``loader``'s samples.

    The samples are read once and kept; the statistics are cached on the model like those of
    :func:`calibrate`.
    """
    batches = collect_batches(loader, num_samples)
    old = getattr(model, "_usnet_calibration_hook", None)
    if old is not None:
        old.remove()

    bns = _bn_layers(model)  # found once: no module walk on every forward

    def pre_hook(module: nn.Module, _args: tuple) -> None:
        if module.training or getattr(module, "_usnet_calibrating", False):
            return
        space = width_space(module)
        if any(bn.get_stats(space.key) is None for bn in bns):
            calibrate(module, batches, [space.config], num_samples, method, progress=False)

    model._usnet_calibration_hook = model.register_forward_pre_hook(pre_hook)
