"""The import graph of tunebench/ and stages/: no cycles, and the library never imports the
stages (the stages are thin CLIs over it, so the dependency runs one way)."""

import ast

from tests.importgraph import PACKAGES, REPO_ROOT, cycles, graph


def test_no_import_cycles():
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_library_never_imports_the_stages():
    bad = [f"{module} imports {dep}" for module, deps in sorted(graph().items())
           if module.startswith("tunebench.") for dep in sorted(deps)
           if dep.startswith("stages.")]
    assert not bad, "\n".join(bad)


def test_package_inits_hold_no_code():
    """importgraph leaves the __init__ files out of the graph (and of dvc.yaml's deps); that is
    right only while they hold nothing but a docstring and constants."""
    inits = [path for package in PACKAGES for path in (REPO_ROOT / package).rglob("__init__.py")]
    assert len(inits) > len(PACKAGES), "the sub-packages' __init__ files were not found"
    for path in inits:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            assert isinstance(node, ast.Expr | ast.Assign), f"{path}: {ast.dump(node)[:80]}"
            assert not any(isinstance(n, ast.Call) for n in ast.walk(node)), f"{path}: a call"
