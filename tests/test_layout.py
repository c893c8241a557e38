"""The package's import graph: the library never imports a driver (`attrvis_jax.apps`), and no two
modules import each other, directly or around a loop — at module level or inside a function.

The graph is read from the source (every `import` statement, `if TYPE_CHECKING:` blocks excepted),
so an import hidden in a function to dodge a circle counts; a second check imports every library
module in a fresh interpreter and looks at what got loaded."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import attrvis_jax

ROOT = Path(attrvis_jax.__file__).parent
DRIVERS = "attrvis_jax.apps"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
LIBRARY = sorted(m for m in MODULES if not (m == DRIVERS or m.startswith(DRIVERS + ".") or m == "attrvis_jax.__main__"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


# Imports by a computed name: the only one allowed is the registry's lazy import of the
# architecture modules (models/registry.py MODULES), and those are edges of the graph too.
DYNAMIC = {"attrvis_jax.models.registry": set(importlib.import_module("attrvis_jax.models.registry").MODULES.values())}


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path) -> set[str]:
    """The package modules `name` (at `path`) imports anywhere in its body."""
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("attrvis_jax"))
            elif isinstance(child, ast.ImportFrom):
                source = _absolute(name, child)
                if source.startswith("attrvis_jax"):
                    for alias in child.names:  # `from pkg import sub` imports the module pkg.sub
                        sub = f"{source}.{alias.name}"
                        found.add(sub if sub in MODULES else source)
            elif isinstance(child, ast.Call) and _dynamic_import(child):
                assert name in DYNAMIC, f"{name} imports a module by a computed name: add it to DYNAMIC"
                found.update(DYNAMIC[name])
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _dynamic_import(call: ast.Call) -> bool:
    f = call.func
    named = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (isinstance(f, ast.Name) and f.id == "__import__")
    literal = call.args and isinstance(call.args[0], ast.Constant)
    return named and not literal


GRAPH = {name: _imports(name, path) - {name} for name, path in MODULES.items()}


def test_the_graph_sees_the_package():
    assert "attrvis_jax.render.optimize" in LIBRARY and "attrvis_jax.apps.cli" in MODULES
    assert "attrvis_jax.config" in GRAPH["attrvis_jax.render.optimize"]  # a known edge is read
    assert all(target in MODULES for targets in GRAPH.values() for target in targets)


def test_the_library_never_imports_a_driver():
    upward = {m: sorted(t for t in GRAPH[m] if t == DRIVERS or t.startswith(DRIVERS + ".")) for m in LIBRARY}
    assert {m: t for m, t in upward.items() if t} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _without_package_faces(graph):
    """A package's `__init__` re-exports its submodules; an edge into the face stands for the
    edges out of it, so `a -> pkg -> b` reads as `a -> b` (and a loop through a face is still one)."""
    faces = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    resolved = {}
    for m, targets in graph.items():
        seen, todo, out = set(), list(targets), set()
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in faces and m.startswith(t + "."):
                todo.extend(graph[t])  # a submodule reaching its own package face: follow through
            else:
                out.add(t)
        resolved[m] = out - {m}
    return resolved


def test_no_import_circles():
    assert _cycles(_without_package_faces(GRAPH)) == []


def test_relative_and_computed_imports_are_read():
    assert "attrvis_jax.models.efficientnet_lite" in GRAPH["attrvis_jax.models.registry"]  # importlib, by name
    node = ast.parse("from ..apps import cli").body[0]
    assert _absolute("attrvis_jax.render.optimize", node) == "attrvis_jax.apps"
    assert _absolute("attrvis_jax.render", ast.parse("from . import loss").body[0]) == "attrvis_jax.render"


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_importing_the_library_loads_no_driver():
    code = (
        "import importlib, json, sys\n"
        f"for name in {LIBRARY!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('attrvis_jax.apps'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
