"""The layering rules, checked on the source: only the storage layer speaks Redis, the web
layer is not imported from below, the worker package is not imported by the engine, and no
module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feed", "ingest_workers", "models")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts).removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    """Modules imported at run time (imports under `if TYPE_CHECKING:` left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


MODULES = _modules()
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def test_only_the_stores_import_redis() -> None:
    allowed = ("feed.stores", "feed.redis_server")  # the storage layer; the module starting a local server
    speaking = sorted(
        name
        for name, imported in IMPORTS.items()
        if any(i == "redis" or i.startswith("redis.") for i in imported) and not name.startswith(allowed)
    )
    assert speaking == []


def test_the_engine_does_not_import_the_worker_package_nor_lower_layers_the_web_layer() -> None:
    def importers(target: str, exempt: tuple[str, ...]) -> list[str]:
        return sorted(
            name
            for name, imported in IMPORTS.items()
            if name.startswith("feed")
            and not name.startswith(exempt)
            and any(i == target or i.startswith(target + ".") for i in imported)
        )

    # the CLI is where every process's entry point is reached from
    assert importers("ingest_workers", ("feed.cli",)) == []
    assert importers("feed.api", ("feed.api", "feed.app")) == []


def test_no_import_cycles() -> None:
    graph = {name: {i for i in imported if i in MODULES and i != name} for name, imported in IMPORTS.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    assert cycles == []
