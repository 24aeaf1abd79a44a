"""Channel-group solving: which tensor dimensions must shrink together (union-find).

The graph analysis gives every module output channel dimension a *variable* (its full size, the
module that produces it) and records constraints between them: two variables are one channel
group (the sides of a residual add), a variable never slims (a network output, a ``keep``
module, a tensor combined with a fixed-size one), a variable's active count must be a multiple
of ``m`` (the group width of a grouped conv), or a variable *must not* slim because an operation
on it is not exact (a channel shuffle). Constraints are order-free: :meth:`Solver.solve` settles
them all at the end, names each slimmable group after the first module producing it, and
raises the first violated "must not slim" as a :class:`ConvertError` naming the groups to keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .errors import ConvertError

#: Builds the error of a violated "must not slim" from the names of the offending groups.
MakeError = Callable[[Sequence[str]], ConvertError]


@dataclass(frozen=True)
class Layout:
    """Where a tensor's slimmable channels are: dimension ``dim``, made of ``segs``.

    Each segment ``(var, factor)`` holds ``factor`` consecutive entries per channel of variable
    ``var`` (``factor`` > 1 after flattening a ``C x H x W`` map channel-major); a width keeps
    the leading entries of every segment. One segment is a prefix of the dimension; several (a
    concatenation) are not.
    """

    dim: int
    segs: tuple[tuple[int, int], ...]

    @property
    def vars(self) -> tuple[int, ...]:
        return tuple(v for v, _ in self.segs)

    def moved(self, dim: int, factor: int = 1) -> Layout:
        return Layout(dim, tuple((v, f * factor) for v, f in self.segs))


@dataclass(frozen=True)
class GroupSpec:
    """A slimmable channel group as the width space declares it."""

    name: str
    full: int
    ratio: int


class Solver:
    """Union-find over channel variables with "fixed", "multiple of" and "must not slim" marks."""

    def __init__(self) -> None:
        self.full: list[int] = []
        self.name: list[str | None] = []
        self._parent: list[int] = []
        self._fixed: list[bool] = []
        self._multiple: list[int] = []
        self._forbid: list[tuple[tuple[int, ...], MakeError]] = []

    # -- variables and constraints --------------------------------------------------------
    def new(self, full: int, name: str | None = None, fixed: bool = False) -> int:
        """A new variable of ``full`` channels, produced by module ``name`` (if any)."""
        self.full.append(int(full))
        self.name.append(name)
        self._parent.append(len(self._parent))
        self._fixed.append(fixed)
        self._multiple.append(1)
        return len(self._parent) - 1

    def find(self, v: int) -> int:
        root = v
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[v] != root:  # path compression
            self._parent[v], v = root, self._parent[v]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.full[ra] != self.full[rb]:
            raise AssertionError(f"tying channel variables of {self.full[ra]} and {self.full[rb]}")
        ra, rb = min(ra, rb), max(ra, rb)  # the earliest variable stays the root
        self._parent[rb] = ra
        self._fixed[ra] = self._fixed[ra] or self._fixed[rb]
        self._multiple[ra] = math.lcm(self._multiple[ra], self._multiple[rb])

    def fix(self, vars: Iterable[int]) -> None:
        """These channels never slim."""
        for v in vars:
            self._fixed[self.find(v)] = True

    def multiple(self, v: int, m: int) -> None:
        """The active count of ``v``'s group must be a multiple of ``m``."""
        r = self.find(v)
        self._multiple[r] = math.lcm(self._multiple[r], int(m))

    def forbid(self, vars: Iterable[int], error: MakeError) -> None:
        """These channels must not slim; if they do at the end, ``error`` is raised."""
        self._forbid.append((tuple(vars), error))

    def tie(self, a: Layout | None, b: Layout | None, error: MakeError) -> None:
        """Two layouts of one tensor dimension (``None``: channels that never slim)."""
        if a is None or b is None:
            other = a if a is not None else b
            if other is not None:
                self.fix(other.vars)
            return
        same = len(a.segs) == len(b.segs) and all(
            fa == fb and self.full[va] == self.full[vb]
            for (va, fa), (vb, fb) in zip(a.segs, b.segs, strict=True)
        )
        if same:
            for (va, _), (vb, _) in zip(a.segs, b.segs, strict=True):
                self.union(va, vb)
        else:
            self.forbid(a.vars + b.vars, error)

    # -- solution -------------------------------------------------------------------------
    def slimmable(self, v: int) -> bool:
        """Valid after :meth:`solve`: whether ``v``'s group slims."""
        return not self._fixed[self.find(v)]

    def solve(self) -> dict[int, GroupSpec]:
        """Settle every constraint: the slimmable groups by root variable, in creation order.

        A group that no module produces (only parameters, fixed inputs) never slims. Raises the
        first violated "must not slim" as a :class:`ConvertError`.
        """
        producer: dict[int, str] = {}
        for v in range(len(self._parent)):
            name = self.name[v]
            if name is not None:
                producer.setdefault(self.find(v), name)
        roots = sorted({self.find(v) for v in range(len(self._parent))})
        for r in roots:
            if r not in producer:
                self._fixed[r] = True
        for vars, error in self._forbid:
            bad = list(dict.fromkeys(self.find(v) for v in vars if self.slimmable(v)))
            if bad:
                raise error([producer[r] for r in bad])
        return {
            r: GroupSpec(producer[r], self.full[r], self._multiple[r])
            for r in roots
            if not self._fixed[r]
        }

    def group_name(self, v: int) -> str | None:
        """The module producing ``v``'s group first (for messages before solving)."""
        r = self.find(v)
        return next(
            (self.name[u] for u in range(len(self._parent)) if self.find(u) == r and self.name[u]),
            None,
        )
