"""Which package may import which: the rules of the layout, checked on the source.

- ``gateway/domain`` is pure: the standard library and the shared core (``dockwatch_core``:
  value types and the one error hierarchy) only.
- ``dockwatch_core`` imports only the standard library.
- the service (``gateway`` but the ``demo`` command, which launches simulators) never imports
  the simulators; the simulators may import the gateway (the LLRP codec lives in the gateway
  for that reason).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Standard-library modules that would make the domain impure all the same.
IMPURE_STDLIB = frozenset(
    {"asyncio", "logging", "socket", "sqlite3", "threading", "subprocess", "time", "os", "io"}
)


def imported_modules(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; relative imports are within its package)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def is_within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_rules_see_the_sources() -> None:
    # A rule over no files holds vacuously: make sure each one reads what it is about.
    assert len(sources("gateway/domain")) >= 10
    assert sources("dockwatch_core")
    assert len(sources("gateway")) > len(sources("gateway/domain")) + 10


@pytest.mark.parametrize("path", sources("gateway/domain"), ids=lambda p: p.name)
def test_domain_imports_only_the_standard_library_and_the_core(path: Path) -> None:
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in IMPURE_STDLIB, f"{path.name} imports {module}"
        assert top in sys.stdlib_module_names or is_within(
            module, "gateway.domain", "dockwatch_core"
        ), f"{path.name} imports {module}"


@pytest.mark.parametrize("path", sources("dockwatch_core"), ids=lambda p: p.name)
def test_core_imports_only_the_standard_library(path: Path) -> None:
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in IMPURE_STDLIB, f"{path.name} imports {module}"
        assert top in sys.stdlib_module_names or is_within(module, "dockwatch_core"), (
            f"{path.name} imports {module}"
        )


def test_the_service_never_imports_the_simulators() -> None:
    demo = ROOT / "gateway" / "demo.py"
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources("gateway")
        if path != demo
        for module in imported_modules(path)
        if is_within(module, "simulators")
    ]
    assert offenders == []
