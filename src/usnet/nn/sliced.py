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
  hit, so a tensor given new storage (``p.data = t``) is cut afresh (the cached view keeps the
  old storage alive, so its address cannot be reused). A layer whose tensors are its own
  parameters and buffers (``_names``) checks on a hit that its ``_parameters``/``_buffers``
  entries are still those tensors: a plain dict read, because reading them through
  ``nn.Module.__getattr__`` was 6 % of a batch-1 ViT's forward, and the dict catches what
  bypasses ``__setattr__`` (``torch.func.functional_call`` and ``register_parameter`` write
  the dict); an attention checks its ``qkv`` child's dict the same way (``_owner``). A layer
  whose tensors are a parametrization's reads :meth:`_sources` on every hit instead.
  Assigning or deleting any attribute of the layer, and loading a state dict (which may swap
  tensors, and a swapped tensor must have no other references), drop its cache;
- dtype and device moves (``_apply``) drop the cache; copies (``deepcopy``, pickling) leave it
  behind (a cached view of a parameter stepped since cannot even be deep-copied);
- a layer whose active tensors are *copies* (gathered channels of a concatenation, a weight
  normalised over its active slice), or whose tensors are new on every read (a
  parametrization), is never cached: a copy would go stale on a ``p.data`` write. Such layers
  pay a gather per eval call.

Under ``torch.compile`` nothing is cached (the graph holds the slicing).

**Frozen** (``with usnet.frozen(model):``, :meth:`WidthSpace.frozen`): the user promises that no
parameter or buffer changes inside the block, as ``torch.nn.utils.parametrize.cached()`` asks,
so an eval call keeps its active tensors per network as *contiguous* tensors (copies where a
view is strided: an attention's kept q/k/v rows gathered into one weight) and checks nothing on
a hit. Strided views and the hit's checks are what a slimmed network pays at batch 1 beyond its
dense export (docs/benchmarks_vit.md). The promise is checked when the block ends: a layer whose
tensors changed version, storage or identity raises, naming it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .groups import Counts
from .space import WidthSpace

#: What a layer keeps in its ``__dict__`` per network (dropped together by ``forget_cache``).
_CACHES = ("_eval_cache", "_frozen_cache", "_frozen_stamps")


class Sliced(nn.Module):
    """A layer whose tensors depend on the width of the call (see the module docstring).

    Subclasses set ``space``, implement :meth:`_compute` and :meth:`_sources`, and set
    ``_views`` (whether :meth:`_compute` returns only views of :meth:`_sources`).
    """

    space: WidthSpace | None  # None: every span is fixed (a layer that never slims)
    _views: bool = True
    #: The names, in the ``_parameters`` or ``_buffers`` of :meth:`_owner`, of what
    #: :meth:`_sources` reads (empty: :meth:`_sources` is read on every hit instead).
    _names: tuple[str, ...] = ()

    def _compute(self, counts: Counts, key: str) -> Any:
        """The active tensors at ``counts`` (network ``key``)."""
        raise NotImplementedError

    def _sources(self) -> tuple[Tensor | None, ...]:
        """The tensors :meth:`_compute` cuts views from (their storage validates the cache)."""
        raise NotImplementedError

    def _homes(self, key: str) -> tuple[str, ...]:
        """The names of every own tensor the active tensors of network ``key`` are cut from."""
        return self._names

    def _owner(self) -> nn.Module:
        """The module whose ``_parameters``/``_buffers`` hold :meth:`_homes` (a child, such as
        an attention's ``qkv``, is as good: replacing the child is an assignment to this layer,
        which drops the cache)."""
        return self

    def _current(self) -> Any:
        """The active tensors of the current call."""
        space = self.space
        if space is None:
            return self._compute((), "")
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._compute(space.counts(), space.key)
        plan = space.plan
        if space.freezes:
            frozen = self.__dict__.get("_frozen_cache")
            value = None if frozen is None else frozen.get(plan.key)
            return self._freeze(plan) if value is None else value
        if not self._views:
            return self._compute(plan.active, plan.key)
        cache = self.__dict__.get("_eval_cache")
        hit = None if cache is None else cache.get(plan.key)
        if hit is not None:
            checks, value = hit
            if checks is None:  # a child's tensors: read them
                sources, stamps, active = value
                if _same(sources, self._sources()) and _unmoved(sources, stamps):
                    return active
            else:
                for home, name, t, address in checks:
                    if home.get(name) is not t or (t is not None and t.data_ptr() != address):
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
        cache: dict[str, tuple[Any, Any]] = self.__dict__.setdefault("_eval_cache", {})
        if len(cache) > 64:
            cache.clear()
        checks = self._checks(plan.key)
        if checks is None:
            stamps = tuple(0 if t is None else t.data_ptr() for t in sources)
            cache[plan.key] = (None, (sources, stamps, value))
        else:
            cache[plan.key] = (checks, value)
        return value

    def _frozen(self, counts: Counts, key: str) -> Any:
        """The active tensors at ``counts`` as a frozen block keeps them: contiguous."""
        return _contiguous(self._compute(counts, key))

    def _watched(self) -> list[Tensor]:
        """The tensors whose change inside a frozen block makes its cached tensors stale."""
        return [*self.parameters(), *self.buffers()]

    def _freeze(self, plan: Any) -> Any:
        """Compute, keep and return the frozen active tensors of ``plan``; the first one records
        the :meth:`_watched` tensors' identity, version and storage for :meth:`thaw`, later ones
        check them."""
        value = self._frozen(plan.active, plan.key)
        state = self.__dict__
        if "_frozen_stamps" not in state:
            state["_frozen_stamps"] = tuple((t, t._version, t.data_ptr()) for t in self._watched())
        elif not self._unchanged():  # a miss is rare: check there (functional_call's tensors)
            state["_frozen_breach"] = True
        cache: dict[str, Any] = state.setdefault("_frozen_cache", {})
        if len(cache) > 16:  # each network's copies stay until the block ends: bound them
            cache.clear()
        cache[plan.key] = value
        return value

    def thaw(self) -> bool:
        """Drop the frozen block's tensors; whether the layer's tensors were unchanged since
        they were cut (False: results computed after the change used the old values)."""
        breached = self.__dict__.pop("_frozen_breach", False)
        unchanged = self._unchanged()
        self.__dict__.pop("_frozen_stamps", None)
        self.__dict__.pop("_frozen_cache", None)
        return unchanged and not breached

    def _unchanged(self) -> bool:
        """Whether the :meth:`_watched` tensors are those the frozen tensors were cut from, with
        the same version and storage (True where nothing was cut)."""
        stamps = self.__dict__.get("_frozen_stamps")
        if stamps is None:
            return True
        now = self._watched()
        return len(now) == len(stamps) and all(
            t is s and t._version == version and t.data_ptr() == address
            for t, (s, version, address) in zip(now, stamps, strict=True)
        )

    def _drop_cache(self) -> None:
        """:meth:`forget_cache` where an attribute of the layer changes (an assignment, a mode):
        a change made before it, since the frozen tensors were cut, is kept as a breach
        for :meth:`thaw`, since calls in between used the old tensors."""
        if not self._unchanged():
            self.__dict__["_frozen_breach"] = True
        self.forget_cache()

    def _checks(self, key: str) -> tuple[tuple[dict, str, Tensor | None, int], ...] | None:
        """(dict, name, tensor, address) of each tensor of network ``key`` (None where one is
        not in its owner's ``_parameters`` or ``_buffers``: a parametrization's)."""
        names = self._homes(key)
        if not names:
            return None
        owner = self._owner()
        checks = []
        for name in names:
            home = owner._parameters if name in owner._parameters else owner._buffers
            if name not in home:
                return None
            t = home[name]
            checks.append((home, name, t, 0 if t is None else t.data_ptr()))
        return tuple(checks)

    def __setattr__(self, name: str, value: Any) -> None:
        # model.eval() on an eval model (a serving loop's habit) keeps the cached tensors
        if name != "training" or self.__dict__.get("training") != value:
            self._drop_cache()
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        self._drop_cache()
        super().__delattr__(name)

    def forget_cache(self) -> None:
        """Drop cached active tensors (e.g. after new statistics were stored)."""
        for name in _CACHES:
            self.__dict__.pop(name, None)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        # views of the old tensors; unchecked, since a tied tensor may already be converted
        self.forget_cache()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003
        # its views hold the tensors a swapping load must swap; unchecked, since a parametrized
        # tensor's list (SliceChannels's owner) loads before the layer does
        self.forget_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:  # deepcopy, pickle: the copy has its own tensors
        state = dict(super().__getstate__())
        for name in (*_CACHES, "_frozen_breach"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.forget_cache()


def _contiguous(value: Any) -> Any:
    """``value`` (a tensor, or a tuple of tensors and other values) with contiguous tensors."""
    if isinstance(value, Tensor):
        return value.contiguous()
    if isinstance(value, tuple):
        return tuple(v.contiguous() if isinstance(v, Tensor) else v for v in value)
    return value


def _same(a: tuple[Tensor | None, ...], b: tuple[Tensor | None, ...]) -> bool:
    """Whether two reads of a layer's tensors gave the same tensor objects."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x is not y:
            return False
    return True


def _unmoved(sources: tuple[Tensor | None, ...], stamps: tuple[int, ...]) -> bool:
    """Whether each tensor still has the storage address it had when its views were cut."""
    for t, address in zip(sources, stamps, strict=True):
        if t is not None and t.data_ptr() != address:
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
