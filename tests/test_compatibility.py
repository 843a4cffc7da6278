"""pyproject.toml's version ranges, docs/compatibility.md's table and constraints/floor.txt agree.

The table is what users read, pyproject.toml is what pip enforces, and floor.txt is what
`make test-floor` installs: a range changed in one place and not the others fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "compatibility.md"
FLOOR = ROOT / "constraints" / "floor.txt"

#: Extras for working on obskit, not for running it: their tools are not in the table.
DEV_EXTRAS = frozenset({"test", "bench", "demo", "dev", "docs", "lint"})

_ROW = re.compile(r"^\|\s*`([^`]+)`[^|]*\|\s*`([^`]*)`\s*\|")


def _declared() -> dict[str, SpecifierSet]:
    """Every runtime dependency and user-facing extra's dependency, with its one range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra not in DEV_EXTRAS:
            reqs += items
    out: dict[str, SpecifierSet] = {}
    for raw in reqs:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        if name == "obskit":  # obskit[...]: the union of other extras
            continue
        if name in out:
            assert out[name] == req.specifier, (
                f"{name} has two ranges in pyproject.toml: {out[name]} and {req.specifier}")
        out[name] = req.specifier
    return out


def _documented() -> dict[str, SpecifierSet]:
    """The table's `dependency` | `range` cells."""
    out: dict[str, SpecifierSet] = {}
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| dependency |"))
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        m = _ROW.match(line)
        assert m, f"docs/compatibility.md: a row without `name` | `range`: {line}"
        name = canonicalize_name(Requirement(m.group(1)).name)
        assert name not in out, f"{name} is in docs/compatibility.md's table twice"
        out[name] = SpecifierSet(m.group(2))
    return out


def _pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for line in FLOOR.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints/floor.txt: {line!r} is not an exact pin (name==version)"
            out[canonicalize_name(name.split("[")[0])] = Version(version)
    return out


def _floor(spec: SpecifierSet) -> Version | None:
    lows = [Version(s.version) for s in spec if s.operator in (">=", "==")]
    return max(lows) if lows else None


def test_the_table_lists_every_dependency_with_its_range() -> None:
    declared, documented = _declared(), _documented()
    assert sorted(set(declared) - set(documented)) == [], "in pyproject.toml, not in the table"
    assert sorted(set(documented) - set(declared)) == [], "in the table, not in pyproject.toml"
    differ = {n: (str(declared[n]), str(documented[n])) for n in declared
              if declared[n] != documented[n]}
    assert differ == {}, "(pyproject.toml, docs/compatibility.md) ranges differ"


def test_every_dependency_has_a_floor() -> None:
    assert [n for n, spec in _declared().items() if _floor(spec) is None] == []


def test_floor_txt_pins_exactly_each_floor() -> None:
    pins = _pins()
    wrong = {}
    for name, spec in _declared().items():
        floor = _floor(spec)
        if pins.get(name) != floor:
            wrong[name] = (str(floor), str(pins.get(name)))
    assert wrong == {}, "(pyproject.toml floor, constraints/floor.txt pin) differ"


def test_floor_txt_extra_pins_say_why() -> None:
    """A pin of a package pyproject.toml does not name (a transitive one) needs a comment."""
    declared = _declared()
    lines = FLOOR.read_text().splitlines()
    unexplained = []
    for i, line in enumerate(lines):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        name = canonicalize_name(body.partition("==")[0].split("[")[0])
        if name in declared:
            continue
        if "#" not in line and not (i and lines[i - 1].lstrip().startswith("#")):
            unexplained.append(name)
    assert unexplained == []


@pytest.mark.parametrize("marker", ["<!-- fastpaths:begin -->", "<!-- fastpaths:end -->"])
def test_the_page_keeps_the_fast_path_markers(marker: str) -> None:
    assert DOC.read_text().count(marker) == 1
