"""``StoreAccess``: the one way into the database that an ``EdgeStore`` and its parts share.

An ``EdgeStore`` is a facade over a few small classes, each owning one group of tables: the
store itself (movements, stock levels, the seq counter, sink cursors; ``edge_store.repository``),
the catalog (``edge_store.catalog``) and the status tables (alerts and device states;
``edge_store.status``). They do not inherit from a common base; each is given the same
``StoreAccess``, which holds what they must share:

- the engine and its redacted URL (the only form of the URL that is logged or put in errors);
- the instance lock: every read and write of any part holds it, so calls on one ``EdgeStore``
  are serialised whichever part they go to, exactly as if the store were one object;
- the closed flag: once ``close`` has disposed of the engine, every part refuses to run;
- ``read``/``write``: a transaction that converts database errors to ``StoreError`` naming the
  operation. ``write`` marks the connection so SQLite begins with ``BEGIN IMMEDIATE`` (see
  ``edge_store.engine``);
- the dialect's ``insert`` construct, the one with ``on_conflict_do_update`` (upserts are written
  the same way on SQLite and PostgreSQL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Dialect, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dockwatch_core.errors import StoreError
from edge_store.engine import WRITE_OPTION, redact_url, store_errors
from edge_store.models import Base

UpsertInsert = postgresql.Insert | sqlite.Insert


class StoreAccess:
    """The engine, lock, closed flag and transactions shared by the parts of one ``EdgeStore``."""

    __slots__ = ("_closed", "_engine", "_lock", "insert", "url")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.url = redact_url(engine.url)  # the only form of the URL that is logged
        self._lock = threading.Lock()
        self._closed = False
        self.insert = _insert_for(engine.dialect.name)

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._engine.dispose()

    @contextmanager
    def read(self, operation: str) -> Iterator[Connection]:
        with self._lock, store_errors(operation, self.url):
            self._check_open(operation)
            with self._engine.connect() as conn, conn.begin():
                yield conn

    @contextmanager
    def write(self, operation: str) -> Iterator[Connection]:
        """A write transaction; commits when the block ends without an exception."""
        with self._lock, store_errors(operation, self.url):
            self._check_open(operation)
            with self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    yield conn

    def upsert(self, table: Table, keys: Sequence[str], columns: Sequence[str]) -> UpsertInsert:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE SET column = excluded.column``."""
        stmt = self.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={c: stmt.excluded[c] for c in columns},
        )

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise StoreError(f"{operation} on {self.url}: the store is closed")


def table(model: type[Base]) -> Table:
    """The Core ``Table`` of an ORM model (the store writes Core statements, not ORM objects)."""
    result = model.__table__
    assert isinstance(result, Table)
    return result


def _insert_for(dialect: str) -> Callable[[Table], UpsertInsert]:
    """The dialect's ``insert`` construct, the one that has ``on_conflict_do_update``."""
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise StoreError(f"the edge store runs on SQLite or PostgreSQL, not {dialect}")
