"""The package's module import graph (top-level and in-function imports) has no cycles; the worker shim
never imports hpc_sft. Pure ast, no imports of the package: `python tests/test_import_graph.py` prints it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hpc_sft"
SHIM = "hpc_sft._worker"


def modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_pkg = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return found


def imported(node: ast.AST, base: str, known: dict) -> list[str]:
    """Absolute names one import statement reaches (a from-import of a submodule names that submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    module = node.module or ""
    if node.level:
        pkg = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
        module = f"{pkg}.{module}" if module else pkg
    return [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, (path, is_pkg) in known.items():
        base = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in imported(node, base, known):
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_worker_shim_never_imports_hpc_sft():
    edges = graph()
    for name, targets in edges.items():
        if name.startswith(SHIM):
            assert all(t.startswith(SHIM) for t in targets), (name, targets)


def test_matplotlib_is_imported_only_inside_functions_of_the_plot_module():
    """Plotting stays out of the login-node import path: no module imports matplotlib when it is imported."""
    for name, (path, _) in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "matplotlib" for n in names):
                assert name == "hpc_sft.plot" and id(node) in inside, (name, node.lineno)


if __name__ == "__main__":
    g = graph()
    print(f"{len(g)} modules, {sum(map(len, g.values()))} edges, cycles: {cycles(g) or 'none'}")
    if "-v" in sys.argv:
        for name in sorted(g):
            print(name, "->", ", ".join(sorted(g[name])))
