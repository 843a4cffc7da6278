"""Dependencies point one way: no module of obskit imports, at run time, a module that imports
it back (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not)."""

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


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The obskit modules ``mod`` imports. ``from obskit import x`` names the submodule ``x``
    when there is one (its parent package is imported first by Python in any case)."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()

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
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


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
    graph = {mod: _imports(mod, path, mods) for mod, path in mods.items()}
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
