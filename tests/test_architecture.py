"""The house in order: dependencies point down (docs/architecture.md), and public means deliberate."""

import ast
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "jaxgrad"
ENTRY_POINTS = {"jaxgrad.__main__"}  # `python -m jaxgrad` is the command line: it may import experiments


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, at top level or inside functions (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in LIBRARY.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {t for t in _imports(path) if t in modules and t != name}
        graph[name] = targets - {"jaxgrad"} if name != "jaxgrad" else targets
    return graph


def test_the_library_never_imports_experiments_or_benchmarks():
    for path in LIBRARY.rglob("*.py"):
        name = _module_name(path)
        if name in ENTRY_POINTS:
            continue
        bad = {t for t in _imports(path) if t.split(".")[0] in ("experiments", "benchmarks", "tests")}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_no_import_cycle_inside_the_library():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "jaxgrad" or nxt.startswith("jaxgrad.") and nxt in ENTRY_POINTS:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(nxt) is None:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node, [node])


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("jaxgrad.store", {"jaxgrad.plotting", "jaxgrad.engine", "jaxgrad.ensemble"}),
        ("jaxgrad.ensemble", {"jaxgrad.engine", "jaxgrad.probes", "jaxgrad.layers", "jaxgrad.theory"}),
        ("jaxgrad.cluster", {"jaxgrad.engine", "jaxgrad.ensemble", "jaxgrad.probes"}),
        ("jaxgrad.stats", {"jaxgrad.engine", "jaxgrad.ensemble", "jaxgrad.layers"}),
    ],
)
def test_what_each_module_may_import(module, forbidden):
    path = LIBRARY / (module.split(".", 1)[1].replace(".", "/") + ".py")
    assert not (_imports(path) & forbidden), f"{module} imports {sorted(_imports(path) & forbidden)}"


def test_theory_never_imports_the_engine():
    engine_side = {"jaxgrad.engine", "jaxgrad.ensemble", "jaxgrad.probes", "jaxgrad.cluster", "jaxgrad.store"}
    for path in (LIBRARY / "theory").rglob("*.py"):
        assert not (_imports(path) & engine_side), f"{path.name} imports {sorted(_imports(path) & engine_side)}"


PUBLIC = (
    ["jaxgrad"]
    + sorted(
        _module_name(p)
        for p in list(LIBRARY.glob("*.py")) + list((LIBRARY / "theory").glob("*.py"))
        if not p.name.startswith("_") and _module_name(p) != "jaxgrad.testing"
    )
    + ["jaxgrad.theory"]
)


@pytest.mark.parametrize("module", PUBLIC)
def test_public_modules_say_what_is_public(module):
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__"), f"{module} has no __all__"
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it lacks: {missing}"
    assert not [n for n in mod.__all__ if n.startswith("_")]


def test_the_version_is_written_once_and_the_package_is_typed():
    import tomllib

    import jaxgrad

    project = tomllib.loads((LIBRARY.parent / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxgrad.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", jaxgrad.__version__)
    assert (LIBRARY / "py.typed").exists() and "py.typed" in project["tool"]["setuptools"]["package-data"]["jaxgrad"]
