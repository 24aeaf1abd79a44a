"""Reading and writing config YAML: strict loading (duplicate keys refused, ``1e-4`` read as a
number, merge keys ``<<:`` understood) and errors naming the file and line.

A config is small: a document whose aliases expand to more than :data:`MAX_VALUES` values (an
"alias bomb", which every later step would expand again) or that nests deeper than
:data:`MAX_DEPTH` is refused at once, in one line, instead of exhausting memory or the stack.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ..errors import UsageError
from .errors import ConfigError, show


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a number (YAML 1.2; PyYAML alone reads a string) and
    rejects duplicate keys instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *defaults``: merged keys may be overridden, not duplicates
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


#: The most values a config may hold once its aliases are expanded, and its deepest nesting.
MAX_VALUES = 100_000
MAX_DEPTH = 50


class _TooLarge(Exception):
    """A document beyond :data:`MAX_VALUES` or :data:`MAX_DEPTH` (the callers name the file)."""


def _load(text: str) -> Any:
    """``yaml.load`` with the size limits; :class:`_TooLarge` saying which was exceeded."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):  # events: no recursion, stops at the limit
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooLarge(f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    _check_size(data)
    return data


def _check_size(data: Any) -> None:
    """Count the values ``data`` expands to (an alias shares its object, so count each object
    once per reference, with its size memoised) and its depth, refusing at the limits."""
    sizes: dict[int, int] = {}

    def size(value: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooLarge(f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) not in sizes:
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            sizes[id(value)] = 1 + sum(size(v, depth + 1) for v in items)
        if sizes[id(value)] > MAX_VALUES:
            raise _TooLarge(f"more than {MAX_VALUES} values once its aliases are expanded")
        return sizes[id(value)]

    total = size(data, 0)
    if total > MAX_VALUES:
        raise _TooLarge(f"more than {MAX_VALUES} values once its aliases are expanded")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML file (``{}`` for an empty file); errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"config file {str(path)!r} is a folder; give a YAML recipe in it")
    if path.exists() and not path.is_file():
        raise ConfigError("", "is not a regular file (a device, FIFO or socket); give a YAML recipe", str(path))
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = _load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError("", f"invalid YAML at {_yaml_reason(e)}", str(path)) from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"not a UTF-8 text file ({e})", str(path)) from None
    except _TooLarge as e:
        raise ConfigError("", f"too large for a config: {e}", str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping at the top level, got {show(data)}", str(path))
    return data


def parse_value(text: str, key: str = "", source: str = "") -> Any:
    """One YAML value as a ``--set KEY=VALUE`` item gives it: ``0.1``, ``[0.25, 1.0]``, ``null``."""
    try:
        return _load(text)
    except yaml.YAMLError as e:
        raise ConfigError(
            key, f"cannot parse {text[:80]!r} as a YAML value ({_yaml_reason(e)})", source
        ) from None
    except _TooLarge as e:
        raise ConfigError(key, f"too large for a config value: {e}", source) from None


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists (``widths: [0.25, 1.0]``), as the recipes are written."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump_yaml(obj: Any) -> str:
    """A config (a validated model or plain data) as YAML text, in field order;
    :func:`load_yaml` reads it back to the same data."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _yaml_reason(e: yaml.YAMLError) -> str:
    """A YAML error in one line: where and what."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if problem is None:
        return str(e).replace("\n", " ")
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"
