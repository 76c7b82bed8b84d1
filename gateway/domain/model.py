"""Value types shared by the engines, the sinks and the simulators, and handed to the store.

Everything here is a frozen, slotted dataclass validated in ``__post_init__`` (``TagRead``, the
hottest, is a named tuple validated in ``__new__``): a value that exists is a valid value.
Timestamps are timezone-aware UTC ``datetime`` objects; the domain never reads a clock, so callers
pass time in.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import repeat
from typing import Any, Final, NamedTuple, NewType, Self

from gateway.domain.gs1 import normalise_gtin

Epc = NewType("Epc", str)
"""An EPC as upper-case hex of the tag's EPC bank (e.g. ``3074257BF7194E4000001A85``)."""
Sku = NewType("Sku", str)
LocationId = NewType("LocationId", str)
DeviceId = NewType("DeviceId", str)
MovementId = NewType("MovementId", str)


class MovementKind(enum.StrEnum):
    RECEIPT = "receipt"
    SHIPMENT = "shipment"
    TRANSFER = "transfer"
    PICK = "pick"
    RESTOCK = "restock"
    ADJUSTMENT = "adjustment"
    RETURN = "return"


class MovementReason(enum.StrEnum):
    """Why a movement was inferred rather than observed as one physical event (2026-12)."""

    OPENING_COUNT = "opening_count"
    """The first count of a shelf the store had no level for, from its weight."""
    OFFLINE_CHANGE = "offline_change"
    """The weight changed while the gateway or the transmitter was down."""
    RECONCILIATION = "reconciliation"
    """The book was corrected to a weight that disagreed with it for a long time."""


MAX_QUANTITY: Final = 2**31 - 1
"""The largest quantity of one movement: the store's INTEGER column (and far below the contract's
int64). Engines bound what they produce well below it; this is the last line."""


class SourceType(enum.StrEnum):
    RFID_PORTAL = "rfid_portal"
    WEIGHT_SHELF = "weight_shelf"
    MANUAL = "manual"


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class AlertKind(enum.StrEnum):
    LOW_STOCK = "low_stock"
    RECEIVING_DISCREPANCY = "receiving_discrepancy"
    UNEXPLAINED_WEIGHT_CHANGE = "unexplained_weight_change"
    DEVICE_DOWN = "device_down"
    SYNC_BEHIND = "sync_behind"
    """A sink (MQTT, central) has not acknowledged a movement for longer than its threshold."""
    ANTENNA_DOWN = "antenna_down"
    """A portal antenna reads nothing while its peers read arriving tags, or the reader reports
    it disconnected (``gateway.domain.antenna``)."""
    IMPLAUSIBLE_WEIGHT = "implausible_weight"
    """A weighing transmitter reads garbage (not finite, negative, beyond capacity)."""


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# A set test is ~6x cheaper than a per-character scan; TagRead is built ~30,000 times a second.
_UPPER_HEX = frozenset("0123456789ABCDEF")
_UPPER_HEX_BYTES = b"0123456789ABCDEF"


def _require_utc(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be a timezone-aware UTC datetime, got {value!r}")


class _TagReadFields(NamedTuple):
    reader_id: DeviceId
    antenna: int
    epc: Epc
    rssi_dbm: float | None
    first_seen_us: int
    last_seen_us: int
    seen_count: int


class TagRead(_TagReadFields):
    """One TagReportData entry as the gateway received it from a reader.

    ``first_seen_us``/``last_seen_us`` are the reader's UTC timestamps in microseconds since the
    Unix epoch (LLRP's unit); ``seen_count`` is LLRP's TagSeenCount (1 when absent).

    The one value type that is a named tuple rather than a dataclass: a reader delivers tens of
    thousands of these a second, and :meth:`batch` builds a tuple in one C call per read where a
    frozen dataclass pays a generic ``object.__setattr__`` per field. It is validated in
    ``__new__`` like the others' ``__post_init__``; being a tuple, it also compares equal to a
    plain tuple of the same fields, which nothing here relies on.
    """

    __slots__ = ()

    def __new__(  # noqa: PLR0917 - a named tuple's fields are positional
        cls,
        reader_id: DeviceId,
        antenna: int,
        epc: Epc,
        rssi_dbm: float | None,
        first_seen_us: int,
        last_seen_us: int,
        seen_count: int = 1,
    ) -> TagRead:
        if antenna < 0 or antenna > 0xFFFF:
            raise ValueError(f"antenna out of range: {antenna}")
        if not isinstance(epc, str) or not epc or not _UPPER_HEX.issuperset(epc):
            raise ValueError(f"EPC must be upper-case hex, got {epc!r}")
        if last_seen_us < first_seen_us:
            raise ValueError("last_seen_us is before first_seen_us")
        if seen_count < 1:
            raise ValueError(f"seen_count must be >= 1, got {seen_count}")
        return _new_tuple(
            cls, (reader_id, antenna, epc, rssi_dbm, first_seen_us, last_seen_us, seen_count)
        )

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Self:  # type: ignore[override]  # same contract
        # namedtuple's _make (and _replace, which calls it) would build without validating.
        return cls(*iterable)

    @staticmethod
    def batch(
        reader_id: DeviceId,
        *,
        antennas: Sequence[int],
        epcs: Sequence[str],
        rssi_dbm: Sequence[float | None],
        first_seen_us: Sequence[int],
        last_seen_us: Sequence[int],
        seen_counts: Sequence[int],
    ) -> tuple[TagRead, ...]:
        """The reads of one reader given as columns (one element per read): all of them or none.

        Each column is checked against the rules of ``__new__`` in one pass of C code (a
        min/max, a join, a byte translation), then every instance is built by ``tuple.__new__``
        over the zipped columns without running them again: a quarter of the cost of
        ``TagRead(...)`` per read. An LLRP reader delivers tens of thousands of reads a second,
        so this is most of what the gateway adds to sllurp's decoding.

        Raises:
            ValueError: the columns differ in length, or at least one read would be rejected by
                ``TagRead(...)``; which one is not said: build those reads one by one to find out.
        """
        count = len(epcs)
        columns = (antennas, rssi_dbm, first_seen_us, last_seen_us, seen_counts)
        if any(len(column) != count for column in columns):
            raise ValueError("TagRead.batch: columns differ in length")
        if not count:
            return ()
        # The same rules as __new__, which stays the reference: keep the two in step.
        # (min/max stand for "every element" exactly on ints, which the signature asks for.)
        if min(antennas) < 0 or max(antennas) > 0xFFFF:
            raise ValueError("TagRead.batch: an antenna is out of range")
        try:
            joined = "".join(epcs)
        except TypeError as exc:  # TagRead() rejects a non-str EPC with a ValueError too
            raise ValueError("TagRead.batch: an EPC is not a str") from exc
        if not (
            all(epcs)
            and joined.isascii()
            and not joined.encode("ascii").translate(None, _UPPER_HEX_BYTES)
        ):
            raise ValueError("TagRead.batch: an EPC is empty or not upper-case hex")
        if any(map(operator.gt, first_seen_us, last_seen_us)):
            raise ValueError("TagRead.batch: a last_seen_us is before its first_seen_us")
        if min(seen_counts) < 1:
            raise ValueError("TagRead.batch: a seen_count is below 1")
        rows = zip(
            repeat(reader_id, count),
            antennas,
            epcs,
            rssi_dbm,
            first_seen_us,
            last_seen_us,
            seen_counts,
            strict=True,
        )
        return tuple(map(_new_tuple, repeat(TagRead, count), rows))


# ``tuple.__new__(TagRead, fields)``: builds a TagRead without running its validating __new__.
_new_tuple: Final[Callable[[type[TagRead], Iterable[object]], TagRead]] = tuple.__new__


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogItem:
    """One catalog item: the config's ``catalog.items[]`` and the domain's ``Catalog`` entries are
    this one type, and it is what the gateway syncs to the store's ``items`` table.

    ``gtin``, when there is one, is normalised to 14 digits (GTIN-8/12/13 are left-padded) and its
    check digit verified (``gateway.domain.gs1.normalise_gtin``, the one GTIN rule). An item
    without a GTIN (a weight-shelf-only item) is never matched by an SGTIN tag. ``pack_size`` is
    the number of eaches one tagged unit (case) of this GTIN holds; movements are always in
    eaches. ``weight_tolerance_g`` is the config's shelf setting: the store does not keep it.
    """

    sku: Sku
    gtin: str | None = None
    name: str = ""
    pack_size: int = 1
    unit_weight_g: float | None = None
    weight_tolerance_g: float | None = None
    reorder_point: int | None = None

    def __post_init__(self) -> None:
        if not self.sku or self.sku != self.sku.strip():
            raise ValueError(
                f"sku must be a non-empty string without surrounding blanks: {self.sku!r}"
            )
        if self.gtin is not None:
            try:
                gtin = normalise_gtin(self.gtin)
            except ValueError as exc:
                raise ValueError(f"gtin of {self.sku}: {exc}") from exc
            object.__setattr__(self, "gtin", gtin)
        if self.pack_size < 1:
            raise ValueError(f"pack_size of {self.sku} must be >= 1, got {self.pack_size}")
        if self.unit_weight_g is not None and self.unit_weight_g <= 0:
            raise ValueError(f"unit_weight_g of {self.sku} must be > 0, got {self.unit_weight_g}")
        if self.weight_tolerance_g is not None and self.weight_tolerance_g < 0:
            raise ValueError(
                f"weight_tolerance_g of {self.sku} must be >= 0, got {self.weight_tolerance_g}"
            )
        if self.reorder_point is not None and self.reorder_point < 0:
            raise ValueError(f"reorder_point of {self.sku} must be >= 0, got {self.reorder_point}")


@dataclass(frozen=True, slots=True)
class WeightSample:
    """One poll of a weighing transmitter. ``at`` is a monotonic time in seconds."""

    shelf_id: DeviceId
    at: float
    grams: float
    stable: bool | None = None
    overload: bool = False
    error: bool = False


@dataclass(frozen=True, slots=True)
class Movement:
    """A stock movement: ``quantity`` eaches of ``sku`` moved from one location to another.

    ``movement_id`` is deterministic from the evidence that produced it, so replaying the same
    evidence yields the same id; it is the idempotency key of the store and of every consumer.
    """

    movement_id: MovementId
    kind: MovementKind
    sku: Sku
    quantity: int
    from_location: LocationId
    to_location: LocationId
    source_type: SourceType
    source_id: str
    observed_at: datetime
    confidence: float
    epcs: tuple[str, ...] = ()
    container: str | None = None
    reason: MovementReason | None = None
    """Why a movement was not observed as one physical event (None: it was)."""

    def __post_init__(self) -> None:
        if not self.movement_id:
            raise ValueError("movement_id must not be empty")
        if not 0 < self.quantity <= MAX_QUANTITY:
            raise ValueError(
                f"quantity must be within 1..{MAX_QUANTITY} (eaches), got {self.quantity}"
            )
        if self.from_location == self.to_location:
            raise ValueError(f"from_location and to_location are both {self.from_location!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence}")
        _require_utc("observed_at", self.observed_at)


@dataclass(frozen=True, slots=True)
class RecordedMovement:
    """A movement as committed to the store: it now has its gap-free ``seq``."""

    seq: int
    site: str
    movement: Movement


@dataclass(frozen=True, slots=True)
class StockLevel:
    location: LocationId
    sku: Sku
    on_hand: int
    updated_at: datetime
    last_seq: int

    def __post_init__(self) -> None:
        _require_utc("updated_at", self.updated_at)


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert raised (``active``) or cleared. ``alert_id`` identifies the condition, so raising
    the same condition twice updates one alert rather than creating two."""

    alert_id: str
    kind: AlertKind
    severity: Severity
    subject: str
    message: str
    raised_at: datetime
    active: bool = True
    details: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_utc("raised_at", self.raised_at)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: DeviceId
    device_type: str
    state: DeviceState
    since: datetime
    detail: str = ""

    def __post_init__(self) -> None:
        _require_utc("since", self.since)
