"""The base of every slimmable layer: the tensors a call's width selects, and one eval cache.

A layer computes its *active tensors* (weight, bias, statistics, group count, ...) from the
active channel counts of the current call. Training and autograd compute them afresh on every
call (slicing is cheap next to the kernels, and gradients must flow). In eval without autograd
they are cached per network key, which saves the Python cost of slicing on every call, under
one policy:

- only *views* are cached (``w[:out, :in]``): a view always shows its tensor's current values,
  so in-place writes, also through ``p.data`` as EMA, SWA or pruning do (which leave no trace
  on ``p._version``), are seen;
- an entry is checked against the storage addresses of the tensors it was cut from, so a tensor
  given new storage (``p.data = t``, a new ``Parameter``, new statistics) is cut afresh (the
  cached view keeps the old storage alive, so its address cannot be reused);
- dtype and device moves (``_apply``) and copies (``deepcopy``) drop the cache;
- a layer whose active tensors are *copies* (gathered channels of a concatenation, a weight
  normalised over its active slice) is never cached: a copy would go stale on a ``p.data``
  write. Such layers pay a gather per eval call.

Under ``torch.compile`` nothing is cached (the graph holds the slicing).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .groups import Counts
from .space import WidthSpace


class Sliced(nn.Module):
    """A layer whose tensors depend on the width of the call (see the module docstring).

    Subclasses set ``space``, implement :meth:`_compute` and :meth:`_sources`, and set
    ``_views`` (whether :meth:`_compute` returns only views of :meth:`_sources`).
    """

    space: WidthSpace | None  # None: every span is fixed (a layer that never slims)
    _views: bool = True

    def _compute(self, counts: Counts, key: str) -> Any:
        """The active tensors at ``counts`` (network ``key``)."""
        raise NotImplementedError

    def _sources(self) -> tuple[Tensor | None, ...]:
        """The tensors :meth:`_compute` cuts views from (their storage validates the cache)."""
        raise NotImplementedError

    def _current(self) -> Any:
        """The active tensors of the current call."""
        space = self.space
        if space is None:
            return self._compute((), "")
        if (
            self.training
            or not self._views
            or torch.is_grad_enabled()
            or torch.compiler.is_compiling()
        ):
            return self._compute(space.counts(), space.key)
        plan = space.plan
        stamp = tuple(0 if t is None else t.data_ptr() for t in self._sources())
        cache: dict[str, tuple[tuple[int, ...], Any]] = self.__dict__.setdefault(
            "_eval_cache", {}
        )
        hit = cache.get(plan.key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = self._compute(plan.active, plan.key)
        if len(cache) > 64:
            cache.clear()
        cache[plan.key] = (stamp, value)
        return value

    def forget_cache(self) -> None:
        """Drop cached active tensors (e.g. after new statistics were stored)."""
        self.__dict__.pop("_eval_cache", None)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        self.forget_cache()  # views of the old tensors
        return super()._apply(fn, *args, **kwargs)

    def __setstate__(self, state: dict) -> None:  # deepcopy: the copy has its own tensors
        super().__setstate__(state)
        self.forget_cache()


def space_of(*spans: Any) -> WidthSpace | None:
    """The width space of a layer's spans (None where every span is fixed channels)."""
    for span in spans:
        if span is not None and span.space is not None:
            return span.space
    return None


def current(space: WidthSpace | None) -> tuple[Counts, str]:
    """The active counts and network key of the current call (a fixed layer's: none)."""
    if space is None:
        return (), ""
    plan = space.plan
    return plan.active, plan.key


def dense_param(t: Tensor) -> nn.Parameter:
    """A parameter of a dense export: a copy of ``t`` (a slice must not alias the US weights)."""
    return nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)
