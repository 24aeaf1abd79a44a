"""Typed configs on pydantic v2, validated strictly, with errors that name the bad field.

Every schema is a tree of :class:`Section` models: frozen, no unknown keys, strict types (no
``"1"`` for 1, no ``"no"`` for false; ints are accepted for floats, lists for tuples), finite
numbers. Bounds are pydantic's (``Field(0.1, gt=0)``, ``list[Annotated[float, Field(gt=0)]]``);
checks across fields go in :meth:`Section.check`, which raises :class:`ConfigError` with the
field's path relative to that section. Every error, whether from a file, a ``--set`` item or a
constructor call, is one :class:`ConfigError` (a ``ValueError``) naming the source, the full
dotted path, the value found and what is allowed, e.g.
``configs/x.yaml: optim.lr: expected a number, got 'fast'``.

:func:`from_dict` validates plain data, :func:`to_dict` dumps a config back to YAML/JSON-ready
data (what a checkpoint's ``meta.config`` holds: it validates back to an equal config),
:func:`apply_overrides` applies ``--set a.b=value`` items, :func:`build_config` /
:func:`load_config` do all three for data or a file. For example::

    class SROptim(Section):
        lr: float = Field(2e-4, gt=0)
        betas: Pair = (0.9, 0.999)

    class SRConfig(Section):
        task: Literal["sr"] = "sr"
        optim: SROptim = Field(default_factory=SROptim)

    cfg = build_config(SRConfig, load_yaml("configs/sr_div2k.yaml"), ["optim.lr=1e-4"])
"""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError, UnknownKeyError, allowed, show
from .messages import _unwrap, describe, translate
from .yaml_io import load_yaml, parse_value

T = TypeVar("T", bound=BaseModel)


class Section(BaseModel):
    """A config section: frozen, strict, no unknown keys; cross-field checks in :meth:`check`.

    Constructing one in Python validates it too, and a bad value raises :class:`ConfigError`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise translate(type(self), data, e) from None

    def check(self) -> None:
        """Checks across fields (override; call ``super().check()``); raise :class:`ConfigError`
        with the path relative to this section."""

    @model_validator(mode="after")
    def _check(self) -> Any:
        for name, value in self:
            if isinstance(value, float) and abs(value) > FLOAT32_MAX:
                raise ConfigError(
                    name, f"{value:g} is beyond float32's range (at most {FLOAT32_MAX:.4g})"
                )
        self.check()
        return self


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


#: A number in [0, 1) (Adam's betas).
Beta = Annotated[float, Field(ge=0, lt=1)]
#: Two betas, written as a YAML list.
Pair = Annotated[tuple[Beta, Beta], BeforeValidator(_as_tuple)]
#: A positive number (widths, milestones).
Positive = Annotated[float, Field(gt=0)]
#: A random seed: torch, numpy and the environments all take one in [0, 2**32).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
#: The largest float32: a config number beyond it cannot reach a tensor (optimizers cast it).
FLOAT32_MAX = 3.4028234663852886e38


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Validate plain data (parsed YAML/JSON) against the schema ``cls``.

    Every key must be a field (else :class:`UnknownKeyError`, with the closest name); every
    value must match the field's type and bounds; fields left out take their defaults. ``where``
    is the dotted path of ``data`` inside a bigger config, used in messages.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"expected {describe(cls)}, got {show(data)}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise translate(cls, data, e).relocated(where) from None


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, str, numbers, bool, None) for YAML or JSON, in field order."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot turn {type(obj).__name__} {obj!r} into config data")


def validate(obj: T) -> T:
    """Re-check a config (e.g. one made with ``model_construct``, which skips validation)."""
    return from_dict(type(obj), to_dict(obj))


def _mapping_type(tp: Any) -> Any:
    """The model or dict type a path can descend into, or None."""
    tp = _unwrap(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        found = [m for m in (_mapping_type(a) for a in get_args(tp)) if m is not None]
        return found[0] if found else None
    if (isinstance(tp, type) and issubclass(tp, BaseModel)) or tp is Any:
        return tp
    if get_origin(tp) in (dict, Mapping) or tp is dict:
        return tp
    return None


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], schema: type | None = None
) -> dict[str, Any]:
    """``data`` with each ``"a.b.c=VALUE"`` applied (VALUE parsed as YAML: ``0.1``, ``[0.25,1.0]``,
    ``null``, ``true``); ``data`` itself is left unchanged.

    With a ``schema`` a path must name its fields (missing parent mappings are created; inside a
    ``dict[str, ...]`` field any key may be added); without one, every key of the path must
    already exist in ``data``. An unknown path is an :class:`UnknownKeyError` whose source is
    the ``--set`` item. Types are checked later, by :func:`from_dict`.
    """
    out: dict[str, Any] = copy.deepcopy(dict(data))
    for item in overrides:
        source = f"--set {item}"
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or not all(parts):
            raise ConfigError("", "expected KEY=VALUE with a dotted key, e.g. optim.lr=0.1", source)
        value = parse_value(text, key, source)
        node: dict[str, Any] = out
        node_type: Any = schema
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            if isinstance(node_type, type) and issubclass(node_type, BaseModel):
                names = list(node_type.model_fields)
                if part not in names:
                    raise UnknownKeyError(path, allowed(part, names), source)
                child_type = node_type.model_fields[part].annotation
            elif node_type is None and schema is None:
                if part not in node:
                    raise UnknownKeyError(path, allowed(part, [str(k) for k in node]), source)
                child_type = None
            else:  # inside a free-form mapping
                args = get_args(node_type)
                child_type = args[1] if len(args) == 2 else Any
            if i == len(parts) - 1:
                node[part] = value
                break
            child = node.get(part)
            descend = None
            if schema is not None:
                descend = _mapping_type(child_type)
                if descend is None:
                    what = describe(child_type)
                    raise ConfigError(path, f"is {what}, not a mapping; cannot set {key!r}", source)
                if child is None:
                    child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    path, f"is {show(child)}, not a mapping; cannot set {key!r}", source
                )
            node, node_type = child, descend
    return out


def build_config(
    cls: type[T], data: Mapping[str, Any], overrides: Sequence[str] = (), source: str = ""
) -> T:
    """``from_dict(cls, apply_overrides(data, overrides, cls))`` with errors naming ``source``
    (a file) or, when the bad field was overridden, the ``--set`` item."""
    merged = apply_overrides(data, overrides, cls)
    try:
        return from_dict(cls, merged)
    except ConfigError as e:
        for item in reversed(overrides):
            key = item.partition("=")[0].strip()
            if (
                e.path == key
                or e.path.startswith((key + ".", key + "["))
                or key.startswith(e.path + ".")
            ):
                raise e.relocated(source=f"--set {item}") from None
        where = source or "config"
        if overrides:
            where += " with " + " ".join(f"--set {o}" for o in overrides)
        raise e.relocated(source=where) from None


def load_config(path: str | Path, cls: type[T], overrides: Sequence[str] = ()) -> T:
    """Read a YAML recipe, apply ``--set`` overrides and validate it against the schema ``cls``
    (e.g. :class:`usnet.tasks.classification.TrainConfig`)."""
    return build_config(cls, load_yaml(path), overrides, source=str(path))
