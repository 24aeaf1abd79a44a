"""The package's layout rules, checked on the source: every module under the size cap, and the
data flow's floors (recipe -> config -> data + model -> trainer -> checkpoint -> calibration ->
spectrum/search/select -> export, docs/design.md) never imported upwards, not even inside a
function. A new package must be given its floor here, which is the point: where it sits is a
decision, not an accident."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "usnet"
MAX_LINES = 400

#: Bottom to top. A module may import its own package and anything on a lower floor; two
#: packages on one floor do not import each other.
FLOORS: tuple[frozenset[str], ...] = tuple(
    frozenset(f.split())
    for f in (
        "errors version",
        "logs io devices shapes",
        "nn",
        "convert",
        "models",
        "checkpoint calibration data config",
        "export",
        "profile",
        "spectrum training",
        "latency tasks",
        "search",
        "commands",
        "__init__",
        "cli",
        "__main__",
    )
)
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def top(path: Path) -> str:
    """The top-level part of usnet a file belongs to (``nn`` for nn/conv.py, ``io`` for io.py)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def imported_tops(path: Path, source: str | None = None) -> set[tuple[int, str]]:
    """(line, top-level part of usnet) of every import of usnet in ``path`` (or in ``source``
    read as if it were that file), at any depth."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    found = set()
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                base += node.module.split(".") if node.module else []
            else:
                base = (node.module or "").split(".")
            if base[0] != "usnet":
                continue
            rest = base[1:]
            names = [rest[0]] if rest else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("usnet.")]
            names += ["__init__" for a in node.names if a.name == "usnet"]
        for name in names:
            found.add((node.lineno, name if name in FLOOR else "__init__"))
    return found


def test_every_module_is_under_the_size_cap() -> None:
    long = {str(p.relative_to(SRC)): n for p in modules() if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not long, f"modules of {MAX_LINES} lines or more: {long}"


def test_every_part_of_the_package_has_a_floor() -> None:
    assert {top(p) for p in modules()} <= set(FLOOR), "give the new package its floor in FLOORS"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_floor_imports_a_higher_one(path: Path) -> None:
    me = top(path)
    upward = [
        f"line {line}: {me} (floor {FLOOR[me]}) imports {other} (floor {FLOOR[other]})"
        for line, other in sorted(imported_tops(path))
        if other != me and FLOOR[other] >= FLOOR[me]
    ]
    assert not upward, "; ".join(upward)


def test_the_check_sees_an_upward_import_inside_a_function() -> None:
    """The checker itself can fail: imports of a higher floor at any depth, relative or
    absolute, and ``import usnet`` (the package's top) are all found."""
    source = (
        "import torch\n"
        "def f():\n    from ..training import trainer\n"
        "class A:\n    def g(self):\n        import usnet.search.core\n        import usnet\n"
        "from .. import spectrum\n"
    )
    found = {name for _, name in imported_tops(SRC / "nn" / "conv.py", source)}
    assert found == {"training", "search", "__init__", "spectrum"}
