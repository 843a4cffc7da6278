"""Dependencies point one way: no module of obskit imports, at run time, a module that imports
it back (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not). Imports by name
count too: ``importlib.import_module("obskit.x")``, and in a module that imports a computed name,
every obskit module its strings name ("obskit.x" or "obskit.x:function")."""

from __future__ import annotations

import ast
from pathlib import Path

import obskit

ROOT = Path(obskit.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


#: In ``_imports``' answer: the module imports a name it computes, which no reader can follow.
_COMPUTED = "<computed name>"


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The obskit modules ``mod`` imports (and ``_COMPUTED`` if it imports a computed name).
    ``from obskit import x`` names the submodule ``x`` when there is one (its parent package is
    imported first by Python in any case)."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    named: set[str] = set()  # obskit modules its strings name: imported if it imports by name

    def add(node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix
                     for a in node.names]
        found.update(n for n in names if n in mods and n != mod)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            add(node)
        elif isinstance(node, ast.Call) and _imports_by_name(node):
            target = node.args[0] if node.args else None
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                found.add(target.value)
            else:
                found.add(_COMPUTED)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            module, colon, attr = node.value.partition(":")
            if module in mods and (not colon or attr.isidentifier()):
                named.add(module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    if _COMPUTED in found:
        found |= named
    return {m for m in found if (m in mods and m != mod) or m == _COMPUTED}


def _imports_by_name(call: ast.Call) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    name = ast.unparse(call.func)
    return name == "__import__" or name.rpartition(".")[2] == "import_module"


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_no_module_imports_a_module_that_imports_it_back():
    mods = _modules()
    graph = {mod: _imports(mod, path, mods) - {_COMPUTED} for mod, path in mods.items()}
    assert graph["obskit._init"], "the import reader found nothing: it is broken"
    cycles = [c for c in (_cycle_from(m, graph) for m in sorted(graph)) if c]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_core_below_the_log_pipeline_knows_nothing_above_it():
    """The deferred queue, error reporting and the log pipeline know nothing of metrics or of
    the HTTP integrations that use them."""
    mods = _modules()
    for low in ("obskit._deferred", "obskit._internal", "obskit._logging"):
        deps = _imports(low, mods[low], mods)
        above = {d for d in deps if d.startswith(("obskit.metrics", "obskit.integrations",
                                                  "obskit.journey", "obskit._init"))}
        assert not above, f"{low} imports {sorted(above)}"


def test_the_core_imports_nothing_by_a_computed_name():
    """A top-level module of obskit (the core) that imported a computed name could reach up into
    an integration that imports it back, and no reader could tell: the CLI and the integrations'
    registry may, the core may not."""
    mods = _modules()
    core = [m for m, path in mods.items() if path.parent == ROOT]
    computed = [m for m in core if _COMPUTED in _imports(m, mods[m], mods)]
    assert not computed, f"{computed} import a module by a computed name"


def test_the_fast_path_registry_imports_nothing_of_obskit():
    """Every fast path reports to obskit._fastpaths, so it cannot import (or probe) any of them;
    obskit.cli.doctor knows which module decides which path."""
    mods = _modules()
    assert _imports("obskit._fastpaths", mods["obskit._fastpaths"], mods) == set()


def test_the_reader_sees_imports_by_name(tmp_path):
    mods = _modules()
    source = tmp_path / "probe.py"
    source.write_text(
        "import importlib\n"
        "PROBES = ('obskit._tracing:probe_fast_paths', 'obskit.rabbitmq._propagation')\n"
        "def probe(name):\n"
        "    importlib.import_module('obskit.integrations._http')\n"
        "    return importlib.import_module(name)\n")
    assert _imports("obskit._probe", source, mods) == {
        "obskit._tracing", "obskit.rabbitmq._propagation", "obskit.integrations._http",
        _COMPUTED}
    source.write_text("LOGGER = 'obskit.rabbitmq'\nimport importlib\n"
                      "importlib.import_module('obskit._tracing')\n")
    assert _imports("obskit._probe", source, mods) == {"obskit._tracing"}
