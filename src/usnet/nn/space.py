"""Channel groups and width control.

A model owns one :class:`WidthSpace`. Every slimmable layer holds :class:`GroupRef` handles into
it and reads its active channel counts from ``space.active`` (a tuple swapped in one assignment),
so the forward pass does no rounding and no module-tree walk. Switching width resolves a width
config to a tuple of active counts once and caches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from torch import nn

from ..errors import UsageError
from .rounding import active_channels

#: The canonical, hashable form of a width config: a float, or ``((group, width), ...)``.
Width = float | tuple[tuple[str, float], ...]
#: A uniform width (one number) or a non-uniform one (group name -> number; ``"*"`` sets the
#: rest); the canonical form is accepted too.
WidthConfig = float | Mapping[str, float] | Width

_DIGITS = 6  # widths are compared after rounding to this many decimals
#: The most widths :func:`parse_widths` builds (a typo such as step 1e-9 must not hang or OOM).
MAX_WIDTHS = 10_000


@dataclass(frozen=True)
class ChannelGroup:
    """One slimmable dimension shared by every tensor that must agree on it."""

    name: str
    full: int
    ratio: int = 1
    slimmable: bool = True


class GroupRef:
    """A layer's handle on a channel group: reads the group's current active count."""

    __slots__ = ("space", "index", "full")

    def __init__(self, space: WidthSpace | None, index: int, full: int) -> None:
        self.space, self.index, self.full = space, index, full

    @property
    def active(self) -> int:
        return self.full if self.space is None else self.space.active[self.index]

    @property
    def group(self) -> ChannelGroup:
        if self.space is None:
            return ChannelGroup(f"fixed{self.full}", self.full, 1, False)
        return self.space.groups[self.index]

    def __repr__(self) -> str:
        return f"GroupRef({self.group.name!r}, full={self.full})"


def as_ref(channels: int | GroupRef) -> GroupRef:
    """Layers accept a plain int for channels that never slim (e.g. the image's 3 channels)."""
    if isinstance(channels, GroupRef):
        return channels
    if not isinstance(channels, int) or channels < 1:
        raise UsageError(f"channels must be a positive int or a GroupRef, got {channels!r}")
    return GroupRef(None, -1, channels)


class WidthSpace:
    """The channel groups of one model, its width range and its current width."""

    def __init__(self, width_min: float, width_max: float = 1.0) -> None:
        if not 0 < width_min <= width_max:
            raise UsageError(
                f"width range must satisfy 0 < width_min <= width_max, got [{width_min}, {width_max}]"
            )
        self.width_min, self.width_max = float(width_min), float(width_max)
        self.groups: list[ChannelGroup] = []
        self.allowed: tuple[float, ...] | None = None  # a fixed width list (switchable BN)
        self._cache: dict[Width, tuple[tuple[int, ...], str]] = {}
        self.config: Width = self.width_max
        self.active: tuple[int, ...] = ()
        self.key: str = ""
        #: Width configs whose batch-norm statistics were calibrated, with their network's key.
        self.calibrated: dict[Width, str] = {}
        #: Calibration's traced graphs of this model's modules, per (module id, network key)
        #: (usnet.calibration.graph.Program.of: checked against the module before each use).
        self.programs: dict[tuple[int, str], object] = {}

    def __getstate__(self) -> dict:  # a copy (deepcopy, pickle) traces its own modules
        return {**self.__dict__, "programs": {}}

    # -- building -------------------------------------------------------------------------
    def group(self, name: str, full: int, ratio: int = 1, slimmable: bool = True) -> GroupRef:
        """Declare a channel group of ``full`` channels (at ``width_max``) and return its handle."""
        if any(g.name == name for g in self.groups):
            raise UsageError(f"channel group {name!r} is declared twice")
        self.groups.append(ChannelGroup(name, int(full), int(ratio), slimmable))
        self._cache.clear()
        self.active = self.active + (int(full),)
        self.key = plan_key(self.active)
        return GroupRef(self, len(self.groups) - 1, int(full))

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
        value = round(value, _DIGITS)
        if self.allowed is not None and value not in self.allowed:
            raise UsageError(
                f"{field} {w!r} is not one of this model's switches {list(self.allowed)}"
            )
        return value

    def resolve(self, width: WidthConfig) -> tuple[tuple[int, ...], str]:
        """Active channel counts of every group at ``width`` and the network's key (cached)."""
        return self._resolve(self.canonical(width))

    def _resolve(self, config: Width) -> tuple[tuple[int, ...], str]:
        hit = self._cache.get(config)
        if hit is None:
            if len(self._cache) >= 4096:  # training draws a new random width every step
                self._cache.clear()
            per_group, uniform = (dict(config), 0.0) if isinstance(config, tuple) else (None, config)
            active = tuple(
                active_channels(
                    g.full,
                    per_group[g.name] if per_group is not None else uniform,
                    g.ratio,
                    self.width_max,
                )
                if g.slimmable
                else g.full
                for g in self.groups
            )
            hit = self._cache[config] = (active, plan_key(active))
        return hit

    def set(self, width: WidthConfig) -> None:
        config = self.canonical(width)
        self.active, self.key = self._resolve(config)
        self.config = config

    def channels(self, width: WidthConfig | None = None) -> dict[str, int]:
        """Active channels per group name at ``width`` (default: the current width)."""
        active = self.active if width is None else self.resolve(width)[0]
        return {g.name: a for g, a in zip(self.groups, active, strict=True)}


def is_real(w: object) -> bool:
    """Whether ``w`` can be a width: an int or float (numpy's too), not a bool or a string."""
    return isinstance(w, numbers.Real) and not isinstance(w, bool)


def plan_key(active: tuple[int, ...]) -> str:
    """A short stable name for the network a width selects (widths that round alike share it)."""
    return hashlib.sha1(",".join(map(str, active)).encode()).hexdigest()[:12]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The US model itself, inside torch.compile (``._orig_mod``) and DDP (``.module``) wrappers.

    The wrappers are peeled first: attribute lookups on torch.compile's wrapper fall through to
    the inner module, so "has a width space" alone would return the wrapper itself.
    """
    for _ in range(8):
        inner = _wrapped(model)
        if inner is None:
            if isinstance(getattr(model, "width_space", None), WidthSpace):
                return model
            inner = getattr(model, "module", None)  # other wrappers, e.g. an EMA copy
            if not isinstance(inner, nn.Module):
                break
        model = inner
    raise TypeError(f"{type(model).__name__} is not a US model: it has no width_space")


def _wrapped(model: nn.Module) -> nn.Module | None:
    """The module inside a torch.compile, DistributedDataParallel or DataParallel wrapper."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    # No import of torch._dynamo (slow): if it was never imported, nothing was compiled.
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    if dynamo is not None and isinstance(model, dynamo.OptimizedModule):
        return model._orig_mod
    return None


def width_space(model: nn.Module) -> WidthSpace:
    """The :class:`WidthSpace` of a US model (also through DDP / torch.compile wrappers)."""
    space = unwrap_model(model).width_space
    assert isinstance(space, WidthSpace)  # unwrap_model checked it
    return space


def set_width(model: nn.Module, width: WidthConfig) -> None:
    """Run ``model`` at ``width`` from now on (uniform float or ``{group: width}``)."""
    width_space(model).set(width)


def get_width(model: nn.Module) -> Width:
    """The model's current width config (canonical form)."""
    return width_space(model).config


@contextlib.contextmanager
def width(model: nn.Module, w: WidthConfig) -> Iterator[nn.Module]:
    """``with usnet.width(model, 0.5): ...`` runs the block at 0.5 and restores the old width."""
    space = width_space(model)
    old = space.config
    space.set(w)
    try:
        yield model
    finally:
        space.set(old)


@contextlib.contextmanager
def modes_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every module's own train/eval mode after the block (``model.train(b)`` inside
    sets them all alike; some modules may have had another mode before)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The model's channel groups with their full sizes, in build order."""
    return list(width_space(model).groups)


def parse_widths(text: str) -> list[float]:
    """Parse ``"0.35:1.0:0.025"`` (start:stop:step, stop included) or ``"0.25,0.5,1.0"``.

    Every number must be finite, and a grid may hold at most :data:`MAX_WIDTHS` widths (a typo
    such as step 1e-9 must not hang building hundreds of millions of them).
    """
    text = text.strip()
    grid = ":" in text
    try:
        values = [float(p) for p in text.split(":" if grid else ",") if grid or p.strip()]
        if grid:
            start, stop, step = values
            if step <= 0 or stop < start:
                raise ValueError
    except ValueError:
        raise UsageError(
            f"widths {text!r} must be 'start:stop:step' with step > 0 and stop >= start (e.g. "
            f"0.35:1.0:0.025) or a comma list (e.g. 0.25,0.5,1.0)"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"widths {text!r}: every number must be finite (no inf or nan)")
    span = (stop - start) / step if grid else len(values) - 1  # may overflow to inf
    if not span + 1 <= MAX_WIDTHS:
        raise UsageError(
            f"widths {text!r} make {f'{span + 1:,.0f}' if span < math.inf else 'too many'} "
            f"widths; at most {MAX_WIDTHS:,} are allowed"
            + (" (use a larger step)" if grid else "")
        )
    if grid:
        count = math.floor(span + 1e-6) + 1
        return [round(start + i * step, _DIGITS) for i in range(count)]
    return [round(v, _DIGITS) for v in values]


def format_width(config: Width) -> str:
    """A width config as text: ``0.5`` or ``stem=0.5,stage1=0.75``."""
    if isinstance(config, tuple):
        return ",".join(f"{k}={v:g}" for k, v in config)
    return f"{config:g}"
