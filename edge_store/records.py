"""What the edge store takes and what it gives back: shapes it reads, and records of its own.

The store depends on nothing of the gateway. It takes what it stores *structurally*: any object
with the fields it reads (the Protocols below, ``MovementFields``, ``AlertFields``,
``DeviceStatusFields``, ``CatalogItemFields``). The gateway's domain values satisfy them as they
are: an enumeration is read as a ``str`` (the domain's enums are ``StrEnum``s, and the store keeps
their string values), an id as a ``str`` (the domain's ids are ``NewType``s of ``str``). Nothing
is converted on the way in, so ``record`` costs what it did when it took the domain's types.

It gives back records of its own: frozen, slotted dataclasses, not validated again (the store
builds them from rows its columns and constraints already checked), whose enumerations are plain
strings. ``record`` is the exception that keeps the caller's types: a ``StoredMovement`` wraps the
very movement it was given (``RecordResult[M]``), so the gateway gets its own ``Movement`` back
with its seq. Everything the store reads back from the database is a ``MovementRecord``.

The Protocols declare read-only properties, which a frozen dataclass's fields satisfy with a more
precise type (a ``StrEnum`` where ``str`` is asked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

# -- what the store reads of what it is given ---------------------------------------------------


class MovementFields(Protocol):
    """A movement to record (the gateway's ``Movement``); timestamps are aware UTC."""

    @property
    def movement_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def from_location(self) -> str: ...
    @property
    def to_location(self) -> str: ...
    @property
    def source_type(self) -> str: ...
    @property
    def source_id(self) -> str: ...
    @property
    def observed_at(self) -> datetime: ...
    @property
    def confidence(self) -> float: ...
    @property
    def epcs(self) -> Sequence[str]: ...
    @property
    def container(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


class AlertFields(Protocol):
    """An alert to store, raised or cleared (the gateway's ``Alert``)."""

    @property
    def alert_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def raised_at(self) -> datetime: ...
    @property
    def active(self) -> bool: ...
    @property
    def details(self) -> Mapping[str, object]: ...


class DeviceStatusFields(Protocol):
    """A device's state to store (the gateway's ``DeviceStatus``)."""

    @property
    def device_id(self) -> str: ...
    @property
    def device_type(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def since(self) -> datetime: ...
    @property
    def detail(self) -> str: ...


class CatalogItemFields(Protocol):
    """A catalog item to sync (the gateway's ``CatalogItem``, whose GTIN is already the checked
    14-digit form: the store keeps it as given, see ``edge_store.catalog``)."""

    @property
    def sku(self) -> str: ...
    @property
    def gtin(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def pack_size(self) -> int: ...
    @property
    def unit_weight_g(self) -> float | None: ...
    @property
    def reorder_point(self) -> int | None: ...


# -- what the store gives back ------------------------------------------------------------------

M_co = TypeVar("M_co", bound=MovementFields, covariant=True)


@dataclass(frozen=True, slots=True)
class MovementRecord:
    """A movement as the store read it back: the fields of ``MovementFields``."""

    movement_id: str
    kind: str
    sku: str
    quantity: int
    from_location: str
    to_location: str
    source_type: str
    source_id: str
    observed_at: datetime
    confidence: float
    epcs: tuple[str, ...] = ()
    container: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMovement(Generic[M_co]):
    """A movement as committed: it now has its gap-free ``seq`` and the store's ``site``."""

    seq: int
    site: str
    movement: M_co


@dataclass(frozen=True, slots=True)
class StockRecord:
    """On-hand eaches of ``sku`` at ``location``; ``last_seq``, the last movement applied."""

    location: str
    sku: str
    on_hand: int
    updated_at: datetime
    last_seq: int


@dataclass(frozen=True, slots=True)
class AlertRecord:
    alert_id: str
    kind: str
    severity: str
    subject: str
    message: str
    raised_at: datetime
    active: bool
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    device_type: str
    state: str
    since: datetime
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """A catalog item as the store keeps it (no ``weight_tolerance_g``: a shelf setting)."""

    sku: str
    gtin: str | None
    name: str
    pack_size: int
    unit_weight_g: float | None
    reorder_point: int | None


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """A location. ``kind`` is descriptive (the config uses ``storage``, ``dock``, ``virtual``)."""

    id: str
    kind: str = "storage"

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("location id must not be empty")
        if not self.kind:
            raise ValueError(f"{self.id}: location kind must not be empty")


@dataclass(frozen=True, slots=True)
class RecordResult(Generic[M_co]):
    """What one ``EdgeStore.record`` call committed.

    ``recorded`` is in seq order, each wrapping the movement the caller gave; ``duplicates``
    lists, in input order, every movement id that changed nothing (already stored, or repeated
    earlier in the same batch); ``stock`` holds the stock levels the batch changed, as
    committed, sorted by (location, sku).
    """

    recorded: tuple[StoredMovement[M_co], ...]
    duplicates: tuple[str, ...]
    stock: tuple[StockRecord, ...]
