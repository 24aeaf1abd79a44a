"""Checks every task's width-sampling settings share (classification, super-resolution, RL)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from torch import nn

from ..nn import WidthConfig, parse_widths, width_space
from .errors import ConfigError
from .errors import show as _show
from .typed import Section


def check_width_sampling(
    sampling: str, num_widths: int, widths: Sequence[float | Mapping[str, float]] | None
) -> None:
    """``sandwich`` needs ``num_widths >= 2``; ``switches``/``fixed`` need ``widths`` (``fixed``:
    exactly one, a number or a per-group ``{group: width}`` with ``"*"`` for the rest;
    ``switches``: numbers, no repeats); the others take no ``widths``. Whether a per-group
    width names this model's groups and lies in its range is the model's to say
    (:func:`check_model_widths`). Raises :class:`ConfigError`."""
    if sampling == "sandwich" and num_widths < 2:
        raise ConfigError("num_widths", f"must be >= 2 for sandwich sampling, got {num_widths}")
    if sampling in ("switches", "fixed"):
        if not widths:
            raise ConfigError(
                "widths", f"{sampling!r} sampling needs a list of widths, got {_show(widths)}"
            )
        if sampling == "fixed" and len(widths) != 1:
            raise ConfigError(
                "widths",
                f"'fixed' sampling trains exactly one width (a number or one {{group: width}} "
                f"mapping), got {len(widths)}: {_show(widths)}",
            )
        per_group = [w for w in widths if isinstance(w, Mapping)]
        if per_group and sampling != "fixed":
            raise ConfigError(
                "widths",
                f"a per-group width ({_show(per_group[0])}) is only allowed with 'fixed' "
                f"sampling (one network of that channel configuration); {sampling!r} takes "
                "numbers",
            )
        if sampling == "switches" and len(set(widths)) != len(widths):  # numbers only here
            raise ConfigError("widths", f"has repeated widths: {widths}")
    elif widths is not None:
        raise ConfigError(
            "widths",
            f"is only used by 'switches' and 'fixed' sampling; set it to null for {sampling!r} "
            f"(got {_show(widths)})",
        )


def width_grid(widths: str | float | Sequence[float]) -> list[float]:
    """A config's width grid: ``"start:stop:step"``, ``"a,b,c"``, one number or a list."""
    if isinstance(widths, str):
        return parse_widths(widths)
    if isinstance(widths, (int, float)):
        return [float(widths)]
    return [float(w) for w in widths]


def check_width_grid(widths: str | float | Sequence[float]) -> None:
    """A grid must parse, be non-empty and hold positive widths. Raises :class:`ConfigError`."""
    try:
        grid = width_grid(widths)
    except ValueError as e:
        raise ConfigError("widths", str(e)) from None
    if not grid:
        raise ConfigError("widths", "needs at least one width")
    bad = [w for w in grid if not w > 0]
    if bad:
        raise ConfigError("widths", f"must be positive, got {bad}")


class WidthGrid(Section):
    """A config section with a ``widths`` grid (``"start:stop:step"``, ``"a,b,c"``, a number or a
    list of numbers), validated, and parsed as :attr:`grid`."""

    widths: str | float | list[float] = "0.25,0.5,1.0"

    @property
    def grid(self) -> list[float]:
        """The widths as a list of floats."""
        return width_grid(self.widths)

    def check(self) -> None:
        super().check()
        check_width_grid(self.widths)


def check_model_widths(model: nn.Module, widths: Mapping[str, Iterable[WidthConfig]]) -> None:
    """Every width of a config (``{"eval.widths": [...], ...}``) must be one ``model`` runs at:
    the model says what is wrong (range, switches, unknown channel groups), the error names the
    config field (and a per-group width's value, which the model's message does not repeat)."""
    space = width_space(model)
    for path, ws in widths.items():
        for w in ws:
            try:
                space.canonical(w)
            except ValueError as e:
                shown = f"{_show(dict(w))}: " if isinstance(w, Mapping) else ""
                raise ConfigError(path, f"{shown}{e}") from None
