"""Engines for the edge store, and the one place URLs are made safe to print.

SQLite is tuned for an edge box that must survive power loss and be shared by two processes
(the gateway and, say, ``dockwatch db upgrade`` or a test writing while the gateway reads):

- ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers.
- ``synchronous=NORMAL``: in WAL mode a commit is durable against a process crash; a power cut
  can lose the last few commits but never corrupts the file. That is the usual trade for an
  edge device; the relay re-sends from the cursors, so nothing acknowledged downstream is lost
  that the store has not also kept.
- ``foreign_keys=ON``: SQLite leaves them off per connection unless asked.
- ``busy_timeout``: a second writer waits for the lock instead of failing at once.

pysqlite's own transaction handling is switched off (``isolation_level = None``) and SQLAlchemy's
``begin`` event emits ``BEGIN`` itself, so a write transaction can start with ``BEGIN IMMEDIATE``:
it takes SQLite's write lock *before* reading anything, which is what makes reading the seq
counter and writing the next seqs one atomic step across processes. A deferred ``BEGIN`` that
later upgrades to a writer would instead fail with ``SQLITE_BUSY`` when another process committed
in between. Connections are marked as writers with the ``WRITE_OPTION`` execution option.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from dockwatch_core.errors import StoreError

WRITE_OPTION = "dockwatch_write"
"""Execution option: a connection carrying it begins with ``BEGIN IMMEDIATE`` on SQLite."""

SQLITE_BUSY_TIMEOUT_MS = 15_000
"""How long a SQLite writer waits for another process' write lock before giving up."""

_SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token", "key")
_USERINFO_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z0-9+.\-]+://)(?P<user>[^:/@]*):[^@/]*@")


PG_LIVENESS: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
"""libpq connection parameters the PostgreSQL engine sets unless the URL sets them."""


def redact_url(url: str | URL) -> str:
    """``url`` with its password (and any secret-looking query parameter) replaced by ``***``.

    Never raises: a string SQLAlchemy cannot parse is redacted with a regular expression, so
    an error message about a malformed URL still does not leak what looks like a password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return _USERINFO_PASSWORD.sub(r"\g<scheme>\g<user>:***@", str(url))
    query = {
        key: ("***" if any(s in key.lower() for s in _SECRET_QUERY_KEYS) else value)
        for key, value in parsed.query.items()
    }
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("=%2A%2A%2A", "=***")  # the renderer percent-encodes query values


def with_password(url: str | URL, password: str | None) -> str | URL:
    """The URL to connect with: the config keeps passwords out of URLs (they would be logged);
    they come from a secret file or variable and are added here, as a ``URL`` object."""
    if password is None:
        return url
    return make_url(url).set(password=password)


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in {"", ":memory:"} or url.query.get("mode") == "memory"


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url`` with the store's connection settings (see module docstring).

    Connects lazily. Raises ``StoreError`` for an unusable URL or a missing driver.
    """
    try:
        parsed = make_url(url)
        backend = _supported_backend(parsed)
        if backend == "sqlite":
            engine = _sqlite_engine(parsed)
        else:
            # pre_ping: the gateway runs for months and the database may restart under it.
            # prepare_threshold=None: psycopg would otherwise prepare frequent statements on the
            # server, and PostgreSQL may then keep a generic plan chosen while `movements` was
            # nearly empty: a sequential scan for the duplicate check (movement_id = ANY(...)),
            # which then scans the whole table for every batch (seen: 0.5 s per batch at 100k
            # rows). Unprepared statements are planned with their actual parameters. (Forcing
            # custom plans server-side instead would also re-plan every foreign-key check.)
            # connect_timeout and TCP keepalives: a database host that goes silent (a network
            # partition, a paused VM) must fail the gateway's store calls within seconds, not
            # hang them for the kernel's retransmission timeout. A URL parameter overrides each.
            liveness = {key: value for key, value in PG_LIVENESS.items() if key not in parsed.query}
            engine = create_engine(
                parsed,
                pool_pre_ping=True,
                connect_args={"prepare_threshold": None, **liveness},
            )
    except (ArgumentError, ValueError, ImportError) as exc:
        # Parse errors quote the URL they got; quote the redacted one instead.
        detail = str(exc).replace(str(url), redact_url(url))
        raise StoreError(f"unusable store URL {redact_url(url)}: {detail}") from exc
    return engine


def _supported_backend(url: URL) -> str:
    backend = url.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise ValueError(f"the edge store runs on SQLite or PostgreSQL, not {backend!r}")
    return backend


def _sqlite_engine(url: URL) -> Engine:
    memory = _is_memory(url)
    if memory:
        # One shared connection, or every thread would see its own empty database. The store
        # serialises calls with its own lock, so sharing it across threads is safe.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        assert isinstance(dbapi_connection, sqlite3.Connection)
        # We emit BEGIN ourselves (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching an existing file to WAL needs a lock too.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS:d}")
            if not memory:
                _switch_to_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock.

    SQLite does not call the busy handler for a journal-mode change: two processes opening a
    new database at once (the gateway and ``dockwatch db upgrade``, say) saw the second fail
    at once with "database is locked". Once one of them has switched, the mode is persistent
    and the statement is a no-op for everybody else.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
            if not busy or time.monotonic() + pause > deadline:
                raise
        else:
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def describe_error(exc: BaseException) -> str:
    """One line about a SQLAlchemy/DBAPI error: the driver's message without SQL or parameters.

    SQLAlchemy's own ``str()`` appends the statement and (truncated) bound values, which would
    put movement payloads into logs; the driver's first line is what an operator needs.
    """
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    text = str(source).strip().splitlines()
    first = text[0] if text else ""
    name = type(source).__name__
    return f"{name}: {first[:300]}" if first else name


@contextmanager
def store_errors(operation: str, url: str | URL) -> Iterator[None]:
    """Turn SQLAlchemy/DBAPI errors raised inside into ``StoreError`` naming the operation and
    the redacted URL."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(f"{operation} failed on {redact_url(url)}: {describe_error(exc)}") from exc
