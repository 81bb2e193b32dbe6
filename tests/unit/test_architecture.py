"""The import structure of ``src/vlmforge``: no cycles (imports inside functions count: they hide a cycle
from Python, not from a reader) and every import pointing down the layers of the design.

Layers, top to bottom: verbs; curation internals and exports (they load trained runs); the run lifecycle and
artifacts; training, evaluation and planning; the base (models, data, config, losses, storage, ...).
A module may import its own layer's modules (except another verb) and lower layers, never higher ones.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LAYERS = (  # top to bottom: the first prefix a module name starts with places it
    ("vlmforge.verbs",),
    ("vlmforge.curate", "vlmforge.interop"),
    ("vlmforge.runs",),
    ("vlmforge.training", "vlmforge.evaluate", "vlmforge.planning"),
    ("vlmforge",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The vlmforge modules ``path`` imports anywhere in its code (module level, inside functions and
    classes), except under ``if TYPE_CHECKING:``, which never runs. ``from package import name`` counts
    as importing the submodule when ``name`` is one."""
    found: set[str] = set()
    skipped: set[int] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                for alias in node.names
            ]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {module_name(path)}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    paths = sorted((SRC / "vlmforge").rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    return next(i for i, prefixes in enumerate(LAYERS) if module.startswith(prefixes))


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    # imported inside a function only: the checker would miss hidden cycles without these
    assert "vlmforge.training.fit" in graph["vlmforge.planning.calibrate"]
    assert "vlmforge.runs.artifacts" in graph["vlmforge.curate.scorers"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_verbs_import_no_verb_and_nothing_imports_a_verb() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if target.startswith("vlmforge.verbs.") and module != "vlmforge.verbs"
    )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_point_down(module: str) -> None:
    upward = sorted(target for target in import_graph()[module] if layer(target) < layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports higher layers: {upward}"
