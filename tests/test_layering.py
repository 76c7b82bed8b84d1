"""Which package may import which: the rules of the layout, checked on the source.

- ``gateway/domain`` is pure: the standard library only.
- ``edge_store`` depends on the gateway's pure value types (``dockwatch_core.model``) and its one
  error hierarchy (``dockwatch_core.errors``), on nothing else of the gateway (nor the simulators):
  checked on the source, and by running a store in an interpreter where importing any other
  gateway module fails.
- the service (``gateway`` but the ``demo`` command, which launches simulators) never imports
  the simulators; the simulators may import the gateway (the LLRP codec lives in the gateway
  for that reason).
"""

from __future__ import annotations

import ast
import subprocess
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
    assert len(sources("gateway")) > len(sources("gateway/domain")) + 10


@pytest.mark.parametrize("path", sources("gateway/domain"), ids=lambda p: p.name)
def test_domain_imports_only_the_standard_library(path: Path) -> None:
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in IMPURE_STDLIB, f"{path.name} imports {module}"
        assert top in sys.stdlib_module_names or is_within(
            module, "gateway.domain", "dockwatch_core"
        ), f"{path.name} imports {module}"


def test_the_shared_errors_import_only_the_standard_library() -> None:
    for module in imported_modules(ROOT / "dockwatch_core" / "errors.py"):
        assert module.split(".")[0] in sys.stdlib_module_names, f"errors.py imports {module}"


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


# -- the edge store depends on nothing in the gateway but its value types and errors -------------

# What the edge store may import of the gateway: the pure value types and the error hierarchy
# (and the packages that hold them, which import nothing).
STORE_MAY_IMPORT = ("dockwatch_core.model", "dockwatch_core.errors")

# Run in a fresh interpreter where importing the rest of the gateway or the simulators fails:
# opening a store
# (the Alembic migrations included), syncing a catalog, recording a movement and reading the
# stock back must not need them.
_STORE_WITHOUT_THE_GATEWAY = """
import sys
from datetime import UTC, datetime


ALLOWED = set()


class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("gateway", "simulators") and name not in ALLOWED:
            raise ImportError(f"the edge store imported {name}")
        return None


sys.meta_path.insert(0, _Refuse())

import edge_store.engine, edge_store.migrate, edge_store.models  # noqa: E401
from dockwatch_core.model import LocationId, Movement, MovementId, MovementKind, Sku, SourceType
from edge_store import EdgeStore, ItemRecord, LocationRecord

at = datetime(2026, 1, 5, 8, tzinfo=UTC)
with EdgeStore.open(sys.argv[1], site="dc-test") as store:
    store.sync_catalog(
        [ItemRecord(sku="SKU-1", name="Widget")],
        [LocationRecord("yard", "virtual"), LocationRecord("receiving", "dock")],
    )
    store.record(
        [
            Movement(
                movement_id=MovementId("m-1"),
                kind=MovementKind.RECEIPT,
                sku=Sku("SKU-1"),
                quantity=3,
                from_location=LocationId("yard"),
                to_location=LocationId("receiving"),
                source_type=SourceType.RFID_PORTAL,
                source_id="door-1",
                observed_at=at,
                confidence=0.9,
            )
        ],
        now=at,
    )
    stock = {(s.location, s.sku): s.on_hand for s in store.stock()}
print(stock[("receiving", "SKU-1")])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("gateway", "simulators")))
"""


def test_the_edge_store_imports_nothing_from_the_gateway_but_its_types() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources("edge_store")
        for module in imported_modules(path)
        # importlib: a module named in a string would hide a dependency from this check
        if is_within(module, "gateway", "simulators", "importlib")
        and not is_within(module, *STORE_MAY_IMPORT)
    ]
    assert offenders == []


def test_the_edge_store_runs_without_the_gateway(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    out = subprocess.run(
        [sys.executable, "-c", _STORE_WITHOUT_THE_GATEWAY, url],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["3", "[]"]


MAX_CLASS_LINES = 400
MAX_ROOT_LINES = 300


def test_no_class_is_over_400_lines_and_the_root_stays_small() -> None:
    """Issue 15's shape: one job per class (a class past 400 lines is doing several), and a
    composition root that only builds and runs the parts."""
    offenders = []
    for package in ("gateway", "edge_store", "simulators"):
        for path in sources(package):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    assert node.end_lineno is not None
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_CLASS_LINES:
                        offenders.append(f"{path.relative_to(ROOT)}: {node.name} {length} lines")
    assert offenders == []
    root = (ROOT / "gateway" / "app.py").read_text(encoding="utf-8").count("\n")
    assert root < MAX_ROOT_LINES, f"gateway/app.py has {root} lines"
