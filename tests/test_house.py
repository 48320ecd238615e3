"""The house rules (DESIGN.md, "The house"), read from the source: who may import whom, and no import circles.

The import graph is built from the source text (``ast``), every ``import`` counted — at the top of a module,
inside a function (lazy imports) or under ``TYPE_CHECKING`` — so a circle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Import name → folder (setup.cfg ``package_dir``).
PACKAGES = {"drone_core": "drone_core", "drone_gadgets": "gadgets", "drone_training": "training", "drone_cli": "cli"}
#: drone_gadgets' sub-packages → the ones they may import (besides themselves); the entry ``gadget`` and the
#: package's own ``__init__`` are listed as ``gadget`` and ``""``.
GADGET_LAYERS = {
    "files": set(),
    "recon": {"files"},
    "wire": {"recon", "files"},
    "scans": {"recon", "files"},
    "apps": {"files", "recon", "wire", "scans"},
    "gadget": {"recon", "wire"},
    "": set(),
}


def _modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of the product's packages."""
    out = {}
    for name, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules ``module`` imports (absolute names; ``from P import x`` counts ``P.x`` when that is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """``{module: the product modules it imports}`` plus, under the key ``module + ":external"``, the rest."""
    modules = _modules()
    known = set(modules)
    out: dict[str, set[str]] = {}
    for module, path in modules.items():
        imported = _imports(module, path, known)
        out[module] = {m for m in imported if m in known and m != module}
        out[module + ":external"] = {m.split(".")[0] for m in imported if m not in known}
    return out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle() -> None:
    """The checker itself: a circle of three, a tail outside it, and an acyclic graph."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_graph_sees_lazy_and_relative_imports(graph: dict[str, set[str]]) -> None:
    """The graph holds a relative import inside a function (b1maps reads ``.h5`` B1 files lazily) and a
    sibling module imported by ``from . import``; otherwise the checks below would pass on an empty graph."""
    assert "drone_gadgets.files.h5io" in graph["drone_gadgets.recon.b1maps"]
    assert "drone_gadgets.recon.prepare" in graph["drone_gadgets.apps.server"]
    assert "drone_gadgets.wire.external" in graph["drone_gadgets.gadget"]
    assert len([m for m in graph if not m.endswith(":external")]) > 60


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    edges = {m: deps for m, deps in graph.items() if not m.endswith(":external")}
    assert _cycles(edges) == []


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_gadget_subpackages_import_one_way(graph: dict[str, set[str]]) -> None:
    """files ← recon ← wire ← apps; scans from recon and files; the entry ``gadget`` from recon and wire."""
    wrong = []
    for module, deps in graph.items():
        if not module.startswith("drone_gadgets") or module.endswith(":external"):
            continue
        here = _subpackage(module)
        assert here in GADGET_LAYERS, f"{module}: a new top-level entry of gadgets/ ({here!r}); see the house map"
        for dep in deps:
            if dep.startswith("drone_gadgets"):
                there = _subpackage(dep)
                if there != here and there not in GADGET_LAYERS[here]:
                    wrong.append(f"{module} imports {dep}")
    assert wrong == []


def test_packages_import_what_the_house_allows(graph: dict[str, set[str]]) -> None:
    """drone_core never sees the stream; the packages never import the command line; gadgets and training
    do not know each other."""
    forbidden = {
        "drone_core": {"ismrmrd", "gadgetron", "h5py", "drone_gadgets", "drone_training", "drone_cli"},
        "drone_gadgets": {"drone_training", "drone_cli"},
        "drone_training": {"ismrmrd", "gadgetron", "drone_gadgets", "drone_cli"},
    }
    wrong = []
    for module, deps in graph.items():
        top = module.split(".")[0].split(":")[0]
        names = {d.split(".")[0] for d in deps}
        bad = names & forbidden.get(top, set())
        if bad:
            wrong.append(f"{module.removesuffix(':external')} imports {sorted(bad)}")
    assert wrong == []


def test_gadgets_top_level_is_the_entry_and_the_subpackages() -> None:
    """A new developer finds one entry module and the sub-packages; each sub-package says what it may import."""
    entries = sorted(p.name for p in (ROOT / "gadgets").iterdir() if not p.name.startswith(("_", ".")))
    assert entries == sorted(["gadget.py", *[name for name in GADGET_LAYERS if name not in ("", "gadget")]])
    for name in GADGET_LAYERS:
        if name in ("", "gadget"):
            continue
        doc = ast.get_docstring(ast.parse((ROOT / "gadgets" / name / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "May import" in doc, f"gadgets/{name}/__init__.py: its docstring should say what it may import"


def test_every_module_lists_its_public_names(graph: dict[str, set[str]]) -> None:
    """drone_gadgets' modules (not the packages' ``__init__``) list their public names in ``__all__``."""
    missing = []
    for module, path in _modules().items():
        if not module.startswith("drone_gadgets") or path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(isinstance(n, (ast.Assign, ast.AnnAssign)) and "__all__" in ast.unparse(n).split("=")[0]
                   for n in tree.body):
            missing.append(module)
    assert missing == []

