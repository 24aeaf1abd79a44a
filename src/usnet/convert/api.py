"""``usnet.convert``: any ordinary PyTorch CNN as a US-Net, in one call."""

from __future__ import annotations

import contextlib
import difflib
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..nn import WidthSpace
from .adapt import adapt
from .analysis import Analysis
from .errors import ConvertError
from .plan import Plan, analysis_of, check, fingerprint, make_plan
from .reparam import fold, folded_copy, hooked
from .replace import replace_modules, verify
from .report import coverage, message, never_slims
from .rules import is_leaf
from .trace import trace_model

_log = logging.getLogger("usnet")
#: The conversion record of the checkpoint being loaded (see :func:`recorded`).
_RECORDED: ContextVar[Any] = ContextVar("usnet_recorded_conversion", default=None)


def convert(
    model: nn.Module,
    example_input: Tensor,
    width_range: tuple[float, float] = (0.25, 1.0),
    divisor: int = 8,
    keep: Iterable[str] | str | None = (),
    check: bool = True,
) -> nn.Module:
    """A universally slimmable copy of ``model`` that starts from its weights.

    ``example_input`` (e.g. ``torch.randn(2, 3, 224, 224)``) drives the tracing; its shape
    (without the batch) becomes ``input_size``. The result is ``model``'s own class with its
    own ``forward``, whose convs, linears and norms read the active channels of the channel
    groups in ``model.width_space`` (one per set of tensors that must shrink together, named
    after the module producing it): ``usnet.set_width``, ``calibrate``, ``macs``,
    ``export.extract`` and checkpoints work as on the built-in models. At width 1.0 it computes
    ``model``'s function exactly (batch norms keep their running statistics as the full width's
    calibrated statistics); other widths round like the authors' code (``divisor``, leading
    channels). The input's channels and the outputs never slim, nor the outputs of the modules
    named in ``keep`` (a module that cannot be traced or converted is kept as one block).
    ``model`` itself is left as it is; weight_norm, spectral_norm, pruning and parametrizations
    are folded into plain weights of the copy (a warning says which).

    What cannot be slimmed exactly raises one :class:`~usnet.convert.ConvertError` listing
    every problem and the complete ``keep=`` that converts; ``keep="auto"`` converts with that
    set instead. A conversion that leaves part of the network whole warns with the share of
    the MACs that slims. ``check`` runs the result once at full width against ``model`` and
    once at the narrowest.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(getattr(model, "width_space", None), WidthSpace):
        raise UsageError(f"{type(model).__name__} is already a US model (it has a width_space)")
    if not isinstance(example_input, Tensor) or example_input.dim() < 2 or not len(example_input):
        raise UsageError(
            "example_input must be a tensor with a batch dimension holding at least one example, "
            f"e.g. torch.randn(2, 3, 224, 224), got {getattr(example_input, 'shape', example_input)!r}"
        )
    try:
        width_min, width_max = (float(w) for w in width_range)
    except (TypeError, ValueError):
        raise UsageError(f"width_range must be (min, 1.0), got {width_range!r}") from None
    if width_max != 1.0 or not 0 < width_min <= 1.0:
        raise UsageError(
            f"width_range must be (min, 1.0) with 0 < min <= 1 (width 1.0 is the original "
            f"network), got {width_range!r}"
        )
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise UsageError(f"divisor must be a positive int, got {divisor!r}")
    auto, kept = _check_keep(model, keep)
    name = type(model).__name__
    model, folded = folded_copy(model)  # the caller's model stays as it is
    adapt(model)
    if folded:
        warnings.warn(
            f"usnet.convert folded {', '.join(folded)} into plain weights of the converted "
            f"copy of {name} (it computes the same in eval mode and trains those weights "
            "directly; the original model keeps its reparametrisations)",
            stacklevel=2,
        )
    frozen = [n for n, m in model.named_modules() if "FrozenBatchNorm" in type(m).__name__]
    if frozen:
        warnings.warn(
            f"usnet.convert makes {len(frozen)} FrozenBatchNorm layer(s) of {name} (first "
            f"{frozen[0]!r}) batch norms with statistics per width: in train mode they normalise "
            "with batch statistics and update their running ones, where the originals stay "
            "frozen; keep those modules in eval mode while fine-tuning to match the original",
            stacklevel=2,
        )
    opaque = {p for p in kept if not is_leaf(model.get_submodule(p))}
    # copies: a forward may change its input in place; the caller's tensor stays as it is
    traced = trace_model(model, example_input.detach().clone(), lambda m, _: is_leaf(m), opaque)
    analysis = Analysis(model, frozenset(kept | traced.untraceable.keys()))
    for trace in traced.traces:
        analysis.run(trace)
    hooks = _hooked(model, analysis)
    analysis.finish()
    never = never_slims(width_min, divisor)
    solution = analysis.solver.solve(never)
    errors = [*traced.untraceable.values(), *solution.errors]
    needed = (*traced.untraceable, *solution.keep)
    if hooks or (errors and not auto):
        raise ConvertError.every(name, [*errors, *hooks], needed)
    if errors:
        analysis.solver.fix(solution.bad, "keep='auto' keeps it")
        solution = analysis.solver.solve(never)
        if solution.errors:  # fixing groups only satisfies more: a usnet bug
            raise ConvertError.every(name, solution.errors, solution.keep)
    note = message(name, coverage(analysis, never), needed, auto, len(solution.groups))
    if note:
        warnings.warn(note, stacklevel=2)
    plan = make_plan(analysis, solution.groups)
    conversion = {"fingerprint": fingerprint(model), "plan": plan.to_json()}
    if not example_input.is_floating_point():  # token ids: profiling and export feed ids too
        conversion["input_dtype"] = str(example_input.dtype).removeprefix("torch.")
    result = _build(model, plan, (width_min, width_max), divisor, example_input.shape[1:])
    result.input_dtype = _input_dtype(conversion)
    result.conversion = conversion
    if check:
        verify(result, example_input.detach().clone(), traced.traces[0].output, result.width_space)
    return result


@contextlib.contextmanager
def recorded(conversion: Any) -> Iterator[None]:
    """Within the block, :func:`recorded_conversion` is ``conversion`` (a checkpoint's record
    of how its network was converted), for the model source that rebuilds the network."""
    token = _RECORDED.set(conversion)
    try:
        yield
    finally:
        _RECORDED.reset(token)


def recorded_conversion() -> Any:
    return _RECORDED.get()


def rebuild(
    model: nn.Module,
    conversion: Any,
    width_range: tuple[float, float],
    divisor: int,
    input_size: Sequence[int],
) -> nn.Module | None:
    """``model`` (a plain network just built, changed in place) as :func:`convert` made it,
    from the ``conversion`` record a converted model carries (a checkpoint keeps it), without
    tracing or running it; ``None`` when the record is not this network's (other code, another
    torch, a damaged file), and :func:`convert` must run again."""
    if not isinstance(conversion, dict) or "plan" not in conversion:
        return None
    fold(model)
    adapt(model)
    if conversion.get("fingerprint") != fingerprint(model):
        _log.info(
            "the recorded conversion is of other code: converting %s again", type(model).__name__
        )
        return None
    try:
        plan = Plan.from_json(conversion["plan"])
        check(plan, model)
    except ConvertError as e:
        _log.warning(
            "the recorded conversion does not fit %s (%s): converting again",
            type(model).__name__,
            e,
        )
        return None
    result = _build(model, plan, width_range, divisor, input_size)
    result.conversion = conversion
    result.input_dtype = _input_dtype(conversion)
    return result


def _input_dtype(conversion: dict[str, Any]) -> torch.dtype | None:
    """The integer dtype of the inputs a conversion was traced with (``None``: floats)."""
    name = conversion.get("input_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) and not dtype.is_floating_point else None


def _build(
    model: nn.Module,
    plan: Plan,
    width_range: tuple[float, float],
    divisor: int,
    input_size: Sequence[int],
) -> Any:
    """``model`` with ``plan``'s slimmable layers swapped in (the result gets plain attributes,
    as a USModel has)."""
    space = WidthSpace(float(width_range[0]), float(width_range[1]))
    analysis, groups = analysis_of(model, plan)
    result: Any = replace_modules(model, analysis, groups, space, divisor)
    result.width_space = space
    result.input_size = tuple(int(s) for s in input_size)
    return result


def _hooked(model: nn.Module, analysis: Analysis) -> list[ConvertError]:
    """Modules to be replaced that carry hooks (a replacement would not run them)."""
    found = []
    for path, use in analysis.uses.items():
        names = hooked(model.get_submodule(path))
        if names:
            problem = (
                f"it has hooks ({', '.join(names)}) that its slimmable replacement would not "
                "run; remove them before converting"
            )
            found.append(ConvertError(path, use.kind, problem))
    return found


def _check_keep(
    model: nn.Module, keep: Iterable[str] | str | None
) -> tuple[bool, frozenset[str]]:
    """Whether ``keep`` says ``"auto"``, and the module names it holds (``None``: none)."""
    if keep is None:
        return False, frozenset()
    if isinstance(keep, (bytes, int, float)):
        raise UsageError(f"keep must be module names or 'auto', got {keep!r}")
    if isinstance(keep, str):
        keep = [keep]
    names = {n for n, _ in model.named_modules() if n}
    given = list(keep)
    auto = "auto" in given and "auto" not in names
    kept = frozenset(k for k in given if not (auto and k == "auto"))
    for name in sorted(kept, key=str):
        if not isinstance(name, str):
            raise UsageError(f"keep: {name!r} is not a module name (a string) or 'auto'")
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UsageError(f"keep: {name!r} is not a module of {type(model).__name__}{hint}")
    return auto, kept
