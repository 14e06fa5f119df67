"""The module API is one face: modules and examples import umvu.module and
nothing else from umvu (docs/modules.md). Built-in modules reach their own
submodules with relative imports, which are fine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

SOURCES = sorted(p for d in ("modules", "examples") for p in (REPO / d).rglob("*.py"))


def _umvu_imports(path: Path, text: str | None = None) -> list[str]:
    """umvu modules the file at path imports (text: its source, if not
    read from path)."""
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "umvu"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "umvu":
                if node.module == "umvu":
                    found += [f"umvu.{a.name}" for a in node.names]
                else:
                    found.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # modules/ is installed as umvu.modules: a relative import that
            # climbs out of it reaches umvu itself
            package = ["umvu", "modules", *path.relative_to(REPO / "modules").parts[:-1]] \
                if path.is_relative_to(REPO / "modules") else ["examples"]
            base = package[:len(package) - (node.level - 1)]
            if len(base) < 2:
                found.append(".".join(["umvu", *filter(None, [node.module])]))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_only_umvu_module(path):
    bad = [name for name in _umvu_imports(path)
           if name not in ("umvu.module", "umvu.modules") and
           not name.startswith("umvu.modules.")]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: only umvu.module is the API"


def test_the_check_catches_a_side_door():
    """The walker above must see each way of reaching into umvu."""
    where = REPO / "modules" / "vufs" / "probe.py"
    for text, bad in (("from umvu import procinfo\n", ["umvu.procinfo"]),
                      ("import umvu.vfs\n", ["umvu.vfs"]),
                      ("from umvu.lowerview import caller\n", ["umvu.lowerview"]),
                      ("from ...vfs import Vfs\n", ["umvu.vfs"]),
                      ("from ..vufuse import pyfs\n", []),
                      ("from umvu.module import Module\n", ["umvu.module"])):
        assert _umvu_imports(where, text) == bad, text
