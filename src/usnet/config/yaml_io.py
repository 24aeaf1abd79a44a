"""Reading and writing config YAML: strict loading (duplicate keys refused, ``1e-4`` read as a
number) and errors naming the file and line."""

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


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML file (``{}`` for an empty file); errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"config file {str(path)!r} is a folder; give a YAML recipe in it")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except yaml.YAMLError as e:
        raise ConfigError("", f"invalid YAML at {_yaml_reason(e)}", str(path)) from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"not a UTF-8 text file ({e})", str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping at the top level, got {show(data)}", str(path))
    return data


def parse_value(text: str, key: str = "", source: str = "") -> Any:
    """One YAML value as a ``--set KEY=VALUE`` item gives it: ``0.1``, ``[0.25, 1.0]``, ``null``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(
            key, f"cannot parse {text!r} as a YAML value ({_yaml_reason(e)})", source
        ) from None


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
