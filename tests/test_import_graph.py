"""No import cycles between the modules of ``streamer``, read statically from the sources.

Every import counts — at module level, inside functions, under ``if TYPE_CHECKING`` — because
each hides the same thing: two modules that cannot be understood, tested or moved one without
the other. (A function-level import that closed a cycle between a Richardson-Lucy plan and its
in-place iteration went with a reference cycle that cost a soak 9.5 % of memory.) ``import a.b``
and ``from a import b`` are edges to ``a.b``; ``from a import name`` is an edge to ``a``. The
parent packages that Python also runs are not counted: a package's ``__init__`` is not its
submodules' dependency in the sense that matters here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamer"

# Cycles that exist today outside streamer/restoration/, each written from its smallest
# module; their owners are taking them apart. Remove an entry when its cycle is gone (the
# test says so). No entry may name a module of streamer.restoration.
ALLOWED_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, name, path.name == "__init__.py")
            submodules = {f"{source}.{alias.name}" for alias in node.names} & known
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(source)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle of ``graph``, each written from its smallest module."""
    found: set[tuple[str, ...]] = set()
    for start in sorted(graph):
        # Cycles through ``start`` and modules after it only: each is found once.
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for following in graph[node]:
                if following == start:
                    found.add(path)
                elif following > start and following not in path:
                    stack.append((following, path + (following,)))
    return found


def _describe(cycle: tuple[str, ...]) -> str:
    return " -> ".join(cycle + cycle[:1])


def test_the_graph_sees_every_kind_of_import(tmp_path):
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n"
        "def f():\n    from pkg import c\n    from .d import name\n")
    graph = imports("pkg.a", tmp_path / "a.py", {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"})
    assert graph == {"pkg.b", "pkg.c", "pkg.d"}
    assert cycles({"a": {"b"}, "b": {"c", "a"}, "c": {"a"}}) == {("a", "b"), ("a", "b", "c")}


def test_no_import_cycles():
    found = cycles(import_graph())
    new = sorted(_describe(cycle) for cycle in found - ALLOWED_CYCLES)
    assert not new, "import cycles:\n" + "\n".join(new)
    fixed = sorted(_describe(cycle) for cycle in ALLOWED_CYCLES - found)
    assert not fixed, "gone, remove from ALLOWED_CYCLES:\n" + "\n".join(fixed)


def test_no_allowed_cycle_runs_through_restoration():
    assert not [cycle for cycle in ALLOWED_CYCLES
                if any(name.startswith("streamer.restoration.") for name in cycle)]
