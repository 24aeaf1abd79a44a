"""Calibration on first use: :func:`attach_calibration_data`, safe for a model that serves
several threads at once.

Calibrating runs the model's own modules in ways other calls must not see: it hooks its batch
norms and switches their modes (and it calibrates with ``cache_bytes=0``, which traces nothing:
``torch.fx`` patches ``nn.Module.__call__`` for the whole process while it traces, so another
thread's call would reach the tracer before any gate of the model's). So a width is calibrated only while no other call of
the model runs, and other calls wait for it: every eval forward of the model holds a shared
turn of a :class:`_Gate`, and calibrating takes it alone. A call at an uncalibrated width that
waited finds its width calibrated by the other thread, or calibrates it then. (A plain
:func:`usnet.calibrate` takes no turn: it must not run while other threads call the model.)
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable
from typing import Any

from torch import nn

from ..nn import Width, unwrap_model, width_space
from .core import CALIBRATING, _bn_layers, calibrate, collect_batches

#: The gates whose shared turn this thread or task holds, innermost last (a forward of the
#: model inside one of its own forwards takes no second turn).
_HOLDING: contextvars.ContextVar[tuple[_Gate, ...]] = contextvars.ContextVar(
    "usnet_calibration_turns", default=()
)


class _Gate:
    """Shared turns for the model's calls, an exclusive one for calibrating (writers first, so
    a steady stream of calls cannot keep a calibration waiting forever)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._calls = 0
        self._writing = False
        self._waiting_writers = 0

    def enter_call(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._waiting_writers)
            self._calls += 1

    def leave_call(self) -> None:
        with self._cond:
            self._calls -= 1
            self._cond.notify_all()

    def enter_alone(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            try:
                self._cond.wait_for(lambda: not self._writing and not self._calls)
            finally:
                self._waiting_writers -= 1
            self._writing = True

    def leave_alone(self) -> None:
        with self._cond:
            self._writing = False
            self._cond.notify_all()


def attach_calibration_data(
    model: nn.Module, loader: Iterable, num_samples: int = 2000, method: str = "exact"
) -> None:
    """Calibrate any uncalibrated width on first use in eval mode, from ``loader``'s samples.

    The samples are read once and kept on the CPU; the statistics are cached on the model like
    those of :func:`~usnet.calibration.calibrate`. Threads may call the model at different
    widths at once: a calibration waits for the calls in progress and holds the others back
    until it is done (see the module docstring).
    """
    batches = collect_batches(loader, num_samples)
    for name in ("_usnet_calibration_hook", "_usnet_calibration_done_hook"):
        old = getattr(model, name, None)
        if old is not None:
            old.remove()
    core = unwrap_model(model)
    bns = _bn_layers(core)  # found once: no module walk on every forward
    gate = _Gate()

    def missing() -> bool:
        key = width_space(core).key
        return any(bn.get_stats(key) is None for bn in bns)

    def pre_hook(module: nn.Module, _args: tuple) -> None:
        if module.training or id(core) in CALIBRATING.get():
            return
        if missing():
            gate.enter_alone()
            try:
                if missing():  # another thread may have calibrated it while this one waited
                    config: Width = width_space(core).config
                    # no fx tracing: it would reach other threads' calls to the model
                    calibrate(core, batches, [config], num_samples, method, cache_bytes=0)
            finally:
                gate.leave_alone()
        gate.enter_call()
        _HOLDING.set((*_HOLDING.get(), gate))

    def done_hook(_module: nn.Module, _args: tuple, _output: Any) -> None:
        held = _HOLDING.get()
        if held and held[-1] is gate:  # this call took a turn (also when it raised)
            _HOLDING.set(held[:-1])
            gate.leave_call()

    model.__dict__["_usnet_calibration_hook"] = model.register_forward_pre_hook(pre_hook)
    model.__dict__["_usnet_calibration_done_hook"] = model.register_forward_hook(
        done_hook, always_call=True
    )
