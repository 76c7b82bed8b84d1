"""``EdgeStore``: the gateway's durable record of movements, stock, cursors, alerts and devices.

``EdgeStore`` is the whole API. This module holds its transactional core, the movements, stock
levels, seq counter and sink cursors (the outbox); the other tables are served by two small
parts it delegates to, one line per method: the catalog (``edge_store.catalog``: items and
locations) and the status tables (``edge_store.status``: alerts and device states). All three
share one ``edge_store.access.StoreAccess`` (engine, lock, transactions) rather than a base class.

Theory of operation
-------------------

``record(movements)`` is the one write path for movements. In ONE transaction it

1. takes the writer lock: ``SELECT last_seq FROM store_state ... FOR UPDATE`` on PostgreSQL (the
   single counter row), ``BEGIN IMMEDIATE`` on SQLite (the whole file; ``FOR UPDATE`` is not
   rendered there);
2. drops movement ids already stored or repeated earlier in the batch (reported as duplicates);
3. gives the rest ``seq = last_seq + 1, last_seq + 2, ...`` in input order and inserts them in
   bulk (SQLite: the driver's executemany; PostgreSQL: COPY; see ``_BatchWriter``);
4. applies the stock arithmetic per (location, sku): ``from_location -= quantity``,
   ``to_location += quantity``, summed over the batch, then reads the touched levels and writes
   their new values in one statement, with ``last_seq`` (the highest seq that touched the level)
   and ``updated_at = now``. This read-modify-write is safe because stock levels are written
   only here, under the writer lock;
5. stores the new ``last_seq`` in the counter row and commits.

Why seq is gap-free and strictly increasing: the counter and the movements live in the same
transaction, so a rolled-back batch (invalid row, constraint violation, crash, lost connection)
rolls back its counter update too and burns no seq; this is why no database SEQUENCE or
autoincrement is used (both hand out numbers outside the transaction and leak them on
rollback). Writers are serialised by the lock taken *before* the counter is read, so two writers
never read the same ``last_seq``; on PostgreSQL the lock is released only after the commit is
visible, so a reader can never see seq ``n + 1`` committed while ``n`` is not. A relay that pages
``movements_since(cursor)`` therefore never skips a movement.

Why idempotency holds across processes: the duplicate check runs after the lock is held, so it
sees every batch committed before ours (READ COMMITTED on PostgreSQL takes a fresh snapshot per
statement; SQLite's ``BEGIN IMMEDIATE`` starts the read at the lock). The unique constraint on
``movement_id`` is the backstop.

Stock is not clamped at zero: a location such as ``yard`` or ``customer`` is a counterparty with no
physical count, and a negative shelf is information (an unrecorded receipt, a miscount) that the
alert engine reports rather than a value the store should hide. Quantities are eaches: converting
cases to eaches (``pack_size``) is the caller's business, before ``record``.

Every SKU and location a movement names must exist (``sync_catalog`` first): foreign keys reject
the batch otherwise, and the error names the unknown references (looked up by the catalog once the
batch has been rolled back).

Threading: the API is synchronous; one ``EdgeStore`` may be called from any thread (calls are
serialised by the lock of its ``StoreAccess``, which its catalog and status parts take too).
Several ``EdgeStore`` instances or processes may share one database; the database's own locking
keeps them consistent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from sqlalchemy import Dialect, Engine, Row, select, update
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from dockwatch_core.errors import StoreError
from edge_store.access import StoreAccess, table
from edge_store.catalog import Catalog
from edge_store.engine import describe_error, make_engine
from edge_store.migrate import check_at_head, upgrade_engine
from edge_store.models import (
    STORE_STATE_ID,
    MovementRow,
    SinkCursor,
    StockLevelRow,
    StoreState,
)
from edge_store.records import (
    AlertFields,
    AlertRecord,
    CatalogItemFields,
    DeviceRecord,
    DeviceStatusFields,
    ItemRecord,
    LocationRecord,
    MovementFields,
    MovementRecord,
    RecordResult,
    StockRecord,
    StoredMovement,
)
from edge_store.status import AlertsAndDevices

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=MovementFields)

_ZERO = timedelta(0)

_AnyRow = Row[*tuple[Any, ...]]

_MOVEMENT_COLUMNS = (
    MovementRow.seq,
    MovementRow.movement_id,
    MovementRow.kind,
    MovementRow.sku,
    MovementRow.quantity,
    MovementRow.from_location,
    MovementRow.to_location,
    MovementRow.source_type,
    MovementRow.source_id,
    MovementRow.observed_at,
    MovementRow.confidence,
    MovementRow.container,
    MovementRow.reason,
    MovementRow.epcs,
)


def _require_utc(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be a timezone-aware UTC datetime, got {value!r}")


class EdgeStore:
    """The edge store on SQLite or PostgreSQL. Create it with ``EdgeStore.open``."""

    def __init__(self, engine: Engine, *, site: str) -> None:
        self._db = StoreAccess(engine)
        self._site = site
        self._batch = _BatchWriter(engine.dialect)
        self._catalog = Catalog(self._db)
        self._status = AlertsAndDevices(self._db)

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | URL, *, site: str, upgrade: bool = True) -> EdgeStore:
        """Open the store at ``url`` for ``site``.

        ``url`` is a SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://user@host/db``),
        as a string or as a ``sqlalchemy.URL`` (handy to add a password read from a secret file
        with ``make_url(url).set(password=...)``). It is only ever logged redacted.

        With ``upgrade`` the schema is migrated to head first (safe when several processes open
        the same database at once); without it, a schema that is not at head is a
        ``StoreError``. The first open claims the database for ``site``; opening it later for
        another site is a ``StoreError`` (one store, one seq space, one site).
        """
        if not site:
            raise ValueError("site must not be empty")
        engine = make_engine(url)
        try:
            if upgrade:
                upgrade_engine(engine)
            else:
                check_at_head(engine)
            store = cls(engine, site=site)
            store._claim_site()
        except BaseException:
            engine.dispose()
            raise
        log.info("edge store open url=%s site=%s last_seq=%s", store.url, site, store.last_seq())
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def site(self) -> str:
        return self._site

    @property
    def url(self) -> str:
        """The store's URL with any password redacted (safe to log)."""
        return self._db.url

    def _claim_site(self) -> None:
        state = table(StoreState)
        with self._db.write("open") as conn:
            owner = conn.execute(
                select(state.c.site).where(state.c.id == STORE_STATE_ID).with_for_update()
            ).scalar_one()
            if owner is None:
                conn.execute(
                    update(state).where(state.c.id == STORE_STATE_ID).values(site=self._site)
                )
            elif owner != self._site:
                raise StoreError(
                    f"edge store at {self._db.url} belongs to site {owner!r}, not {self._site!r}"
                )

    # --- catalog (edge_store.catalog) --------------------------------------------------------

    def sync_catalog(
        self, items: Iterable[CatalogItemFields], locations: Iterable[LocationRecord]
    ) -> None:
        """Insert or update items and locations. Nothing is deleted: movements refer to them.
        An item's fields other than ``CatalogItemFields``'s are not kept (the GTIN as given)."""
        self._catalog.sync(items, locations)

    def items(self) -> list[ItemRecord]:
        """The catalog items, sorted by SKU."""
        return self._catalog.items()

    def locations(self) -> list[LocationRecord]:
        """The locations, sorted by id."""
        return self._catalog.locations()

    # --- movements ---------------------------------------------------------------------------

    def record(self, movements: Sequence[_M], *, now: datetime) -> RecordResult[_M]:
        """Commit ``movements`` (new ones get the next seqs) and their stock changes at once.

        See the module docstring for the guarantees. ``now`` becomes ``recorded_at`` of the
        movements and ``updated_at`` of the stock levels they touch. Each recorded movement comes
        back as the object given, wrapped in a ``StoredMovement`` with its seq.
        """
        _require_utc("now", now)
        if not movements:
            return RecordResult((), (), ())
        try:
            return self._record(movements, now)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            unknown = self._catalog.unknown_references(movements)
            if not unknown:
                raise
            raise StoreError(
                f"record failed on {self._db.url}: {describe_error(exc.__cause__)} ({unknown}); "
                "the batch was rolled back"
            ) from exc.__cause__

    def _record(self, movements: Sequence[_M], now: datetime) -> RecordResult[_M]:
        state = table(StoreState)
        with self._db.write("record") as conn:
            last = conn.execute(
                select(state.c.last_seq).where(state.c.id == STORE_STATE_ID).with_for_update()
            ).scalar_one()
            stored = self._batch.existing_ids(conn, list({m.movement_id for m in movements}))
            duplicates: list[str] = []
            recorded: list[StoredMovement[_M]] = []
            seen: set[str] = set()
            seq = last
            for m in movements:
                if m.movement_id in stored or m.movement_id in seen:
                    duplicates.append(m.movement_id)
                    continue
                seen.add(m.movement_id)
                seq += 1
                recorded.append(StoredMovement(seq=seq, site=self._site, movement=m))
            if not recorded:
                return RecordResult((), tuple(duplicates), ())

            self._batch.insert(conn, recorded, now)

            deltas: dict[tuple[str, str], list[int]] = {}  # (location, sku) -> [delta, last seq]
            for r in recorded:
                m = r.movement
                for location, delta in (
                    (m.from_location, -m.quantity),
                    (m.to_location, m.quantity),
                ):
                    entry = deltas.setdefault((location, m.sku), [0, 0])
                    entry[0] += delta
                    entry[1] = r.seq
            # Read-modify-write is safe: stock_levels is written only here, under the writer lock.
            current = self._batch.on_hand(conn, list(deltas))
            stamp = now.astimezone(UTC)
            changed = tuple(
                StockRecord(
                    location=location,
                    sku=sku,
                    on_hand=current.get((location, sku), 0) + delta,
                    updated_at=stamp,
                    last_seq=level_seq,
                )
                for (location, sku), (delta, level_seq) in sorted(deltas.items())
            )
            self._batch.write_levels(conn, changed)
            conn.execute(update(state).where(state.c.id == STORE_STATE_ID).values(last_seq=seq))
        return RecordResult(recorded=tuple(recorded), duplicates=tuple(duplicates), stock=changed)

    def last_seq(self) -> int:
        """The highest committed seq (0 for an empty store)."""
        state = table(StoreState)
        with self._db.read("last_seq") as conn:
            value = conn.execute(
                select(state.c.last_seq).where(state.c.id == STORE_STATE_ID)
            ).scalar_one()
        return int(value)

    def movements_since(
        self, after_seq: int, limit: int = 500
    ) -> list[StoredMovement[MovementRecord]]:
        """Up to ``limit`` movements with ``seq > after_seq``, in seq order (a page)."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._db.read("movements_since") as conn:
            rows = conn.execute(
                select(*_MOVEMENT_COLUMNS)
                .where(MovementRow.seq > after_seq)
                .order_by(MovementRow.seq)
                .limit(limit)
            ).all()
        return [self._recorded(row) for row in rows]

    def recorded_at(self, seq: int) -> datetime | None:
        """When movement ``seq`` was committed (``record``'s ``now``); None when no such seq."""
        with self._db.read("recorded_at") as conn:
            value: datetime | None = conn.execute(
                select(MovementRow.recorded_at).where(MovementRow.seq == seq)
            ).scalar()
        return value

    def movement_by_id(self, movement_id: str) -> StoredMovement[MovementRecord] | None:
        with self._db.read("movement_by_id") as conn:
            row = conn.execute(
                select(*_MOVEMENT_COLUMNS).where(MovementRow.movement_id == movement_id)
            ).first()
        return None if row is None else self._recorded(row)

    def _recorded(self, row: _AnyRow) -> StoredMovement[MovementRecord]:
        movement = MovementRecord(
            movement_id=row.movement_id,
            kind=row.kind,
            sku=row.sku,
            quantity=row.quantity,
            from_location=row.from_location,
            to_location=row.to_location,
            source_type=row.source_type,
            source_id=row.source_id,
            observed_at=row.observed_at,
            confidence=row.confidence,
            epcs=tuple(json.loads(row.epcs)),
            container=row.container,
            reason=row.reason,
        )
        return StoredMovement(seq=row.seq, site=self._site, movement=movement)

    # --- stock -------------------------------------------------------------------------------

    def stock(self, *, location: str | None = None, sku: str | None = None) -> list[StockRecord]:
        """Stock levels, optionally of one location and/or one SKU, sorted by (location, sku).

        A (location, sku) pair no movement ever touched has no level (not a zero level).
        """
        levels = table(StockLevelRow)
        query = select(levels).order_by(levels.c.location, levels.c.sku)
        if location is not None:
            query = query.where(levels.c.location == location)
        if sku is not None:
            query = query.where(levels.c.sku == sku)
        with self._db.read("stock") as conn:
            rows = conn.execute(query).all()
        return [_stock_level(row) for row in rows]

    # --- sink cursors ------------------------------------------------------------------------

    def get_cursor(self, sink: str) -> int:
        """The last seq ``sink`` acknowledged (0 when it never did)."""
        cursors = table(SinkCursor)
        with self._db.read("get_cursor") as conn:
            value = conn.execute(select(cursors.c.seq).where(cursors.c.sink == sink)).scalar()
        return 0 if value is None else int(value)

    def advance_cursor(self, sink: str, seq: int, *, now: datetime) -> None:
        """Record that ``sink`` acknowledged every movement up to ``seq``.

        Never moves a cursor backwards (a late, lower ack is ignored). ``seq`` above the store's
        ``last_seq`` would claim delivery of movements that do not exist: ``ValueError``.
        """
        _require_utc("now", now)
        if not sink:
            raise ValueError("sink must not be empty")
        if seq < 0:
            raise ValueError(f"cursor seq must be >= 0, got {seq}")
        state, cursors = table(StoreState), table(SinkCursor)
        with self._db.write("advance_cursor") as conn:
            last = conn.execute(
                select(state.c.last_seq).where(state.c.id == STORE_STATE_ID)
            ).scalar_one()
            if seq > last:
                raise ValueError(
                    f"cannot advance cursor {sink!r} to {seq}: last recorded seq is {last}"
                )
            stmt = self._db.insert(cursors)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[cursors.c.sink],
                    set_={"seq": stmt.excluded.seq, "updated_at": stmt.excluded.updated_at},
                    where=cursors.c.seq < stmt.excluded.seq,
                ),
                {"sink": sink, "seq": seq, "updated_at": now},
            )

    def cursors(self) -> dict[str, int]:
        cursors = table(SinkCursor)
        with self._db.read("cursors") as conn:
            rows = conn.execute(select(cursors.c.sink, cursors.c.seq).order_by(cursors.c.sink))
            return {row.sink: int(row.seq) for row in rows}

    # --- alerts and devices (edge_store.status) ----------------------------------------------

    def upsert_alert(self, alert: AlertFields) -> None:
        """Store ``alert``, replacing the alert with the same ``alert_id`` (raise or clear)."""
        self._status.upsert_alert(alert)

    def alerts(self, *, active_only: bool = True) -> list[AlertRecord]:
        """Alerts, oldest first; only the active ones unless ``active_only`` is false."""
        return self._status.alerts(active_only=active_only)

    def set_device_status(self, status: DeviceStatusFields) -> None:
        """Store ``status`` as the device's current state, replacing the previous one."""
        self._status.set_device_status(status)

    def device_statuses(self) -> list[DeviceRecord]:
        """The current state of every device that ever reported one, sorted by device id."""
        return self._status.device_statuses()


class _BatchWriter:
    """The two hot statements of ``record``, written for the driver of each database.

    ``Connection.execute(insert(...), dicts)`` runs every value of every row through SQLAlchemy's
    parameter processing, which costs several times what SQLite needs to insert the row, and on
    PostgreSQL an ``IN (...)`` or ``executemany`` of 500 rows is 500 parameters to parse or 500
    protocol round trips in a pipeline. So:

    - SQLite: the driver's ``executemany`` of plain tuples (in-process, no round trips);
    - PostgreSQL: ``COPY movements FROM STDIN`` (psycopg's C row encoder, one stream) and one
      ``movement_id = ANY(<array>)``.

    Statements are built from the model's table names and columns, so they cannot
    drift from the schema; the only conversion the column types would do, timestamps, is done
    here as ``UtcDateTime`` does it (naive-UTC text on SQLite, aware datetimes on PostgreSQL).
    """

    __slots__ = ("existing_sql", "insert_sql", "levels_sql", "postgresql", "write_levels_sql")

    COLUMNS = (
        "seq",
        "movement_id",
        "kind",
        "sku",
        "quantity",
        "from_location",
        "to_location",
        "source_type",
        "source_id",
        "observed_at",
        "recorded_at",
        "confidence",
        "container",
        "reason",
        "epcs",
    )

    def __init__(self, dialect: Dialect) -> None:
        movements = table(MovementRow)
        if set(self.COLUMNS) != set(movements.c.keys()):  # pragma: no cover - caught by any test
            raise StoreError(f"_BatchWriter.COLUMNS is out of date with {movements.name}")
        self.postgresql = dialect.name == "postgresql"
        columns = ", ".join(self.COLUMNS)
        if self.postgresql:
            self.insert_sql = f"COPY {movements.name} ({columns}) FROM STDIN"
            where = "movement_id = ANY(%s)"
        else:
            marks = ", ".join("?" * len(self.COLUMNS))
            # Identifiers come from the model; every value is a bound parameter.
            self.insert_sql = f"INSERT INTO {movements.name} ({columns}) VALUES ({marks})"  # noqa: S608
            where = "movement_id IN (SELECT value FROM json_each(?))"
        self.existing_sql = f"SELECT movement_id FROM {movements.name} WHERE {where}"  # noqa: S608

        levels = table(StockLevelRow)
        level_columns = ("location", "sku", "on_hand", "updated_at", "last_seq")
        if self.postgresql:
            keys = "SELECT * FROM unnest(%s::text[], %s::text[])"
            arrays = ", ".join(
                f"%s::{levels.c[c].type.compile(dialect=dialect)}[]" for c in level_columns
            )
            source = f"SELECT * FROM unnest({arrays})"  # noqa: S608 - types from the model
        else:
            keys = (
                "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)"
            )
            # "WHERE true": without it SQLite would read ON CONFLICT as a join constraint.
            source = f"VALUES ({', '.join('?' * len(level_columns))})"
        self.levels_sql = (
            f"SELECT location, sku, on_hand FROM {levels.name} "  # noqa: S608
            f"WHERE (location, sku) IN ({keys})"
        )
        self.write_levels_sql = (
            f"INSERT INTO {levels.name} ({', '.join(level_columns)}) {source} "
            "ON CONFLICT (location, sku) DO UPDATE SET on_hand = excluded.on_hand, "
            "updated_at = excluded.updated_at, last_seq = excluded.last_seq"
        )

    def on_hand(
        self, conn: Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """Current ``on_hand`` of the (location, sku) levels among ``keys`` that exist."""
        if self.postgresql:
            params: tuple[Any, ...] = ([k[0] for k in keys], [k[1] for k in keys])
        else:
            params = (json.dumps(keys),)
        return {(r[0], r[1]): int(r[2]) for r in conn.exec_driver_sql(self.levels_sql, params)}

    def write_levels(self, conn: Connection, levels: Sequence[StockRecord]) -> None:
        """Insert or overwrite ``levels`` (their final values, computed by the caller)."""
        stamp = _utc if self.postgresql else _sqlite_stamp
        rows = [
            (lv.location, lv.sku, lv.on_hand, stamp(lv.updated_at), lv.last_seq) for lv in levels
        ]
        if self.postgresql:
            conn.exec_driver_sql(self.write_levels_sql, tuple(map(list, zip(*rows, strict=True))))
        else:
            conn.exec_driver_sql(self.write_levels_sql, rows)

    def existing_ids(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored (one statement, one parameter)."""
        param = list(ids) if self.postgresql else json.dumps(list(ids))
        return set(conn.exec_driver_sql(self.existing_sql, (param,)).scalars())

    def insert(
        self, conn: Connection, recorded: Sequence[StoredMovement[MovementFields]], now: datetime
    ) -> None:
        # Every timestamp must be aware UTC (the stamps refuse anything else), so on SQLite
        # dropping the tzinfo gives UTC wall time; UtcDateTime reads this text back as the same
        # aware value. Enumerations are stored as their string values: str() of a StrEnum member
        # is its value, of a str the str itself (psycopg would dump an Enum by its name).
        stamp = _utc if self.postgresql else _sqlite_stamp
        recorded_at = stamp(now)
        rows = [
            (
                r.seq,
                m.movement_id,
                str(m.kind),
                m.sku,
                m.quantity,
                m.from_location,
                m.to_location,
                str(m.source_type),
                m.source_id,
                stamp(m.observed_at),
                recorded_at,
                m.confidence,
                m.container,
                None if m.reason is None else str(m.reason),
                _json_strings(m.epcs),
            )
            for r in recorded
            for m in (r.movement,)
        ]
        if self.postgresql:
            # COPY on the connection SQLAlchemy holds, inside its transaction.
            driver = conn.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            try:
                with driver.cursor() as cursor, cursor.copy(self.insert_sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            except psycopg.Error as exc:
                # Bypassing SQLAlchemy also bypassed its error wrapping: wrap as it would
                # (IntegrityError for a foreign key, OperationalError for a lost server...).
                raise DBAPIError.instance(self.insert_sql, None, exc, psycopg.Error) from exc
        else:
            conn.exec_driver_sql(self.insert_sql, rows)


def _sqlite_stamp(value: datetime) -> str:
    """``value`` as UtcDateTime's SQLite text. A UTC value's isoformat ends in "+00:00", which
    the 26-character prefix drops; one that does not (naive, another offset) is refused."""
    text = value.isoformat(" ", "microseconds")
    if text[26:] != "+00:00":
        raise ValueError(f"the store takes timezone-aware UTC datetimes, got {value!r}")
    return text[:26]


def _json_strings(values: Sequence[str]) -> str:
    """``json.dumps(list(values))`` (compact), without the encoder's per-call set-up: this runs
    once per recorded movement."""
    return "[" + ",".join(map(encode_basestring_ascii, values)) + "]"


def _utc(value: datetime) -> datetime:
    """``value`` as it is, once it is known to be aware UTC (``_sqlite_stamp``'s rule)."""
    if value.utcoffset() != _ZERO:
        raise ValueError(f"the store takes timezone-aware UTC datetimes, got {value!r}")
    return value


def _stock_level(row: _AnyRow) -> StockRecord:
    return StockRecord(
        location=row.location,
        sku=row.sku,
        on_hand=int(row.on_hand),
        updated_at=row.updated_at,
        last_seq=int(row.last_seq),
    )
