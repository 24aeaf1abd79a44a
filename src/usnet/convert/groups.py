"""Channel-group solving: which tensor dimensions must shrink together (union-find).

The graph analysis gives every module output channel dimension a *variable* (its full size, the
module that produces it) and records constraints between them: two variables are one channel
group (the sides of a residual add), one is a fixed multiple of another (a depthwise conv with a
channel multiplier added to a plain conv: "B = 2 x A", a pixel shuffle's input and output), a
variable never slims (a network output, a ``keep`` module, a tensor combined with a fixed-size
one), a variable's active count must be a multiple of ``m`` (the group width of a grouped conv),
or a variable *must not* slim because an operation on it is not exact (a channel shuffle).
Constraints are order-free: :meth:`Solver.solve` settles them all at the end, names each
slimmable group after the first module producing it, and returns *every* violated "must not
slim" with the modules whose keeping resolves them all, so one conversion reports everything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

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
    """A slimmable channel group as the width space declares it.

    ``divisor``: its own rounding unit (0: the model's, e.g. the authors' 8). Attention heads
    round to whole heads (1): a ViT's 3 or 6 heads would never slim in multiples of 8.
    ``kind``: what the group is in a transformer (``"heads"``, ``"embedding"``, ``"mlp"``) or
    ``"channels"``; metadata for widths by kind, no effect on the layers.
    """

    name: str
    full: int
    ratio: int
    divisor: int = 0
    kind: str = ""


@dataclass
class Solution:
    """The slimmable groups by root variable, and what stops the model from converting."""

    groups: dict[int, GroupSpec]
    #: every violated "must not slim", one per distinct message
    errors: list[ConvertError] = field(default_factory=list)
    #: the groups that slim but must not, and the modules whose ``keep`` fixes them
    bad: list[int] = field(default_factory=list)
    keep: tuple[str, ...] = ()


class Solver:
    """Weighted union-find over channel variables: each variable is ``mult`` times its parent's
    channels; with "fixed", "multiple of" and "must not slim" marks on the roots."""

    def __init__(self) -> None:
        self.full: list[int] = []
        self.name: list[str | None] = []
        self._parent: list[int] = []
        self._mult: list[int] = []
        self._fixed: list[bool] = []
        self._reason: list[str] = []
        self._multiple: list[int] = []
        self._heads: list[bool] = []
        self._forbid: list[tuple[tuple[int, ...], MakeError]] = []

    # -- variables and constraints --------------------------------------------------------
    def new(
        self,
        full: int,
        name: str | None = None,
        fixed: bool = False,
        reason: str = "",
        heads: bool = False,
    ) -> int:
        """A new variable of ``full`` channels, produced by module ``name`` (if any); ``heads``:
        whole attention heads (or blocks a reshape splits the channels into), rounded to whole
        ones."""
        self.full.append(int(full))
        self.name.append(name)
        self._parent.append(len(self._parent))
        self._mult.append(1)
        self._fixed.append(fixed)
        self._reason.append(reason)
        self._multiple.append(1)
        self._heads.append(heads)
        return len(self._parent) - 1

    def resolve(self, v: int) -> tuple[int, int]:
        """``v``'s root and how many of ``v``'s channels there are per channel of the root."""
        path = []
        while self._parent[v] != v:
            path.append(v)
            v = self._parent[v]
        total = 1
        for u in reversed(path):  # nearest the root first; compress the path on the way
            total *= self._mult[u]
            self._parent[u], self._mult[u] = v, total
        return v, (self._mult[path[0]] if path else 1)

    def find(self, v: int) -> int:
        return self.resolve(v)[0]

    def segments(self, layout: Layout) -> tuple[tuple[int, int], ...]:
        """``layout``'s segments over root variables (derived groups folded into the factor)."""
        out = []
        for v, f in layout.segs:
            root, mult = self.resolve(v)
            out.append((root, f * mult))
        return tuple(out)

    def relate(self, a: int, fa: int, b: int, fb: int) -> bool:
        """Segments ``(a, fa)`` and ``(b, fb)`` hold the same entries at every width; ``False``
        when no integer relation between the two groups can say so."""
        (ra, ma), (rb, mb) = self.resolve(a), self.resolve(b)
        p, q = fa * ma, fb * mb
        if ra == rb:
            return p == q
        if self.full[ra] * p != self.full[rb] * q:
            return False
        if p == q:
            parent, child, k = min(ra, rb), max(ra, rb), 1  # the earliest variable stays root
        elif p % q == 0:
            parent, child, k = ra, rb, p // q
        elif q % p == 0:
            parent, child, k = rb, ra, q // p
        else:
            return False
        self._parent[child], self._mult[child] = parent, k
        self._fixed[parent] = self._fixed[parent] or self._fixed[child]
        self._reason[parent] = self._reason[parent] or self._reason[child]
        self._heads[parent] = self._heads[parent] or self._heads[child]
        m = self._multiple[child]
        self._multiple[parent] = math.lcm(self._multiple[parent], m // math.gcd(m, k))
        return True

    def fix(self, vars: Iterable[int], reason: str = "") -> None:
        """These channels never slim (``reason`` says why, for the partial-conversion note)."""
        for v in vars:
            r = self.find(v)
            self._fixed[r] = True
            self._reason[r] = self._reason[r] or reason

    def multiple(self, v: int, m: int) -> None:
        """The active count of ``v`` must be a multiple of ``m``."""
        r, k = self.resolve(v)
        m = int(m) // math.gcd(int(m), k)
        self._multiple[r] = math.lcm(self._multiple[r], m)

    def forbid(self, vars: Iterable[int], error: MakeError) -> None:
        """These channels must not slim; if they do at the end, ``error`` is reported."""
        self._forbid.append((tuple(vars), error))

    def tie(self, a: Layout | None, b: Layout | None, error: MakeError, reason: str = "") -> None:
        """Two layouts of one tensor dimension (``None``: channels that never slim)."""
        if a is None or b is None:
            other = a if a is not None else b
            if other is not None:
                self.fix(other.vars, reason)
            return
        sa, sb = self.segments(a), self.segments(b)
        if sa == sb:
            return
        if len(sa) == len(sb) and all(
            self.relate(va, fa, vb, fb) for (va, fa), (vb, fb) in zip(sa, sb, strict=True)
        ):
            return
        self.forbid(a.vars + b.vars, error)

    # -- solution -------------------------------------------------------------------------
    def slimmable(self, v: int) -> bool:
        """Valid after :meth:`solve`: whether ``v``'s group slims."""
        return not self._fixed[self.find(v)]

    def ratio(self, v: int) -> int:
        """The multiple ``v``'s group's active count must be (its root's channels)."""
        return self._multiple[self.find(v)]

    def heads(self, v: int) -> bool:
        """Whether ``v``'s group counts whole heads (rounded to whole ones, divisor 1)."""
        return self._heads[self.find(v)]

    def divisor(self, v: int) -> int:
        """``v``'s group's own rounding unit (0: the model's divisor)."""
        return 1 if self.heads(v) else 0

    def reason(self, v: int) -> str:
        """Why ``v``'s group is fixed (after :meth:`solve`; ``""`` when it is not)."""
        r = self.find(v)
        return self._reason[r] if self._fixed[r] else ""

    def solve(self, never_slims: Callable[[int, int, int], bool] | None = None) -> Solution:
        """Settle every constraint: the slimmable groups by root variable, in creation order.

        A group that no module produces (only parameters, fixed inputs) never slims. Every
        violated "must not slim" is returned, not raised, so that all are reported at once; a
        group that ``never_slims(full, ratio, divisor)`` (no wider than its divisor, say)
        violates none.
        """
        producer = self.producers()
        roots = sorted({self.find(v) for v in range(len(self._parent))})
        for r in roots:
            if r not in producer:
                self._fixed[r] = True
        errors: dict[str, ConvertError] = {}
        bad: dict[int, None] = {}
        for vars, make in self._forbid:
            found = [
                r
                for r in dict.fromkeys(self.find(v) for v in vars)
                if not self._fixed[r]
                and not (
                    never_slims
                    and never_slims(self.full[r], self._multiple[r], self.divisor(r))
                )
            ]
            if found:
                error = make([producer[r] for r in found])
                errors.setdefault(str(error), error)
                bad.update(dict.fromkeys(found))
        groups = {
            r: GroupSpec(producer[r], self.full[r], self._multiple[r], self.divisor(r))
            for r in roots
            if not self._fixed[r]
        }
        keep = tuple(dict.fromkeys(producer[r] for r in bad))
        return Solution(groups, list(errors.values()), list(bad), keep)

    def producers(self) -> dict[int, str]:
        """The first module producing each group, by root."""
        producer: dict[int, str] = {}
        for v in range(len(self._parent)):
            name = self.name[v]
            if name is not None:
                producer.setdefault(self.find(v), name)
        return producer
