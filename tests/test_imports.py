"""The import graph of the repository, built with ``ast`` over every Python file (imports inside functions
included): the library ``vipo`` never imports the analysis layer, and no two modules import each other, directly
or through others. A module here is a dotted name (``vipo.sweep``, ``analysis.tables``, ``sweep`` for the
top-level script); ``from a import b`` is an edge to ``a.b`` when that is a module of the tree, else to ``a``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".venv-ref", ".git", "results", "node_modules"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the tree outside virtual environments and results."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP or part.startswith(".venv") for part in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the tree that ``name`` imports anywhere in its file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y / from . import y
                pkg = _package(name, path).split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import a.b.c` where only a.b is a file of the tree
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_real_edges(graph):
    # known edges, top level and inside a function, absolute and relative: the parser is not silently empty
    assert "vipo.config" in graph["vipo.cli"] or "vipo.train" in graph["vipo.cli"]
    assert "vipo.records" in graph["analysis.curves"]
    assert "analysis.make_tables" in graph["analysis.tables.__main__"]
    assert len(graph) > 100


def test_cycle_finder_on_hand_made_graphs():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]


def test_relative_and_from_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from . import b\nfrom .b import thing\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    import pkg.c as c\n")
    (tmp_path / "pkg" / "c.py").write_text("from pkg import a\nimport os\n")
    g = import_graph(tmp_path)
    assert g["pkg.a"] == {"pkg.b"} and g["pkg.b"] == {"pkg.c"} and g["pkg.c"] == {"pkg.a"}
    assert cycles(g) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_library_never_imports_the_analysis_layer(graph):
    bad = sorted(f"{m} imports {t}" for m, ts in graph.items() if m == "vipo" or m.startswith("vipo.")
                 for t in ts if t == "analysis" or t.startswith("analysis."))
    assert not bad, "vipo must not import analysis (the command-line layer calls it): " + "; ".join(bad)


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(" <-> ".join(c) for c in found)
