"""Layers by import: no module of ``flux`` takes part in an import cycle.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``. A seam
that must call upward takes a Protocol or a callable instead (see STYLE.md, habit 18).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import flux

PACKAGE = Path(flux.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _owner(name: str, known: Mapping[str, Path]) -> str | None:
    """The module of ``flux`` that an imported dotted name lives in (the longest known prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, source: str, known: Mapping[str, Path], is_package: bool = False) -> set[str]:
    """The modules of ``flux`` that ``module`` imports anywhere in its ``source``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(node, module, is_package)
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` imports mod.
            names = [f"{source_module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            owner = _owner(name, known)
            if owner is not None and owner != module:
                found.add(owner)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        module: imports_of(module, path.read_text(), known, path.name == "__init__.py")
        for module, path in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(group: list[str], graph: Mapping[str, set[str]]) -> Iterator[str]:
    members = set(group)
    for source in group:
        for target in sorted(graph[source] & members):
            yield f"{source} -> {target}"


def test_flux_has_no_import_cycle() -> None:
    graph = import_graph()
    report = ["\n  ".join(["cycle:", *describe(group, graph)]) for group in cycles(graph)]
    assert report == [], "\n".join(report)


def test_the_graph_sees_every_kind_of_import() -> None:
    """The reader follows imports in functions, under TYPE_CHECKING and relative ones."""
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import flux.clock\n"
        "from . import status\n"
        "if TYPE_CHECKING:\n"
        "    from flux.records import RunRecord\n"
        "def f() -> None:\n"
        "    from flux.errors import FluxError\n"
    )
    seen = imports_of("flux.probe", source, modules())
    assert seen == {"flux.clock", "flux.status", "flux.records", "flux.errors"}


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert list(describe(["a", "b", "c"], graph)) == ["a -> b", "b -> c", "c -> a"]
