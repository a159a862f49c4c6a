"""The house keeps its shape: the import graph of the production packages, built from their source (ast),
has no cycle and no edge that points the wrong way.

The layers, bottom to top: `protocol` < `agent`, `controller` < `console` < `sandbox`; inside the
controller, `core` < configuration (`controller.config`, `controller.notify_config`) < `adapters` < `app`.
Every import counts, also one inside a function or under TYPE_CHECKING: a lazy import is still a seam.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "agent", "controller", "console", "sandbox")

# package -> the packages it may import (besides itself and third-party code)
ALLOWED = {
    "protocol": set(),
    "agent": {"protocol"},
    "controller": {"protocol"},
    "console": {"protocol", "controller"},
    "sandbox": {"protocol", "agent", "controller", "console"},
}

# rooms inside the controller, bottom to top: a room may import its own and the ones below it
CONTROLLER_ROOMS = ["controller.core", "controller.config", "controller.adapters", "controller.app"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def build_graph() -> dict[str, set[str]]:
    """module -> the production modules it imports (names resolved to modules that exist)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        for name in _imports(path, module):
            # `from a.b import c` names a.b.c (a module) or an attribute of a.b: keep the longest that exists
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
        graph.setdefault(module, set())
    return dict(graph)


def _room(module: str) -> int | None:
    if module.startswith("controller.notify_config"):
        return CONTROLLER_ROOMS.index("controller.config")
    for i, room in enumerate(CONTROLLER_ROOMS):
        if module == room or module.startswith(room + "."):
            return i
    return None


def forbidden_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        src_pkg = src.split(".")[0]
        for dst in targets:
            dst_pkg = dst.split(".")[0]
            if dst_pkg != src_pkg and dst_pkg not in ALLOWED[src_pkg]:
                bad.append(f"{src} -> {dst} ({src_pkg} may not import {dst_pkg})")
            src_room, dst_room = _room(src), _room(dst)
            if src_room is not None and dst_room is not None and dst_room > src_room:
                bad.append(f"{src} -> {dst} ({CONTROLLER_ROOMS[src_room]} may not import "
                           f"{CONTROLLER_ROOMS[dst_room]})")
    return sorted(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the modules (package `__init__` edges included), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_points_the_wrong_way() -> None:
    assert forbidden_edges(build_graph()) == []


def test_no_import_cycle_among_the_production_modules() -> None:
    assert find_cycle(build_graph()) is None


def test_the_checks_can_fail() -> None:
    """The checks themselves: a wrong-way edge and a cycle are found in a graph made for it."""
    graph = {"agent.x": {"controller.core.view"}, "controller.core.view": {"controller.app.watch"},
             "controller.app.watch": {"controller.core.view"}, "controller.adapters.api": {"console.cli"}}
    bad = forbidden_edges(graph)
    assert any("agent may not import controller" in b for b in bad)
    assert any("controller.core may not import controller.app" in b for b in bad)
    assert any("controller may not import console" in b for b in bad)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"controller.app.watch", "controller.core.view"}


@pytest.mark.parametrize("package", ["protocol", "agent", "controller"])
def test_production_never_imports_the_sandbox_or_the_console(package: str) -> None:
    graph = build_graph()
    reached = {dst for src, dsts in graph.items() if src.split(".")[0] == package for dst in dsts}
    assert not {m for m in reached if m.split(".")[0] in ("sandbox", "console")}
