"""The package's layers, read from the import statements of its modules (``ast``).

Every import counts: at the top, inside functions, and under ``if TYPE_CHECKING:`` (a cycle
that only type checkers see is still two modules that cannot be understood apart). No two
modules may import each other, directly or round a loop, and no core module may import an
integration: those sit on top and need extras the core must not.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import trio_supervise

PACKAGE = "trio_supervise"
ROOT = Path(trio_supervise.__file__).parent
INTEGRATIONS = f"{PACKAGE}.integrations"
#: Programs built on the integrations, as a user's would be: not core.
# Above the integrations: the demo, and the command line's ``run --health`` (which serves
# the probes through the http integration, imported only when asked for).
APPLICATIONS = {f"{PACKAGE}._demo", f"{PACKAGE}._cli_run"}


def package_sources() -> dict[str, tuple[str, bool]]:
    """Module name -> (source, whether it is a package's ``__init__``), for every module."""
    sources: dict[str, tuple[str, bool]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        sources[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports, relative imports resolved.

    ``from X import Y`` is an import of ``X.Y`` when that is a module, else of ``X``.
    """
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        package = module if is_package else module.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    imported.add(submodule if submodule in sources else target)
        graph[module] = {name for name in imported if name in sources and name != module}
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or ``[]`` when there is none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return []


def core_imports_of_integrations(graph: Mapping[str, set[str]]) -> list[str]:
    def is_integration(module: str) -> bool:
        return module == INTEGRATIONS or module.startswith(f"{INTEGRATIONS}.")

    return sorted(
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if not is_integration(module) and module not in APPLICATIONS
        for imported in imports
        if is_integration(imported)
    )


# ----------------------------------------------------------------------------- the rules


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph(package_sources())) == []


def test_no_core_module_imports_an_integration() -> None:
    assert core_imports_of_integrations(import_graph(package_sources())) == []


def test_the_graph_sees_the_layers_it_checks() -> None:
    graph = import_graph(package_sources())
    assert {"trio_supervise._signals", "trio_supervise._systemd"} <= graph["trio_supervise._tree"]
    assert "trio_supervise._tree" in graph["trio_supervise._run"]
    assert "trio_supervise._signals" in graph["trio_supervise._cli"]
    assert "trio_supervise._util" in graph["trio_supervise"]  # ``from . import _util``
    database = "trio_supervise.integrations.database"
    assert "trio_supervise" in graph[f"{database}._base"]  # ``from ... import Band``
    assert f"{database}._threads" in graph[f"{database}._base"]  # ``from . import _threads``
    assert f"{database}._sqlite" in graph[database]  # a package's ``from ._sqlite import``
    assert "trio_supervise.integrations.http" in graph["trio_supervise._demo"]


# ------------------------------------------------------------------- the checks themselves


def test_a_cycle_through_a_type_checking_import_is_found() -> None:
    sources = {
        "pkg": ("", True),
        "pkg._a": ("from ._b import B\n", False),
        "pkg._b": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._c import C\n",
            False,
        ),
        "pkg._c": ("def f():\n    from pkg import _a\n", False),
    }
    assert find_cycle(import_graph(sources)) == ["pkg._a", "pkg._b", "pkg._c", "pkg._a"]


def test_an_import_of_the_parent_package_is_an_edge_to_its_init() -> None:
    sources = {
        "pkg": ("from .sub import mod\n", True),
        "pkg.sub": ("", True),
        "pkg.sub.mod": ("from .. import thing\n", False),
    }
    assert import_graph(sources) == {
        "pkg": {"pkg.sub.mod"},
        "pkg.sub": set(),
        "pkg.sub.mod": {"pkg"},
    }
    assert find_cycle(import_graph(sources)) == ["pkg", "pkg.sub.mod", "pkg"]


def test_a_core_module_importing_an_integration_is_named() -> None:
    graph = {
        f"{PACKAGE}._tree": {f"{INTEGRATIONS}.http"},
        f"{PACKAGE}._demo": {f"{INTEGRATIONS}.http"},
        f"{INTEGRATIONS}.http": {f"{PACKAGE}._tree"},
    }
    assert core_imports_of_integrations(graph) == [
        "trio_supervise._tree imports trio_supervise.integrations.http"
    ]
