"""The edge store's tables, as typed SQLAlchemy 2 declarative models.

The repository writes and reads these tables with Core statements (``insert(Model)``,
``select(Model.col)``) for speed; the ORM classes are the schema's single definition, and the
Alembic migrations under ``edge_store/migrations`` must agree with them (a test compares both).

Conventions:

- Every timestamp is a ``UtcDateTime``: timezone-aware UTC in and out. PostgreSQL stores
  ``timestamptz``; SQLite has no such type, so it stores naive UTC text and the type re-attaches
  UTC when reading.
- Enumerations (movement kind, source type, alert kind, severity, device state) are stored as
  their string values, not as native enums: a new kind needs no schema migration.
- ``movements.seq`` is assigned by the repository, never by the database (see
  ``edge_store.repository``): ``store_state.last_seq`` is the counter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names, identical on SQLite and PostgreSQL and in the migrations."""

STORE_STATE_ID = 1
"""``store_state`` holds exactly one row, with this id."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on every backend.

    Binding a naive datetime is refused (``ValueError``): guessing its zone would silently shift
    every timestamp by the host's offset. On SQLite the value is stored as naive-UTC text in the
    same layout SQLAlchemy's SQLite ``DATETIME`` uses (``2026-01-05 08:00:00.123456``, always with
    microseconds so text order is time order); the processors are written out here rather than
    chained through ``DateTime``'s because they run once per timestamp of every recorded
    movement, and ``isoformat``/``fromisoformat`` are several times faster than the generic ones.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any]:
        if dialect.name == "sqlite":
            return _bind_sqlite
        return _bind_aware

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None]:
        if dialect.name == "sqlite":
            return _result_sqlite
        return _result_aware


def _require_aware(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the store only takes aware UTC times")


def _bind_sqlite(value: datetime | None) -> str | None:
    if value is None:
        return None
    _require_aware(value)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _bind_aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    _require_aware(value)
    return value


def _result_sqlite(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _result_aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a timestamp without time zone column: UTC by convention
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def seq_type() -> TypeEngine[int]:
    """BIGINT, except on SQLite where ``INTEGER PRIMARY KEY`` makes the column the rowid."""
    return BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
    }


class Item(Base):
    """A catalog item (from the config's ``catalog.items``)."""

    __tablename__ = "items"

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    gtin: Mapped[str | None] = mapped_column(String(14), unique=True)
    name: Mapped[str] = mapped_column(Text)
    unit_weight_g: Mapped[float | None] = mapped_column(Float)
    pack_size: Mapped[int] = mapped_column(Integer)
    reorder_point: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("pack_size >= 1", name="pack_size_positive"),)


class Location(Base):
    """A place stock can be in: a yard, a receiving area, a shelf, a customer..."""

    __tablename__ = "locations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))


class StockLevelRow(Base):
    """On-hand eaches of one SKU at one location; ``last_seq`` is the last movement applied."""

    __tablename__ = "stock_levels"

    location: Mapped[str] = mapped_column(String(64), ForeignKey("locations.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), ForeignKey("items.sku"), primary_key=True)
    on_hand: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]
    last_seq: Mapped[int] = mapped_column(BigInteger)


class MovementRow(Base):
    """One committed movement. ``seq`` is gap-free; ``movement_id`` is the idempotency key."""

    __tablename__ = "movements"

    seq: Mapped[int] = mapped_column(seq_type(), primary_key=True, autoincrement=False)
    movement_id: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    sku: Mapped[str] = mapped_column(String(64), ForeignKey("items.sku"))
    quantity: Mapped[int] = mapped_column(Integer)
    from_location: Mapped[str] = mapped_column(String(64), ForeignKey("locations.id"))
    to_location: Mapped[str] = mapped_column(String(64), ForeignKey("locations.id"))
    source_type: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(255))
    observed_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    confidence: Mapped[float] = mapped_column(Float)
    container: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(String(32))
    epcs: Mapped[str] = mapped_column(Text)
    """A JSON array of EPC strings, kept as text: written once, read whole, never queried."""

    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        CheckConstraint("from_location <> to_location", name="distinct_locations"),
    )


class StoreState(Base):
    """The single-row counter behind ``movements.seq``, and the site the store belongs to.

    Writers lock this row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
    locks the whole file) before reading ``last_seq``; see ``edge_store.repository``.
    """

    __tablename__ = "store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    site: Mapped[str | None] = mapped_column(String(64))
    last_seq: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint(f"id = {STORE_STATE_ID}", name="single_row"),
        CheckConstraint("last_seq >= 0", name="last_seq_non_negative"),
    )


class SinkCursor(Base):
    """How far a sink (MQTT, central gRPC...) has acknowledged: every seq <= ``seq``."""

    __tablename__ = "sink_cursors"

    sink: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]

    __table_args__ = (CheckConstraint("seq >= 0", name="seq_non_negative"),)


class AlertRow(Base):
    __tablename__ = "alerts"

    alert_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime]
    active: Mapped[bool]
    details: Mapped[dict[str, Any]]


class DeviceStatusRow(Base):
    __tablename__ = "device_status"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_type: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime]
    detail: Mapped[str] = mapped_column(Text)
