"""Alembic migrations agree with the models, and ``dockwatch db upgrade`` applies them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from edge_store import EdgeStore
from edge_store.engine import make_engine
from edge_store.migrate import head_revision, upgrade
from edge_store.models import Base
from gateway.cli import main
from tests.test_store_support import SITE, T0, movement, open_store


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    assert upgrade(database_url) == head_revision()
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_upgrade_is_idempotent_and_keeps_data(database_url: str) -> None:
    with open_store(database_url) as store:
        store.record([movement("a")], now=T0)
    assert upgrade(database_url) == head_revision()
    assert upgrade(database_url) == head_revision()
    with EdgeStore.open(database_url, site=SITE, upgrade=False) as store:
        assert store.last_seq() == 1


def test_cli_db_upgrade_url(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--url", database_url]) == 0
    out = capsys.readouterr().out
    assert f"schema at revision {head_revision()}" in out
    with EdgeStore.open(database_url, site=SITE, upgrade=False) as store:
        assert store.last_seq() == 0


def test_cli_db_upgrade_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'edge.db'}"
    (tmp_path / "var").mkdir()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"site: {{id: dc-east}}\nstore: {{url: '{url}'}}\n", encoding="utf-8")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert f"schema at revision {head_revision()}" in capsys.readouterr().out
    with EdgeStore.open(url, site=SITE, upgrade=False) as store:
        assert store.last_seq() == 0


def test_cli_db_upgrade_failure_hides_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://dock:s3cr3t-pw@127.0.0.1:1/edge?connect_timeout=2"
    assert main(["db", "upgrade", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "schema upgrade failed on postgresql+psycopg://dock:***@127.0.0.1:1/edge" in err
    assert "s3cr3t-pw" not in err


def test_cli_db_upgrade_needs_a_url_or_a_config() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["db", "upgrade"])
    assert exc.value.code == 2


def test_console_script_runs_the_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "db", "upgrade", "--url", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == f"{url}: schema at revision {head_revision()} (head)"
