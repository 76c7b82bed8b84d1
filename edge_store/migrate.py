"""Schema migrations: ``upgrade(url)`` (the gateway's ``dockwatch db upgrade`` command calls it).

Alembic is configured in code (no ``alembic.ini`` at run time): the script directory is
``edge_store/migrations`` inside the installed package. An upgrade runs every pending revision in
ONE transaction, after taking a migration lock, so two processes starting at once against the same
database (the gateway and a ``db upgrade``, two tests...) do not both try to create the tables:
on SQLite the lock is ``BEGIN IMMEDIATE``; on PostgreSQL a transaction-scoped advisory lock.
The second process then finds the schema at head and has nothing to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL, Connection

from dockwatch_core.errors import StoreError
from edge_store.engine import WRITE_OPTION, make_engine, redact_url, store_errors

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

PG_MIGRATION_LOCK = 0x646F636B_77617463  # "dockwatc": any constant unique to this application
"""Key of the PostgreSQL advisory lock that serialises upgrades."""

VERSION_TABLE = "alembic_version"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the packaged migrations, optionally bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database (None for an empty one).

    Read directly rather than through a ``MigrationContext``, which logs its set-up at INFO on
    every call: opening the store should be quiet when there is nothing to migrate.
    """
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(versions) > 1:  # pragma: no cover - our history never branches
        raise StoreError(f"the schema has several heads {versions}; expected one")
    return versions[0] if versions else None


def upgrade_engine(engine: Engine) -> str:
    """Upgrade the database behind ``engine`` to head; return the revision it is now at."""
    url = engine.url
    with store_errors("schema upgrade", url), engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            before = current_revision(conn)
            head = head_revision()
            if before != head:
                try:
                    command.upgrade(alembic_config(conn), "head")
                except CommandError as exc:
                    # e.g. the database is at a revision this (older) package does not know.
                    raise StoreError(f"schema upgrade failed on {redact_url(url)}: {exc}") from exc
            after = current_revision(conn)
        if after is None:  # pragma: no cover - upgrade to head always stamps a revision
            raise StoreError(f"schema upgrade left {redact_url(url)} without a revision")
        if before != after:
            log.info(
                "edge store schema upgraded url=%s from=%s to=%s", redact_url(url), before, after
            )
        return after


def check_at_head(engine: Engine) -> str:
    """Raise ``StoreError`` unless the schema is at head (used when upgrading is not wanted)."""
    url = engine.url
    with store_errors("schema check", url), engine.connect() as conn:
        revision = current_revision(conn)
    head = head_revision()
    if revision != head:
        raise StoreError(
            f"edge store at {redact_url(url)} has schema revision {revision or 'none'}, "
            f"this dockwatch needs {head}: run `dockwatch db upgrade`"
        )
    return revision


def upgrade(url: str | URL) -> str:
    """Upgrade the store at ``url`` to the latest schema; return the revision (e.g. ``"0001"``)."""
    engine = make_engine(url)
    try:
        return upgrade_engine(engine)
    finally:
        engine.dispose()
