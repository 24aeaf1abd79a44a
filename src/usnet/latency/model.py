"""A latency model of one device and backend: a lookup table of layer timings, fitted to whole
networks' timings, saved with the device, validated on widths it was not fitted on.

Prediction, as Once-for-All's latency tables do: sum the measured time of every layer the
network runs (:mod:`.layers` names each by what its time depends on, and :mod:`.backends`
times it on its own). Layers on their own are not layers inside a network: calls cost
framework overhead the network pays once, and a runtime fuses batch norm and activations into
convolutions. So the sums are split by kind (convolutions and linear layers, norms, the rest)
and ``latency = intercept + sum_k coefficient_k * sum_k``, the four numbers fitted by least
squares to end-to-end timings of ``fit`` random per-group widths. Layers not yet in the table
are timed when first met and added to it.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import UsageError
from ..io import atomic_write, make_parent
from ..logs import progress_bar
from ..nn import WidthConfig, channel_groups, width_space
from .backends import STATISTICS, Backend, backend
from .layers import Layer, layers

FORMAT = "usnet-latency-model"
FORMAT_VERSION = 1
KINDS = ("weights", "norm", "other")
#: What a latency model must share with the machine using it (versions only warn).
SAME = ("backend", "device_name", "threads")
log = logging.getLogger("usnet")


def kind_of(layer: Layer) -> str:
    name = layer.kind
    if name.startswith(("Conv", "Linear", "ConvTranspose")):
        return "weights"
    if "Norm" in name:
        return "norm"
    return "other"


def random_widths(model: nn.Module, n: int, seed: int) -> list[dict[str, float]]:
    """``n`` per-group widths, each group's width uniform in the range (seeded)."""
    space = width_space(model)
    groups = [g.name for g in channel_groups(model) if g.slimmable]
    rng = random.Random(seed)
    return [
        {g: round(rng.uniform(space.width_min, space.width_max), 4) for g in groups}
        for _ in range(n)
    ]


@dataclass
class LatencyModel:
    """Predicted milliseconds per forward of ``batch_size`` inputs on one device/backend."""

    environment: dict[str, Any]
    batch_size: int = 1
    table: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0
    coefficients: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 1.0))
    fit: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    repeats: int = 20
    #: How end-to-end rounds were summarised: ``median`` or ``min`` (the least round).
    statistic: str = "median"

    def __post_init__(self) -> None:
        self._backend: Backend | None = None
        self.added = 0  # layers timed since loading

    @property
    def backend_name(self) -> str:
        return str(self.environment.get("backend"))

    def attach(self, runner: Backend) -> LatencyModel:
        """Time missing layers with ``runner``, which must run where the model was built."""
        here = runner.environment()
        wrong = [k for k in SAME if here.get(k) != self.environment.get(k)]
        if wrong:
            raise UsageError(
                "the latency model was built for "
                + ", ".join(f"{k}={self.environment.get(k)!r}" for k in wrong)
                + "; here "
                + ", ".join(f"{k}={here.get(k)!r}" for k in wrong)
                + ": build one here with `usnet latency CKPT`"
            )
        for k in set(here) - set(SAME):
            if here[k] != self.environment.get(k):
                log.warning(
                    "latency model built with %s %s, now %s", k, self.environment.get(k), here[k]
                )
        self._backend = runner
        return self

    def sums(self, model: nn.Module, width: WidthConfig) -> dict[str, float]:
        """The table's times of the layers ``width`` runs, summed per kind."""
        out = dict.fromkeys(KINDS, 0.0)
        for layer in layers(model, width, self.batch_size):
            t = self.table.get(layer.key)
            if t is None:
                if self._backend is None:
                    raise UsageError(
                        f"layer {layer.key} is not in the latency table and no backend is "
                        "attached to time it"
                    )
                t = self.table[layer.key] = self._backend.time_layer(
                    layer.module, layer.shape, self.repeats
                )
                self.added += 1
            out[kind_of(layer)] += t
        return out

    def predict(self, model: nn.Module, width: WidthConfig) -> float:
        """Predicted milliseconds of a forward at ``width``."""
        s = self.sums(model, width)
        return self.intercept + sum(self.coefficients[k] * s[k] for k in KINDS)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        text = json.dumps(self.to_dict(), indent=1)
        return atomic_write(make_parent(path, "latency model"), lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not valid JSON ({e})") from None
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise UsageError(f"{path}: not a usnet latency model (format {doc.get('format')!r})")
        fields = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
        try:
            return cls(**fields)
        except TypeError as e:
            raise UsageError(f"{path}: malformed latency model ({e})") from None


#: The forms a fit may take: which kind sums get their own coefficient (the rest share one).
FORMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "total": (KINDS,),
    "weights+rest": (("weights",), ("norm", "other")),
    "per-kind": (("weights",), ("norm",), ("other",)),
}


def _design(sums: Sequence[Mapping[str, float]], form: str) -> np.ndarray:
    return np.array([[1.0, *(sum(s[k] for k in part) for part in FORMS[form])] for s in sums])


def _loo_error(a: np.ndarray, y: np.ndarray) -> float:
    """Median relative error of leave-one-out predictions: how a form predicts unseen widths."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef, *_ = np.linalg.lstsq(a[keep], y[keep], rcond=None)
        errors.append(abs(float(a[i] @ coef) - y[i]) / y[i])
    return float(statistics.median(errors))


def build(
    model: nn.Module,
    runner: Backend,
    batch_size: int = 1,
    fit: int = 24,
    validate: int = 20,
    rounds: int = 30,
    warmup: int = 5,
    seed: int = 0,
    repeats: int = 20,
    statistic: str = "median",
) -> LatencyModel:
    """Build a latency model of ``model`` on ``runner`` and validate it.

    Times the layers of ``fit`` per-group widths (the range's ends and random ones, seeded) and
    of ``validate`` other random widths, then times all of them end to end in the same
    interleaved rounds (so the fit and the check meet the same machine load), each width's
    rounds summarised by their median (``statistic="min"``: their least, what an idle machine
    shows; on a shared machine the median measures its load as much as the network). The fit uses the
    ``fit`` widths only: of the forms in :data:`FORMS` whose scales come out non-negative it
    keeps the one whose leave-one-out error is least; the ``validate`` widths then compare prediction and measurement
    (:attr:`LatencyModel.validation`), with the error of always predicting the fit widths'
    mean latency beside it, the bar a useful model must clear.
    """
    if fit < 6:
        raise UsageError(f"fit needs at least 6 widths (up to 4 numbers are fitted), got {fit}")
    space = width_space(model)
    fitted: list[WidthConfig] = [space.width_max, space.width_min]
    fitted += random_widths(model, fit - 2, seed)
    checked = random_widths(model, validate, seed + 1)
    if statistic not in STATISTICS:
        raise UsageError(f"statistic {statistic!r} is unknown; allowed: {list(STATISTICS)}")
    lm = LatencyModel(runner.environment(), batch_size, repeats=repeats, statistic=statistic)
    lm.attach(runner)
    widths = fitted + checked
    sums = [lm.sums(model, w) for w in progress_bar(widths, desc="layer table", unit="net")]
    measured = np.array(runner.end_to_end(model, widths, batch_size, rounds, warmup, statistic))
    y = measured[:fit]
    errors = {form: _loo_error(_design(sums[:fit], form), y) for form in FORMS}
    fits = {form: np.linalg.lstsq(_design(sums[:fit], form), y, rcond=None)[0] for form in FORMS}
    # a layer never takes negative time: a form fitted so is fitting noise ("total" stays)
    allowed = [f for f in FORMS if f == "total" or bool(np.all(fits[f][1:] >= 0))]
    form = min(allowed, key=lambda f: (errors[f], len(FORMS[f])))
    coef = fits[form]
    lm.intercept = float(coef[0])
    lm.coefficients = {
        k: float(c) for part, c in zip(FORMS[form], coef[1:], strict=True) for k in part
    }
    lm.fit = {
        "widths": fit,
        "seed": seed,
        "rounds": rounds,
        "form": form,
        "loo_median_abs_error": {f: round(e, 5) for f, e in errors.items()},
        "mean_ms": float(y.mean()),
    }
    if validate:
        predicted = [lm.predict(model, w) for w in checked]
        lm.validation = _validation(checked, predicted, list(measured[fit:]), float(y.mean()))
        lm.validation.update(seed=seed + 1, rounds=rounds)
    return lm


def _validation(
    widths: Sequence[Mapping[str, float]],
    predicted: Sequence[float],
    measured: Sequence[float],
    mean: float,
) -> dict[str, Any]:
    errors = [(p - m) / m for p, m in zip(predicted, measured, strict=True)]
    return {
        "widths": len(widths),
        "median_abs_error": float(statistics.median(abs(e) for e in errors)),
        "max_abs_error": float(max(abs(e) for e in errors)),
        "constant_median_abs_error": float(statistics.median(abs(mean - m) / m for m in measured)),
        "rows": [
            {"width": dict(w), "predicted_ms": float(p), "measured_ms": float(m), "error": e}
            for w, p, m, e in zip(widths, predicted, measured, errors, strict=True)
        ],
    }


def validate(
    lm: LatencyModel,
    model: nn.Module,
    runner: Backend,
    n: int = 20,
    seed: int = 1,
    rounds: int = 30,
    warmup: int = 5,
) -> dict[str, Any]:
    """Check a saved model again here: predicted against measured end-to-end latency of ``n``
    random per-group widths (interleaved rounds, median). Returns the validation (not stored)."""
    widths = random_widths(model, n, seed)
    predicted = [lm.predict(model, w) for w in widths]
    measured = runner.end_to_end(model, widths, lm.batch_size, rounds, warmup, lm.statistic)
    mean = float(lm.fit.get("mean_ms", statistics.fmean(measured)))
    return {**_validation(widths, predicted, measured, mean), "seed": seed, "rounds": rounds}


def load_for(path: str | Path, backend_name: str | None = None) -> LatencyModel:
    """A saved latency model, checked against this machine, ready to time missing layers."""
    lm = LatencyModel.load(path)
    return lm.attach(backend(backend_name or lm.backend_name))


def summary(validation: Mapping[str, Any]) -> str:
    return (
        f"median absolute error {100 * validation['median_abs_error']:.1f} % over "
        f"{validation['widths']} random per-group widths (max "
        f"{100 * validation['max_abs_error']:.1f} %; predicting the mean: "
        f"{100 * validation['constant_median_abs_error']:.1f} %)"
    )


def rows_table(rows: Sequence[Mapping[str, Any]], groups: Sequence[str] = ()) -> str:
    """The validation rows as Markdown."""
    lines = [
        "| # | mean width | predicted (ms) | measured (ms) | error |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rows, 1):
        w = r["width"]
        mean_w = statistics.fmean(w.values()) if isinstance(w, Mapping) else float(w)
        lines.append(
            f"| {i} | {mean_w:.3f} | {r['predicted_ms']:.3f} | {r['measured_ms']:.3f} | "
            f"{100 * r['error']:+.1f} % |"
        )
    return "\n".join(lines)
