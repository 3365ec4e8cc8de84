"""The import graph: services never import one another, `shared` never imports a service, and no module imports
itself back through others, not even for type checking (docs/architecture.md)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
SERVICES = ("homeiq.collector", "homeiq.writer", "homeiq.replayer")
TOOLS = ("homeiq.ha_sim", "homeiq.local")


def module_name(path: Path) -> str:
    """`src/homeiq/shared/ha/client.py` → `homeiq.shared.ha.client`; a package's `__init__` is the package."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every homeiq module `path` imports, anywhere in it (functions and `if TYPE_CHECKING:` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:  # `from homeiq.shared.ha import frames` imports the module `frames`
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in SRC.rglob("*.py")}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def owner(module: str) -> str:
    """The service or tool a module belongs to, else `homeiq.shared` (or `homeiq` itself)."""
    return next((top for top in (*SERVICES, *TOOLS, "homeiq.shared") if module == top or
                 module.startswith(top + ".")), "homeiq")


def test_the_graph_is_read_from_the_source() -> None:
    edges = graph()
    assert "homeiq.shared.ha.client" in edges["homeiq.collector.session"]
    assert "homeiq.shared.ha.frames" in edges["homeiq.shared.ha.client"]  # `from homeiq.shared.ha import frames`
    assert len(edges) > 80


def test_no_service_imports_another_service_and_shared_imports_none() -> None:
    crossing = sorted(
        f"{module} → {imported}"
        for module, imported_set in graph().items()
        for imported in imported_set
        if owner(imported) != owner(module) and owner(imported) in (*SERVICES, *TOOLS) and owner(module) not in TOOLS
    )
    assert crossing == []


@pytest.mark.parametrize("package", ["homeiq.shared", "homeiq.shared.ha", "homeiq.shared.influx"])
def test_shared_packages_import_no_service(package: str) -> None:
    above = sorted(f"{module} → {imported}" for module, imported_set in graph().items()
                   if module.startswith(package + ".") for imported in imported_set
                   if owner(imported) != "homeiq.shared")
    assert above == []


def test_no_module_imports_itself_back() -> None:
    try:
        graphlib.TopologicalSorter(graph()).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' → '.join(exc.args[1])}")
