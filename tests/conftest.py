"""Session-wide fixtures: a private Mosquitto broker and the databases the store runs on.

Real services, never the machine's shared ones. Under ``CI=true`` a missing Mosquitto or an
unreachable PostgreSQL is a failure, not a skip: CI must exercise both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings

from tests.support.broker import MosquittoBroker, find_mosquitto

# CI runs the same examples every time (a property test that fails there fails for everyone, and
# is reproducible); developers' runs explore new random ones, which is how the shelf engine's
# weak spots were found. Each one found is pinned with @example next to its test.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    settings.load_profile("ci")
PG_ADMIN_URL = os.environ.get(
    "DOCKWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def missing(what: str) -> None:
    """Skip a test needing ``what`` locally; fail it in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """The test session's private broker, shared by tests that do not stop it."""
    if find_mosquitto() is None:
        missing("the mosquitto binary")
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker owned by one test, for fault tests that stop and restart it."""
    if find_mosquitto() is None:
        missing("the mosquitto binary")
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


def _pg_reachable() -> str | None:
    """Create a private database for this session; return its URL, or None if unreachable."""
    conninfo = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"dockwatch_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        return None
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _pg_drop(url: str) -> None:
    name = url.rpartition("/")[2]
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str | None]:
    url = _pg_reachable()
    yield url
    if url is not None:
        _pg_drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, pg_session_url: str | None) -> str:
    """An empty database, once on SQLite (always) and once on PostgreSQL (when reachable)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'edge.db'}"
    if pg_session_url is None:
        missing(f"PostgreSQL at {PG_ADMIN_URL}")
    assert pg_session_url is not None
    conninfo = pg_session_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return pg_session_url
