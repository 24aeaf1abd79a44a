"""pydantic's validation errors in usnet's words: one :class:`ConfigError` naming the dotted field,
the value found and what is allowed (``optim.lr: must be > 0, got 0.0``; ``train.amp: expected
one of 'bf16', 'fp16' or null, got 'fp8'``; ``unknown key 'optim.lrr'; allowed: ...; did you
mean 'lr'?``). The schema is walked along each error's location, so the message describes the
field's declared type, not pydantic's internal one."""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .errors import ConfigError, UnknownKeyError, allowed, join, show, suggest

_PLURAL = {float: "numbers", int: "integers", str: "strings", bool: "booleans"}
#: pydantic's errors of a value of the right type outside its bounds.
_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_BOUNDS = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


def _unwrap(tp: Any) -> tuple[Any, list]:
    """``Annotated[T, ...]`` -> ``(T, metadata)``; other types come back with no metadata."""
    meta: list = []
    while get_origin(tp) is Annotated:
        tp, *extra = get_args(tp)
        for m in extra:
            meta.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    return tp, meta


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def describe(tp: Any) -> str:
    """What a type accepts, in the words of the error messages."""
    tp, _ = _unwrap(tp)
    origin, args = get_origin(tp), get_args(tp)
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp is Any:
        return "anything"
    if tp is type(None):
        return "null"
    if tp in simple:
        return simple[tp]
    if origin is Literal:
        return "one of " + ", ".join(show(a) for a in args)
    if _is_union(tp):
        parts = [describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    if origin in (list, Sequence) or (origin is tuple and len(args) == 2 and args[1] is ...):
        item = _unwrap(args[0])[0] if args else Any
        return f"a list of {_PLURAL[item]}" if item in _PLURAL else "a list"
    if origin is tuple:
        items = {_unwrap(a)[0] for a in args}
        if len(items) == 1 and next(iter(items)) in _PLURAL:
            return f"a list of {len(args)} {_PLURAL[next(iter(items))]}"
        return f"a list of {len(args)} items"
    if origin in (dict, Mapping) or tp is dict:
        return "a mapping"
    if _is_model(tp):
        return f"a mapping with keys {', '.join(tp.model_fields)}"
    return getattr(tp, "__name__", repr(tp))


def _member(members: Sequence[Any], tag: object) -> Any:
    """The union member pydantic tagged ``tag`` (``'str'``, ``'list[constrained-float]'``, a
    bounded number's ``'constrained-float'``...)."""
    if isinstance(tag, str):
        tag = tag.removeprefix("constrained-")
    for m in members:
        base = _unwrap(m)[0]
        name = getattr(get_origin(base) or base, "__name__", "")
        if isinstance(tag, str) and (tag == name or tag.startswith(name + "[")):
            return m
    return None


@dataclass
class _Place:
    """Where an error's location leads in the schema."""

    path: str = ""
    tp: Any = None  # the declared type there
    meta: list = field(default_factory=list)  # its constraints
    parent: Any = None  # the type holding it
    union: tuple[str, Any] | None = None  # the outermost non-null union crossed: (path, type)
    key_error: bool = False  # the error is about a mapping key
    complete: bool = True  # the whole location was understood


def locate(schema: type, loc: Sequence[int | str]) -> _Place:
    """Follow ``loc`` from ``schema``: the dotted path and the declared type it reaches."""
    place = _Place(tp=schema)
    tp: Any = schema
    i = 0
    while i < len(loc):
        item = loc[i]
        tp, meta = _unwrap(tp)
        place.meta = place.meta + meta
        origin, args = get_origin(tp), get_args(tp)
        if _is_union(tp):
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:  # ``X | None``: pydantic adds no tag
                tp = members[0]
                continue
            member = _member(members, item)
            if member is None:
                place.complete = False
                break
            place.union = place.union or (place.path, place.tp)
            tp, i = member, i + 1
            if i == len(loc):  # the error is the member's own (a number out of its bounds)
                place.tp = member
            continue
        place.parent, place.meta = tp, []
        if _is_model(tp) and isinstance(item, str) and item in tp.model_fields:
            f = tp.model_fields[item]
            place.path, tp = join(place.path, item), f.annotation
            place.meta = list(f.metadata)
        elif origin in (list, tuple) and isinstance(item, int):
            variadic = origin is list or (len(args) == 2 and args[1] is ...)
            place.path = join(place.path, f"[{item}]")
            tp = args[0] if variadic else (args[item] if item < len(args) else Any)
        elif origin in (dict, Mapping) and i + 1 < len(loc) and loc[i + 1] == "[key]":
            place.key_error, tp = True, args[0] if args else Any
            i += 1
        elif origin in (dict, Mapping) or tp is Any:
            place.path, tp = join(place.path, str(item)), (args[1] if len(args) == 2 else Any)
        else:
            place.complete = False
            break
        place.tp = tp
        i += 1
    place.meta = place.meta + _unwrap(place.tp)[1]
    return place


def _bounds(meta: Sequence[Any]) -> list[tuple[str, float]]:
    out = []
    for m in meta:
        for kind, attr, op in _BOUNDS:
            if isinstance(m, kind):
                out.append((op, getattr(m, attr)))
    return out


def _value(data: Any, loc: Sequence[int | str]) -> Any:
    """The user's value at ``loc`` (union tags skipped), or ``None`` when there is none."""
    for item in loc:
        if isinstance(data, Mapping) and item in data:
            data = data[item]
        elif isinstance(data, (list, tuple)) and isinstance(item, int) and item < len(data):
            data = data[item]
        elif isinstance(item, str) and not isinstance(data, Mapping):
            continue  # a union tag
        else:
            return None
    return data


def _explain(schema: type, data: Any, err: Mapping[str, Any]) -> ConfigError:
    """One pydantic error as a :class:`ConfigError` (path relative to ``schema``)."""
    loc, kind = tuple(err["loc"]), err["type"]
    place = locate(schema, loc)
    value = err.get("input") if kind != "extra_forbidden" else None
    if kind == "value_error" and isinstance(err.get("ctx", {}).get("error"), ValueError):
        cause = err["ctx"]["error"]
        if isinstance(cause, ConfigError):
            return cause.relocated(place.path)
        return ConfigError(place.path, str(cause))
    if kind == "extra_forbidden":
        parent = place.parent if _is_model(place.parent) else locate(schema, loc[:-1]).tp
        names = list(_unwrap(parent)[0].model_fields) if _is_model(_unwrap(parent)[0]) else []
        key = str(loc[-1])
        return UnknownKeyError(join(locate(schema, loc[:-1]).path, key), allowed(key, names))
    if kind == "missing":
        if get_origin(_unwrap(place.parent)[0]) is tuple:  # too few items: the tuple is wrong
            holder = locate(schema, loc[:-1])
            return _mismatch(holder.path, holder.tp, _value(data, loc[:-1]))
        return ConfigError(place.path, f"is required ({describe(place.tp)})")
    if place.key_error:
        return ConfigError(f"{place.path} key {show(value)}", f"expected {describe(place.tp)}")
    bounds = _bounds(place.meta)
    if kind in _BOUND_ERRORS and bounds:
        numeric = {_unwrap(a)[0] for a in get_args(place.tp)} | {_unwrap(place.tp)[0]}
        if float in numeric and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        rule = " and ".join(f"{op} {b if isinstance(b, int) else f'{b:g}'}" for op, b in bounds)
        return ConfigError(place.path, f"must be {rule}, got {show(value)}")
    if kind == "finite_number" or (isinstance(value, float) and not math.isfinite(value)):
        return ConfigError(place.path, f"must be a finite number, got {show(value)}")
    if kind in ("too_long", "too_short"):
        value = _value(data, loc)
    hint = ""
    if kind == "literal_error" and isinstance(value, str):
        choices = [a for a in get_args(_unwrap(place.tp)[0]) if isinstance(a, str)]
        for m in get_args(_unwrap(place.tp)[0]):  # ``Literal[...] | None``
            choices += [a for a in get_args(_unwrap(m)[0]) if isinstance(a, str)]
        hint = suggest(value, choices)
    return _mismatch(place.path, place.tp, value, hint)


def _mismatch(path: str, tp: Any, value: Any, hint: str = "") -> ConfigError:
    return ConfigError(path, f"expected {describe(tp)}, got {show(value)}{hint}")


def translate(schema: type, data: Any, error: ValidationError) -> ConfigError:
    """The first problem of ``error`` (validating ``data`` against ``schema``) in one line.

    For a value that fits none of a union's types, the error of a member whose *shape* fit (a
    list with one bad item, a number out of a number's bounds) is reported; if none fit, the
    union's own description.
    """
    errors = error.errors()
    first = errors[0]
    place = locate(schema, first["loc"])
    if place.union is None:
        return _explain(schema, data, first)
    upath, utype = place.union
    same = [e for e in errors if locate(schema, e["loc"]).union == place.union]
    deeper = [e for e in same if locate(schema, e["loc"]).path != upath]
    if deeper:
        return _explain(schema, data, deeper[0])
    bounded = [e for e in same if e["type"] in _BOUND_ERRORS]
    if bounded:
        return _explain(schema, data, bounded[0])
    prefix = first["loc"][: len(first["loc"]) - 1]
    return _mismatch(upath, utype, _value(data, prefix))
