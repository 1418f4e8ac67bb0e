"""The tree's arrows point down (STYLE.md 16-17): every import of the product's code, those
inside functions and under TYPE_CHECKING included, goes from a layer to one it may use, and the
modules import no cycle. Read with `ast` from the source, so nothing is imported to check it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "workers", "benchmarks", "migrations")
BASE = {"orchestrator", "orchestrator.clock", "orchestrator.config", "orchestrator.errors"}
BASE |= {"orchestrator.ids"}

# Which layers each layer may import (its own always). Lower layers know nothing of higher ones:
# the cloud client knows no database and no metrics, the domain no framework at all.
BELOW_SERVICES = {"base", "domain", "db", "cloud", "observability", "runtime"}
MAY_IMPORT: dict[str, set[str]] = {
    "base": set(),
    "domain": {"base"},
    "db": {"base", "domain"},
    "cloud": {"base", "domain"},
    "simulator": {"base", "domain", "cloud"},
    "observability": {"base", "domain", "db", "cloud"},
    "runtime": {"base", "domain", "db", "cloud", "observability"},
    "services": BELOW_SERVICES,
    "web": {"base"},
    "api": BELOW_SERVICES | {"services", "web"},
    "workers": BELOW_SERVICES | {"services"},
    "migrations": {"base", "db"},
    "devstack": BELOW_SERVICES | {"simulator"},
    "cli": BELOW_SERVICES
    | {"services", "api", "workers", "simulator", "devstack"}
    | {"migrations", "benchmarks", "web"},
    "benchmarks": BELOW_SERVICES | {"services", "simulator", "devstack", "migrations"},
}
# Only these may sit at the package root: the shared base, and the runtime that wires it.
ROOT_MODULES = {"__init__", "__main__", "clock", "config", "errors", "ids", "runtime"}


def layer_of(module: str) -> str:
    if module in BASE:
        return "base"
    if module in ("orchestrator.runtime",):
        return "runtime"
    if module == "orchestrator.__main__":
        return "cli"
    parts = module.split(".")
    if parts[0] != "orchestrator":
        return parts[0]
    return parts[1]


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "versions" in path.parts:
                continue  # migration scripts import alembic and sqlalchemy only
            relative = path.relative_to(REPO).with_suffix("")
            parts = list(relative.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imports_of(module: str, path: Path) -> set[str]:
    """Every product module `module` imports, at any depth of its code."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name.split(".")[0] in PACKAGES}
    return found


def known(graph: dict[str, set[str]], name: str) -> str | None:
    """The module `name` denotes (`from pkg import module` names a module, or a symbol)."""
    while name and name not in graph:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph = {module: set() for module, _ in modules()}
    for module, path in modules():
        for name in imports_of(module, path):
            target = known(graph, name)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def test_every_import_goes_to_a_layer_below_or_beside() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) != layer_of(module)
        and layer_of(target) not in MAY_IMPORT[layer_of(module)]
    )
    assert not wrong, "\n".join(wrong)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles, each as the path that comes back to where it started (depth first)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_shared_base_lies_at_the_package_root() -> None:
    loose = sorted(p.stem for p in (REPO / "orchestrator").glob("*.py"))
    assert set(loose) <= ROOT_MODULES, loose


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from orchestrator.db import models\n"
        "def f() -> None:\n    import orchestrator.api.app\n"
        "from . import sibling\n"
    )
    found = imports_of("orchestrator.cloud.m", source)
    assert {"orchestrator.db", "orchestrator.api.app", "orchestrator.cloud.sibling"} <= found
    assert layer_of("orchestrator.db.models") == "db"
    assert layer_of("orchestrator.config") == "base"
    assert "db" not in MAY_IMPORT["cloud"]
