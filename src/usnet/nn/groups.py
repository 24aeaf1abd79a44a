"""Channel groups and spans: which channels of a tensor dimension a width keeps.

A :class:`ChannelGroup` is one slimmable dimension shared by every tensor that must agree on it.
A :class:`Span` describes one tensor dimension of a layer as segments laid end to end, each a
channel group (or a fixed number of channels) times a ``factor`` (entries per channel: H*W for
features flattened channel-major). A width keeps the leading channels of every segment, so one
segment is a prefix of the dimension (a view), and several (a concatenation, a fused q/k/v
projection) are gathered. A :class:`GroupRef` is the one-segment span of a group, the handle
:meth:`WidthSpace.group <usnet.nn.WidthSpace.group>` returns.

Spans never store a width: :meth:`Span.count` and :meth:`Span.take` read the active channel
counts they are given (the width of the current call, see :mod:`usnet.nn.space`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..errors import UsageError

#: Active channel counts of every group of a width space, in declaration order (ints, or
#: symbolic sizes while torch.compile traces).
Counts = Sequence[int]


@dataclass(frozen=True)
class ChannelGroup:
    """One slimmable dimension: ``full`` channels at ``width_max``.

    A width ``w`` keeps ``make_divisible(full * w / ratio, divisor) * ratio`` channels (the
    authors' rule; design.md): ``ratio`` keeps the count a multiple of e.g. a MobileNet v2
    expansion factor or a grouped conv's group width, ``divisor`` is the authors' 8 unless the
    model was built with another one.
    """

    name: str
    full: int
    ratio: int = 1
    slimmable: bool = True
    divisor: int = 8


class GroupSpace(Protocol):
    """What a span needs of its width space (:class:`usnet.nn.WidthSpace`)."""

    groups: list[ChannelGroup]

    @property
    def active(self) -> tuple[int, ...]: ...

    def counts(self) -> Counts: ...


class Span:
    """The channels of one tensor dimension: segments ``(group index, full, factor)``.

    A group index of -1 is a segment of ``full`` channels that never slim. ``prefix``: one
    segment, so the active entries are the leading ones (plain slicing, a view).
    """

    __slots__ = ("space", "segments", "full", "prefix", "fixed", "_index")
    space: GroupSpace | None
    segments: tuple[tuple[int, int, int], ...]

    def __init__(self, parts: Sequence[tuple[Span | int, int]]) -> None:
        """``parts``: ``(GroupRef or fixed channel count, factor)`` pairs, laid end to end."""
        segments: list[tuple[int, int, int]] = []
        space: GroupSpace | None = None
        for part, factor in parts:
            if isinstance(part, int):
                segments.append((-1, _positive(part), int(factor)))
                continue
            if len(part.segments) != 1 or part.segments[0][2] != 1:
                raise UsageError(f"a span's part must be one channel group, got {part!r}")
            if part.space is not None:
                if space is not None and part.space is not space:
                    raise UsageError("a span's channel groups must belong to one width space")
                space = part.space
            index, full, _ = part.segments[0]
            segments.append((index, full, int(factor)))
        self.space = space
        self.segments = tuple(segments)
        self.full = sum(full * f for _, full, f in self.segments)
        self.prefix = len(self.segments) == 1
        self.fixed = all(i < 0 for i, _, _ in self.segments)
        self._index: dict[tuple, Tensor] = {}

    def count(self, counts: Counts) -> int:
        """Active entries of the dimension when the groups have ``counts`` active channels."""
        if self.prefix:
            i, full, f = self.segments[0]
            return (full if i < 0 else counts[i]) * f
        return sum((full if i < 0 else counts[i]) * f for i, full, f in self.segments)

    @property
    def active(self) -> int:
        """Active entries at the width of the current call (see :attr:`WidthSpace.active`)."""
        return self.full if self.space is None else self.count(self.space.active)

    def take(self, t: Tensor, dim: int, counts: Counts) -> Tensor:
        """The active entries of ``t`` along ``dim``: a view for one segment, else gathered."""
        if self.prefix:
            n = self.count(counts)
            return t if n == t.shape[dim] else t.narrow(dim, 0, n)
        return t.index_select(dim, self.positions(counts, t.device))

    def positions(self, counts: Counts, device: torch.device) -> Tensor:
        """Positions of the active entries in the full dimension (cached per width)."""
        active = tuple(full if i < 0 else counts[i] for i, full, _ in self.segments)
        compiling = torch.compiler.is_compiling()
        key = (device, *active)
        idx = None if compiling else self._index.get(key)
        if idx is None:
            pieces, offset = [], 0
            for (_, full, f), n in zip(self.segments, active, strict=True):
                pieces.append(torch.arange(n * f, device=device) + offset)
                offset += full * f
            idx = torch.cat(pieces)
            if not compiling:
                if len(self._index) >= 64:
                    self._index.clear()
                self._index[key] = idx
        return idx

    def names(self) -> list[str]:
        """The names of the segments' groups (``"<n>"`` for fixed ones), for messages."""
        groups = self.space.groups if self.space is not None else []
        return [groups[i].name if i >= 0 else str(full) for i, full, _ in self.segments]

    def __repr__(self) -> str:
        parts = [
            (repr(name) if i >= 0 else name) + (f"x{f}" if f != 1 else "")
            for name, (i, _, f) in zip(self.names(), self.segments, strict=True)
        ]
        return f"Span({' + '.join(parts)})"


class GroupRef(Span):
    """A layer's handle on one channel group (or, with ``space=None``, on fixed channels)."""

    __slots__ = ()

    def __init__(self, space: GroupSpace | None, index: int, full: int) -> None:
        self.space = space
        self.segments = ((index if space is not None else -1, _positive(full), 1),)
        self.full = full
        self.prefix, self.fixed = True, space is None
        self._index = {}

    @property
    def index(self) -> int:
        """The group's position in its width space."""
        return self.segments[0][0]

    @property
    def group(self) -> ChannelGroup:
        if self.space is None:
            return ChannelGroup(f"fixed{self.full}", self.full, 1, False)
        return self.space.groups[self.index]

    def __repr__(self) -> str:
        return f"GroupRef({self.group.name!r}, full={self.full})"


def as_span(channels: int | Span) -> Span:
    """Layers accept a plain int for channels that never slim (e.g. the image's 3 channels)."""
    if isinstance(channels, Span):
        return channels
    return GroupRef(None, -1, _positive(channels))


def _positive(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"channels must be a positive int or a channel group, got {n!r}")
    return n
