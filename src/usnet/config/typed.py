"""Typed configs, validated strictly, with errors that name the bad field.

This module is the generic layer over dataclasses that every task reuses (classification, SR,
RL); reading YAML lives in :mod:`usnet.config.yaml_io`, the classification schema
(:class:`TrainConfig`, whose defaults are the Fashion-MNIST CPU recipe) in
:mod:`usnet.config.classification`.

*
  :func:`from_dict` builds a dataclass from plain data, checking each value against the field's
  type hint (``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Literal[...]``,
  ``X | None``, ``list[T]``, ``tuple[...]``, ``dict[str, T]``, ``Any`` and nested dataclasses);
  :func:`to_dict` turns it back into YAML/JSON-ready data; :func:`apply_overrides` applies
  ``--set a.b=value`` items; :func:`build_config` / :func:`load_config` do all three for a file.
  Numeric bounds go in field metadata through :func:`setting` (``gt``, ``ge``, ``lt``, ``le``;
  for a list they hold for every element); checks across fields go in ``__post_init__`` and
  raise :class:`ConfigError` with the field's name relative to that dataclass, and
  :func:`from_dict` prefixes the dotted path of where the dataclass sits.

Every error is a :class:`ConfigError` (a ``ValueError``) whose text names the file or ``--set``
item, the full dotted path, the value found and what is allowed, e.g.
``configs/x.yaml: optim.lr: expected a number, got 'fast'``.

A task's own schema is a frozen dataclass tree; for example::

    @dataclass(frozen=True)
    class SROptim:
        lr: float = setting(2e-4, gt=0)
        betas: tuple[float, float] = (0.9, 0.999)

    @dataclass(frozen=True)
    class SRConfig:
        task: Literal["sr"] = "sr"
        optim: SROptim = field(default_factory=SROptim)

    cfg = build_config(SRConfig, load_yaml("configs/sr_div2k.yaml"), ["optim.lr=1e-4"])
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")



# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """A bad config value: ``path`` is the dotted field ('' for the whole config), ``detail`` says
    what is wrong and what is allowed, ``source`` names where the data came from (a file or a
    ``--set`` item)."""

    def __init__(self, path: str, detail: str, source: str = "") -> None:
        super().__init__(path, detail)
        self.path, self.detail, self.source = path, detail, source

    def _text(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail

    def __str__(self) -> str:
        return f"{self.source}: {self._text()}" if self.source else self._text()

    def relocated(self, prefix: str = "", source: str | None = None) -> ConfigError:
        """The same error seen from ``prefix`` (a field relative to a dataclass made absolute)."""
        new = copy.copy(self)
        new.path = _join(prefix, self.path)
        if source is not None:
            new.source = source
        return new


class UnknownKeyError(ConfigError):
    """A key the schema does not have: ``detail`` lists the allowed keys and the closest one."""

    def _text(self) -> str:
        return f"unknown key {self.path!r}; {self.detail}"


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    if not name:
        return prefix
    return prefix + name if name.startswith("[") else f"{prefix}.{name}"


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _allowed(key: str, names: Sequence[str]) -> str:
    return f"allowed: {', '.join(names)}{_suggest(key, names)}"


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# Field metadata: numeric bounds
# ---------------------------------------------------------------------------------------------
def setting(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with bounds checked by :func:`from_dict`.

    ``gt``/``ge``/``lt``/``le`` hold for a number, or for every element of a list/tuple of
    numbers; ``None`` values are not checked (use ``X | None`` to make a field optional).
    A mutable ``default`` (list, dict) is turned into a ``default_factory`` for you.
    """
    bounds = {k: v for k, v in dict(gt=gt, ge=ge, lt=lt, le=le).items() if v is not None}
    metadata = {"bounds": bounds, "doc": doc}
    if isinstance(default, (list, dict)):
        value = default
        default, default_factory = MISSING, lambda: copy.deepcopy(value)
    return field(default=default, default_factory=default_factory, metadata=metadata)


_OPS = {
    "gt": (">", lambda v, b: v > b),
    "ge": (">=", lambda v, b: v >= b),
    "lt": ("<", lambda v, b: v < b),
    "le": ("<=", lambda v, b: v <= b),
}


def _check_bounds(bounds: Mapping[str, float], value: Any, path: str) -> None:
    if not bounds or value is None or isinstance(value, bool):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_bounds(bounds, v, f"{path}[{i}]")
        return
    if not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(path, "must be a number, got nan")
    if not all(_OPS[k][1](value, b) for k, b in bounds.items()):
        rule = " and ".join(f"{_OPS[k][0]} {b:g}" for k, b in bounds.items())
        raise ConfigError(path, f"must be {rule}, got {_show(value)}")


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------
_PLURAL = {float: "numbers", int: "integers", str: "strings", bool: "booleans"}


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _describe(tp: Any) -> str:
    """What a type accepts, in the words of the error messages."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return "anything"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(_show(a) for a in args)
    if _is_union(tp):
        parts = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    if origin in (list, Sequence) or (origin is tuple and len(args) == 2 and args[1] is ...):
        item = args[0] if args else Any
        return f"a list of {_PLURAL[item]}" if item in _PLURAL else "a list"
    if origin is tuple:
        if len(set(args)) == 1 and args[0] in _PLURAL:
            return f"a list of {len(args)} {_PLURAL[args[0]]}"
        return f"a list of {len(args)} items"
    if origin in (dict, Mapping) or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        return f"a mapping with keys {', '.join(names)}"
    return getattr(tp, "__name__", repr(tp))


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # a schema bug, not a user error
        raise TypeError(f"cannot read the type hints of {cls.__name__}: {e}") from e


def _convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked against ``tp`` (and normalised: ints to float, lists to tuples...)."""
    origin, args = get_origin(tp), get_args(tp)
    mismatch = ConfigError(path, f"expected {_describe(tp)}, got {_show(value)}")
    if tp is Any:
        return copy.deepcopy(value)
    if tp is type(None):
        if value is not None:
            raise mismatch
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise mismatch
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise mismatch
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise mismatch
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise mismatch
        return value
    if origin is Literal:
        for a in args:
            if type(a) is type(value) and a == value:
                return value
        hint = (
            _suggest(value, [a for a in args if isinstance(a, str)])
            if isinstance(value, str)
            else ""
        )
        raise ConfigError(path, f"expected {_describe(tp)}, got {_show(value)}{hint}")
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        deeper: ConfigError | None = None
        for member in (a for a in args if a is not type(None)):
            try:
                return _convert(member, value, path)
            except ConfigError as e:
                if e.path != path and deeper is None:
                    deeper = e  # the value had the right shape but a bad part: say which
        raise deeper or mismatch
    if origin in (list, Sequence) or (origin is tuple and len(args) == 2 and args[1] is ...):
        if not isinstance(value, (list, tuple)):
            raise mismatch
        item = args[0] if args else Any
        out = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise mismatch
        return tuple(
            _convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise mismatch
        key_tp, val_tp = args if args else (Any, Any)
        out_d = {}
        for k, v in value.items():
            _convert(key_tp, k, f"{path} key {_show(k)}")
            out_d[k] = _convert(val_tp, v, _join(path, str(k)))
        return out_d
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    raise TypeError(f"{path}: unsupported field type {tp!r} in a config schema")


# ---------------------------------------------------------------------------------------------
# The generic layer
# ---------------------------------------------------------------------------------------------
def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from plain data, strictly.

    Every key must be a field (else :class:`UnknownKeyError`, with the closest name); every
    value must match the field's type hint and :func:`setting` bounds; fields left out take
    their defaults; a field without a default is required. ``where`` is the dotted path of
    ``data`` inside a bigger config, used in messages. Errors raised by ``cls.__post_init__``
    (cross-field checks) are prefixed with ``where``.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"expected {_describe(cls)}, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if not isinstance(key, str) or key not in fields:
            raise UnknownKeyError(_join(where, str(key)), _allowed(str(key), list(fields)))
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(path, f"is required ({_describe(hints[name])})")
            continue
        value = _convert(hints[name], data[name], path)
        _check_bounds(f.metadata.get("bounds", {}), value, path)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.relocated(where) from None
    except ValueError as e:
        raise ConfigError(where, str(e)) from None


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, str, numbers, bool, None) for YAML or JSON; tuples become lists,
    dataclasses become dicts in field order, paths become strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
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
    """Re-check a config built in Python (bounds are only checked by :func:`from_dict`)."""
    return from_dict(type(obj), to_dict(obj))


def _mapping_type(tp: Any) -> Any:
    """The dataclass or dict type a path can descend into, or None."""
    if _is_union(tp):
        found = [m for m in (_mapping_type(a) for a in get_args(tp)) if m is not None]
        return found[0] if found else None
    if dataclasses.is_dataclass(tp) or tp is Any:
        return tp
    if get_origin(tp) in (dict, Mapping) or tp is dict:
        return tp
    return None


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], schema: type | None = None
) -> dict[str, Any]:
    """``data`` with each ``"a.b.c=VALUE"`` applied (VALUE parsed as YAML: ``0.1``, ``[0.25,1.0]``,
    ``null``, ``true``); ``data`` itself is left unchanged.

    With a dataclass ``schema`` a path must name fields of it (missing parent mappings are
    created; inside a ``dict[str, ...]`` field any key may be added); without one, every key of
    the path must already exist in ``data``. An unknown path is an :class:`UnknownKeyError`
    whose source is the ``--set`` item. Types are checked later by :func:`from_dict`.
    """
    out: dict[str, Any] = copy.deepcopy(dict(data))
    for item in overrides:
        source = f"--set {item}"
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or not all(parts):
            raise ConfigError("", "expected KEY=VALUE with a dotted key, e.g. optim.lr=0.1", source)
        from .yaml_io import _Loader, _yaml_reason  # yaml_io builds on this module

        try:
            value = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as e:
            raise ConfigError(
                key, f"cannot parse {text!r} as a YAML value ({_yaml_reason(e)})", source
            ) from None
        node: dict[str, Any] = out
        node_type: Any = schema
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            if node_type is not None and dataclasses.is_dataclass(node_type):
                names = [f.name for f in dataclasses.fields(node_type) if f.init]
                if part not in names:
                    raise UnknownKeyError(path, _allowed(part, names), source)
                child_type = _hints(node_type)[part]
            elif node_type is None and schema is None:
                if part not in node:
                    raise UnknownKeyError(path, _allowed(part, [str(k) for k in node]), source)
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
                    what = _describe(child_type)
                    raise ConfigError(path, f"is {what}, not a mapping; cannot set {key!r}", source)
                if child is None:
                    child = node[part] = {}
            if not isinstance(child, dict):
                what = _show(child)
                raise ConfigError(path, f"is {what}, not a mapping; cannot set {key!r}", source)
            node, node_type = child, descend
    return out


def build_config(
    cls: type[T],
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    source: str = "",
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
