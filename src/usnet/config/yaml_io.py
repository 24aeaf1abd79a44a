"""Reading and writing config YAML: strict loading (duplicate keys refused, ``1e-4`` read as a
number), errors naming the file and line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .typed import ConfigError, _show, to_dict

T = TypeVar("T")


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
        raise ConfigError("", f"expected a mapping at the top level, got {_show(data)}", str(path))
    return data


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists (``widths: [0.25, 1.0]``), as the recipes are written."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump_yaml(obj: Any) -> str:
    """A config (dataclass or plain data) as YAML text, in field order; :func:`load_yaml` reads
    it back to the same data."""
    return yaml.dump(to_dict(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _yaml_reason(e: yaml.YAMLError) -> str:
    """A YAML error in one line: where and what."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if problem is None:
        return str(e).replace("\n", " ")
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_config(path: str | Path, cls: type[T], overrides: Sequence[str] = ()) -> T:
    """Read a YAML recipe, apply ``--set`` overrides and validate it against the schema ``cls``
    (e.g. :class:`usnet.tasks.classification.TrainConfig`)."""
    from .typed import build_config

    return build_config(cls, load_yaml(path), overrides, source=str(path))
