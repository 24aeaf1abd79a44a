"""The base of every slimmable layer: the tensors a call's width selects, and one eval cache.

A layer computes its *active tensors* (weight, bias, statistics, group count, ...) from the
active channel counts of the current call. Training and autograd compute them afresh on every
call (slicing is cheap next to the kernels, and gradients must flow). In eval without autograd
they are cached per network key, which saves the Python cost of slicing on every call, under
one policy:

- only *views* are cached (``w[:out, :in]``): a view always shows its tensor's current values,
  so in-place writes, also through ``p.data`` as EMA, SWA or pruning do (which leave no trace
  on ``p._version``), are seen;
- an entry keeps the tensors it was cut from and their storage addresses, checked on every
  hit, so a tensor given new storage (``p.data = t``, ``swap_tensors``) is cut afresh (the
  cached view keeps the old storage alive, so its address cannot be reused). Assigning or
  deleting any attribute of the layer (a new ``Parameter``, new statistics, a
  parametrization, ``load_state_dict(assign=True)``) drops its cache, so a hit need not read
  its tensors through ``nn.Module.__getattr__``: that read was 6 % of a batch-1 ViT's
  forward. A layer whose tensors belong to a child module (an attention's ``qkv``) reads
  them on every hit instead (``_own_sources = False``);
- dtype and device moves (``_apply``) and copies (``deepcopy``) drop the cache;
- a layer whose active tensors are *copies* (gathered channels of a concatenation, a weight
  normalised over its active slice), or whose tensors are new on every read (a
  parametrization), is never cached: a copy would go stale on a ``p.data`` write. Such layers
  pay a gather per eval call.

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
    _own_sources: bool = True  # _sources() are attributes of this layer (see the docstring)

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
        cache = self.__dict__.get("_eval_cache")
        hit = None if cache is None else cache.get(plan.key)
        if hit is not None:
            sources, stamp, value = hit
            if self._own_sources or _same(sources, self._sources()):
                for t, address in zip(sources, stamp, strict=True):
                    if t is not None and t.data_ptr() != address:
                        break
                else:
                    return value
        return self._fill(plan)

    def _fill(self, plan: Any) -> Any:
        """Compute the active tensors of ``plan`` and cache them if they may be (the docstring)."""
        sources = self._sources()
        value = self._compute(plan.active, plan.key)
        if not _same(sources, self._sources()):  # new tensors on every read: never cached
            return value
        cache: dict[str, tuple[tuple, tuple[int, ...], Any]] = self.__dict__.setdefault(
            "_eval_cache", {}
        )
        if len(cache) > 64:
            cache.clear()
        stamp = tuple(0 if t is None else t.data_ptr() for t in sources)
        cache[plan.key] = (sources, stamp, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_eval_cache", None)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        self.__dict__.pop("_eval_cache", None)
        super().__delattr__(name)

    def forget_cache(self) -> None:
        """Drop cached active tensors (e.g. after new statistics were stored)."""
        self.__dict__.pop("_eval_cache", None)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        self.forget_cache()  # views of the old tensors
        return super()._apply(fn, *args, **kwargs)

    def __setstate__(self, state: dict) -> None:  # deepcopy: the copy has its own tensors
        super().__setstate__(state)
        self.forget_cache()


def _same(a: tuple[Tensor | None, ...], b: tuple[Tensor | None, ...]) -> bool:
    """Whether two reads of a layer's tensors gave the same tensor objects."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x is not y:
            return False
    return True


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
