"""The width space of a model: its channel groups, its width range, and the width of each call.

A model owns one :class:`WidthSpace`. A width config resolves once (cached) to a :class:`Plan`:
the active channel count of every group and the network's key. Layers read the plan of the
current call from :attr:`WidthSpace.plan`, so the forward pass does no rounding and no
module-tree walk.

**The width is a value of the call, not of the model.** :meth:`WidthSpace.at` (``with
usnet.width(model, w):``) sets the plan for the current thread or asyncio task only, through a
:class:`contextvars.ContextVar`; :meth:`WidthSpace.set` (``usnet.set_width``) sets the model's
default, used where no ``at`` is active. So any number of threads run one model at different
widths at once. The variable maps a space's ``id`` to its plan: an entry exists only while its
``with`` block runs, so a collected space never leaves one behind.

Under ``torch.compile`` layers read the counts as the sizes of per-plan zero-stride tensors
(:meth:`WidthSpace.counts`): dynamo's automatic dynamic shapes then trace one graph whose channel
counts are symbolic, instead of specialising (and recompiling) on every width's integers.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UsageError
from .groups import ChannelGroup, Counts, GroupRef
from .rounding import active_channels

#: The canonical, hashable form of a width config: a float, or ``((group, width), ...)``.
Width = float | tuple[tuple[str, float], ...]
#: A uniform width (one number) or a non-uniform one (group name -> number; ``"*"`` sets the
#: rest); the canonical form is accepted too.
WidthConfig = float | Mapping[str, float] | Width

DIGITS = 6  # widths are compared after rounding to this many decimals

#: The plans of the current call, by ``id`` of their width space (never mutated: replaced).
_CALL_PLANS: contextvars.ContextVar[dict[int, Plan] | None] = contextvars.ContextVar(
    "usnet_call_plans", default=None
)


@dataclass(frozen=True, eq=False)
class Plan:
    """The network a width config selects: every group's active channels and the network key.

    ``sizes`` holds one zero-stride tensor of ``active[i]`` elements per group (no memory), whose
    sizes torch.compile treats as dynamic.
    """

    config: Width
    active: tuple[int, ...]
    key: str
    sizes: tuple[Tensor, ...]


class WidthSpace:
    """The channel groups of one model, its width range and its default width."""

    def __init__(self, width_min: float, width_max: float = 1.0) -> None:
        if not 0 < width_min <= width_max:
            raise UsageError(
                f"width range must satisfy 0 < width_min <= width_max, got [{width_min}, {width_max}]"
            )
        self.width_min, self.width_max = float(width_min), float(width_max)
        self.groups: list[ChannelGroup] = []
        self.allowed: tuple[float, ...] | None = None  # a fixed width list (switchable BN)
        self._plans: dict[Width, Plan] = {}
        self._carriers: dict[tuple[int, int], Tensor] = {}
        self._default = self._plan(self.width_max, ())
        #: Width configs whose batch-norm statistics were calibrated, with their network's key.
        self.calibrated: dict[Width, str] = {}
        #: Calibration's traced graphs of this model's modules, per (module id, network key)
        #: (usnet.calibration.graph.Program.of: checked against the module before each use).
        self.programs: dict[tuple[int, str], object] = {}
        #: One token per open :meth:`frozen` block (layers keep contiguous tensors while any is).
        self.freezes: list[object] = []

    def __getstate__(self) -> dict:  # a copy traces its own modules and is in no frozen block
        return {**self.__dict__, "programs": {}, "freezes": []}

    # -- building -------------------------------------------------------------------------
    def group(
        self, name: str, full: int, ratio: int = 1, slimmable: bool = True, divisor: int = 8
    ) -> GroupRef:
        """Declare a channel group of ``full`` channels (at ``width_max``) and return its handle."""
        if any(g.name == name for g in self.groups):
            raise UsageError(f"channel group {name!r} is declared twice")
        self.groups.append(ChannelGroup(name, int(full), int(ratio), slimmable, int(divisor)))
        self._plans.clear()
        self._default = self._plan(self._default.config, self._default.active + (int(full),))
        return GroupRef(self, len(self.groups) - 1, int(full))

    # -- the width of the current call ------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The plan of the current call: the innermost :meth:`at` of this thread/task, else the
        default (:meth:`set`)."""
        plans = _CALL_PLANS.get()
        return self._default if plans is None else plans.get(id(self), self._default)

    @property
    def config(self) -> Width:
        return self.plan.config

    @property
    def active(self) -> tuple[int, ...]:
        return self.plan.active

    @property
    def key(self) -> str:
        return self.plan.key

    def counts(self) -> Counts:
        """Active channel counts of the current call: ints, or symbolic sizes under compile."""
        plan = self.plan
        if torch.compiler.is_compiling():
            return [s.shape[0] for s in plan.sizes]
        return plan.active

    def set(self, width: WidthConfig) -> None:
        """The default width: what every call runs at outside an :meth:`at` block."""
        self._default = self.plan_of(width)

    @contextlib.contextmanager
    def at(self, width: WidthConfig) -> Iterator[Plan]:
        """Run the block's calls (this thread or task only) at ``width``."""
        plan = self.plan_of(width)
        token = _CALL_PLANS.set({**(_CALL_PLANS.get() or {}), id(self): plan})
        try:
            yield plan
        finally:
            _CALL_PLANS.reset(token)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Mark the model frozen for the block (see ``usnet.frozen``, which also checks and
        drops the layers' tensors when the last block ends). Blocks nest and may overlap
        across threads: the model is frozen while any is open."""
        token = object()
        self.freezes.append(token)
        try:
            yield
        finally:
            self.freezes.remove(token)

    # -- widths ---------------------------------------------------------------------------
    def canonical(self, width: WidthConfig) -> Width:
        """Validate a width config and return its hashable canonical form."""
        if isinstance(width, tuple):  # already canonical: ((group, width), ...)
            width = dict(width)
        if isinstance(width, Mapping):
            names = {g.name for g in self.groups if g.slimmable}
            unknown = sorted(set(width) - names - {"*"})
            if unknown:
                raise UsageError(
                    f"unknown channel group(s) {unknown} in width config; allowed: "
                    f"{sorted(names)} and '*' for the rest"
                )
            missing = sorted(names - set(width))
            if missing and "*" not in width:
                raise UsageError(
                    f"width config misses channel group(s) {missing}; name them or give '*'"
                )
            rest = width.get("*")
            items = tuple(
                (g.name, self._check(width.get(g.name, rest), g.name))
                for g in self.groups
                if g.slimmable
            )
            if len({w for _, w in items}) == 1:  # a mapping that is uniform is the float
                return items[0][1] if items else self.width_max
            return items
        return self._check(width, "width")

    def _check(self, w: object, field: str) -> float:
        if not is_real(w):
            what = "width" if field == "width" else f"width of channel group {field!r}"
            alternative = " or a {channel group: number} mapping" if field == "width" else ""
            raise UsageError(
                f"{what} must be a real number (int or float, not bool or str){alternative}, "
                f"got {w!r} ({type(w).__name__})"
            )
        value = float(w)  # type: ignore[arg-type]
        if not math.isfinite(value) or not (
            self.width_min - 1e-9 <= value <= self.width_max + 1e-9
        ):
            raise UsageError(
                f"{field} {w!r} is outside the model's width range "
                f"[{self.width_min}, {self.width_max}]"
            )
        value = round(value, DIGITS)
        if self.allowed is not None and value not in self.allowed:
            raise UsageError(
                f"{field} {w!r} is not one of this model's switches {list(self.allowed)}"
            )
        return value

    def plan_of(self, width: WidthConfig) -> Plan:
        """The plan of ``width`` (validated; cached per canonical config)."""
        config = self.canonical(width)
        plan = self._plans.get(config)
        if plan is None:
            if len(self._plans) >= 4096:  # training draws a new random width every step
                self._plans.clear()
            plan = self._plans[config] = self._plan(config, self._active(config))
        return plan

    def resolve(self, width: WidthConfig) -> tuple[tuple[int, ...], str]:
        """Active channel counts of every group at ``width`` and the network's key."""
        plan = self.plan_of(width)
        return plan.active, plan.key

    def _active(self, config: Width) -> tuple[int, ...]:
        """Each group's active count at ``config``; groups alike in size, ratio and divisor
        (most of a network's) are rounded once, which keeps a first-time width cheap."""
        per_group = dict(config) if isinstance(config, tuple) else None
        rounded: dict[tuple[int, float, int, int], int] = {}
        out = []
        for g in self.groups:
            if not g.slimmable:
                out.append(g.full)
                continue
            w: float = per_group[g.name] if per_group is not None else config  # type: ignore[assignment]
            key = (g.full, w, g.ratio, g.divisor)
            n = rounded.get(key)
            if n is None:
                n = rounded[key] = active_channels(g.full, w, g.ratio, self.width_max, g.divisor)
            out.append(n)
        return tuple(out)

    def _plan(self, config: Width, active: tuple[int, ...]) -> Plan:
        sizes = []
        for i, n in enumerate(active):
            carrier = self._carriers.get((i, n))
            if carrier is None:  # one per (group, count): shared by plans, never aliased
                carrier = self._carriers[(i, n)] = torch.empty_strided((n,), (0,))
            sizes.append(carrier)
        return Plan(config, active, plan_key(active), tuple(sizes))

    def channels(self, width: WidthConfig | None = None) -> dict[str, int]:
        """Active channels per group name at ``width`` (default: the current call's)."""
        active = self.active if width is None else self.resolve(width)[0]
        return {g.name: a for g, a in zip(self.groups, active, strict=True)}


def is_real(w: object) -> bool:
    """Whether ``w`` can be a width: an int or float (numpy's too), not a bool or a string."""
    return isinstance(w, numbers.Real) and not isinstance(w, bool)


def plan_key(active: tuple[int, ...]) -> str:
    """A short stable name for the network a width selects (widths that round alike share it)."""
    return hashlib.sha1(",".join(map(str, active)).encode()).hexdigest()[:12]
