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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from torch import nn

from .rounding import active_channels

#: A uniform width (one float) or a non-uniform one (group name -> float; ``"*"`` sets the rest).
WidthConfig = float | Mapping[str, float]
#: The canonical, hashable form of a :data:`WidthConfig`.
Width = float | tuple[tuple[str, float], ...]

_DIGITS = 6  # widths are compared after rounding to this many decimals


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
        raise ValueError(f"channels must be a positive int or a GroupRef, got {channels!r}")
    return GroupRef(None, -1, channels)


class WidthSpace:
    """The channel groups of one model, its width range and its current width."""

    def __init__(self, width_min: float, width_max: float = 1.0) -> None:
        if not 0 < width_min <= width_max:
            raise ValueError(
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

    # -- building -------------------------------------------------------------------------
    def group(self, name: str, full: int, ratio: int = 1, slimmable: bool = True) -> GroupRef:
        """Declare a channel group of ``full`` channels (at ``width_max``) and return its handle."""
        if any(g.name == name for g in self.groups):
            raise ValueError(f"channel group {name!r} is declared twice")
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
                raise ValueError(
                    f"unknown channel group(s) {unknown} in width config; allowed: "
                    f"{sorted(names)} and '*' for the rest"
                )
            missing = sorted(names - set(width))
            if missing and "*" not in width:
                raise ValueError(
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
        try:
            value = float(w)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{field} must be a number, got {w!r}") from None
        if not math.isfinite(value) or not (
            self.width_min - 1e-9 <= value <= self.width_max + 1e-9
        ):
            raise ValueError(
                f"{field} {w!r} is outside the model's width range "
                f"[{self.width_min}, {self.width_max}]"
            )
        value = round(value, _DIGITS)
        if self.allowed is not None and value not in self.allowed:
            raise ValueError(
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
            per_group = dict(config) if isinstance(config, tuple) else None
            active = tuple(
                active_channels(
                    g.full,
                    per_group[g.name] if per_group is not None else config,
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


def plan_key(active: tuple[int, ...]) -> str:
    """A short stable name for the network a width selects (widths that round alike share it)."""
    return hashlib.sha1(",".join(map(str, active)).encode()).hexdigest()[:12]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The US model itself, inside DDP (``.module``) / torch.compile (``._orig_mod``) wrappers."""
    for _ in range(4):
        if isinstance(getattr(model, "width_space", None), WidthSpace):
            return model
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            break
        model = inner
    raise TypeError(f"{type(model).__name__} is not a US model: it has no width_space")


def width_space(model: nn.Module) -> WidthSpace:
    """The :class:`WidthSpace` of a US model (also through DDP / torch.compile wrappers)."""
    return unwrap_model(model).width_space


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


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The model's channel groups with their full sizes, in build order."""
    return list(width_space(model).groups)


def parse_widths(text: str) -> list[float]:
    """Parse ``"0.35:1.0:0.025"`` (start:stop:step, stop included) or ``"0.25,0.5,1.0"``."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = int(math.floor((stop - start) / step + 1e-6)) + 1
            return [round(start + i * step, _DIGITS) for i in range(count)]
        return [round(float(p), _DIGITS) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(
            f"widths {text!r} must be 'start:stop:step' (e.g. 0.35:1.0:0.025) or a comma list "
            f"(e.g. 0.25,0.5,1.0)"
        ) from None


def format_width(config: Width) -> str:
    """A width config as text: ``0.5`` or ``stem=0.5,stage1=0.75``."""
    if isinstance(config, tuple):
        return ",".join(f"{k}={v:g}" for k, v in config)
    return f"{config:g}"
