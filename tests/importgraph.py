"""The project's import graph, read from the source with `ast` (nothing is imported).

Nodes are the modules of tunebench/ and stages/ ("tunebench.models.loading", "stages.predict");
an edge is any import of one from another, anywhere in the module (also inside functions,
where the heavy-import rule puts most of them). Package __init__ files are left out: they
hold only a docstring (tests/test_import_graph.py checks it), so no stage depends on them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tunebench", "stages")


def modules(root: Path = REPO_ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of the project packages (no __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if path.name != "__init__.py":
                parts = path.relative_to(root).with_suffix("").parts
                found[".".join(parts)] = path
    return found


def imported_names(path: Path, package: str) -> set[str]:
    """Every dotted name an import in `path` can load: for `from a.b import c`, both a.b and
    a.b.c (c may be a module); relative imports are resolved against `package`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def graph(root: Path = REPO_ROOT) -> dict[str, frozenset[str]]:
    """Module -> the project modules it imports directly."""
    known = modules(root)
    return {name: frozenset(n for n in imported_names(path, name.rsplit(".", 1)[0])
                            if n in known and n != name)
            for name, path in known.items()}


def closure(module: str, root: Path = REPO_ROOT) -> set[str]:
    """`module` and every project module it imports, transitively."""
    edges, seen, todo = graph(root), {module}, [module]
    while todo:
        for dep in edges[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def module_file(module: str) -> str:
    """The repo-relative path DVC lists: stages.predict -> stages/predict.py."""
    return module.replace(".", "/") + ".py"


def cycles(root: Path = REPO_ROOT) -> list[list[str]]:
    """One cycle (a, b, ..., a) per strongly connected component of more than one module."""
    edges = graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(edges[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_cycle_in(sorted(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _cycle_in(component: list[str], edges: dict[str, frozenset[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for dep in sorted(edges[node] & members):
            if dep == start:
                return [*paths[node], start]
            if dep not in paths:
                paths[dep] = [*paths[node], dep]
                todo.append(dep)
    raise AssertionError(f"no cycle through {start} in {component}")  # unreachable for an SCC
