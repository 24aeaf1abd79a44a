"""What every US model shares: a width space, a task, an input size and a norm factory."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..nn import GroupRef, SwitchableBatchNorm2d, USBatchNorm2d, WidthSpace


class USModel(nn.Module):
    """Base class of US models.

    ``width_space`` holds the channel groups and the current width; ``input_size`` is the
    ``(C, H, W)`` the model was designed for (profiling uses it); ``switches`` turns every BN
    into a switchable BN over that fixed width list (the 4-switch baseline).
    """

    task = "classification"

    def __init__(
        self,
        width_min: float,
        width_max: float,
        input_size: tuple[int, int, int],
        switches: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.width_space = WidthSpace(width_min, width_max)
        self.input_size = tuple(input_size)
        self.switches = None if switches is None else tuple(float(w) for w in switches)

    def norm(self, channels: int | GroupRef) -> nn.Module:
        if self.switches is not None:
            return SwitchableBatchNorm2d(channels, self.width_space, self.switches)
        return USBatchNorm2d(channels, self.width_space)

    def finish(self) -> None:
        """Call at the end of ``__init__``: start at full width, and fix switches if any."""
        space = self.width_space
        if self.switches is not None:
            for w in self.switches:
                space.canonical(w)  # each switch must lie in the range
            space.allowed = tuple(round(w, 6) for w in self.switches)
        space.set(space.width_max)

    def calibration_stages(self) -> nn.Sequential | None:
        """Modules the forward applies in turn to the input first, if any (speeds up calibration).

        Override to return e.g. ``self.features`` when ``forward(x)`` starts with
        ``self.features(x)``; BNs outside it are calibrated with full truncated passes.
        """
        return None

    @property
    def width_range(self) -> tuple[float, float]:
        return self.width_space.width_min, self.width_space.width_max
