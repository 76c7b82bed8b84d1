"""Which package may import which: the rules of the layout, checked on the source.

- ``gateway/domain`` is pure: the standard library only (the house rule). The contract's value
  types (``gateway/domain/model.py``) and the GS1 helpers (``gateway/domain/gs1.py``) live in it.
- ``dockwatch_core`` (the error hierarchy) imports the standard library only.
- ``edge_store`` imports nothing of the gateway nor of the simulators, not even through
  ``importlib`` or a module named in a string: it takes what it stores by its fields and gives
  back records of its own. Checked on the source, and by opening, migrating and writing a store
  in an interpreter where importing any gateway or simulator module fails.
- the service (``gateway`` but the ``demo`` command, which launches simulators) never imports
  the simulators; the simulators may import the gateway (the LLRP codec lives in the gateway
  for that reason).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Standard-library modules that would make the domain (and the core it builds on) impure all
# the same.
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
    assert {p.name for p in sources("dockwatch_core")} >= {"__init__.py", "errors.py"}
    assert {p.name for p in sources("gateway/domain")} >= {"model.py", "gs1.py"}
    assert len(sources("gateway/domain")) >= 10
    assert len(sources("gateway")) > len(sources("gateway/domain")) + 10
    assert len(sources("edge_store")) >= 8


def assert_pure(path: Path, *may_import: str) -> None:
    for module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in IMPURE_STDLIB, f"{path.relative_to(ROOT)} imports {module}"
        assert top in sys.stdlib_module_names or is_within(module, *may_import), (
            f"{path.relative_to(ROOT)} imports {module}"
        )


@pytest.mark.parametrize("path", sources("dockwatch_core"), ids=lambda p: p.name)
def test_the_core_imports_only_the_standard_library(path: Path) -> None:
    assert_pure(path, "dockwatch_core")


@pytest.mark.parametrize("path", sources("gateway/domain"), ids=lambda p: p.name)
def test_domain_imports_only_the_standard_library(path: Path) -> None:
    assert_pure(path, "gateway.domain")


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


# -- the edge store depends on nothing of the gateway ----------------------------------------------

# A string that names a gateway or simulator module ("gateway.config", "gateway.cli:main"): what
# importlib or an entry point would be handed to reach one without an import statement. Prose
# (docstrings, messages) that merely mentions the gateway does not match.
_MODULE_NAME = re.compile(r"(gateway|simulators)(\.\w+)*(:[\w.]+)?")


def named_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_NAME.fullmatch(node.value.strip())
        ):
            yield node.value


def test_the_edge_store_imports_nothing_of_the_gateway() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources("edge_store")
        for module in imported_modules(path)
        # importlib: a module named in a string would hide a dependency from this check
        if is_within(module, "gateway", "simulators", "importlib")
    ] + [
        f"{path.relative_to(ROOT)} names {name!r}"
        for path in sources("edge_store")
        for name in named_modules(path)
    ]
    assert offenders == []


# Run in a fresh interpreter where importing any gateway or simulator module fails: opening a
# store (the Alembic migrations included), syncing a catalog, recording a movement and reading it
# and the stock back must not need them. What the store is given are its own records.
_STORE_WITHOUT_THE_GATEWAY = """
import sys
from datetime import UTC, datetime


class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("gateway", "simulators"):
            raise ImportError(f"the edge store imported {name}")
        return None


sys.meta_path.insert(0, _Refuse())

import edge_store.engine, edge_store.migrate, edge_store.models  # noqa: E401
from edge_store import EdgeStore, ItemRecord, LocationRecord, MovementRecord

at = datetime(2026, 1, 5, 8, tzinfo=UTC)
with EdgeStore.open(sys.argv[1], site="dc-test") as store:
    store.sync_catalog(
        [ItemRecord("SKU-1", None, "Widget", 1, None, None)],
        [LocationRecord("yard", "virtual"), LocationRecord("receiving", "dock")],
    )
    store.record(
        [MovementRecord("m-1", "receipt", "SKU-1", 3, "yard", "receiving", "rfid_portal", "door-1",
                        at, 0.9)],
        now=at,
    )
    stock = {(s.location, s.sku): s.on_hand for s in store.stock()}
    [stored] = store.movements_since(0)
print(stock[("receiving", "SKU-1")], stored.seq, stored.movement.kind)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("gateway", "simulators")))
"""


def test_the_edge_store_opens_migrates_and_writes_without_the_gateway(tmp_path: Path) -> None:
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
    assert out.stdout.split("\n")[:2] == ["3 1 receipt", "[]"]


MAX_CLASS_LINES = 400
MAX_ROOT_LINES = 300


def test_no_class_is_over_400_lines_and_the_root_stays_small() -> None:
    """Issue 15's shape: one job per class (a class past 400 lines is doing several), and a
    composition root that only builds and runs the parts."""
    offenders = []
    for package in ("dockwatch_core", "gateway", "edge_store", "simulators"):
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
