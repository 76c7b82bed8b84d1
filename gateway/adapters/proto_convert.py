"""Conversion between the core value types and their protobuf messages (``dockwatch.edge.v1``).

The one place that knows both shapes; the gRPC server, the central relay and the central simulator
all go through it. Conversions are exact both ways:

- timestamps are converted with integer arithmetic (never through a float), so microseconds
  survive; protobuf Timestamps carry nanoseconds, which are truncated to microseconds on the way
  in; every datetime that comes out is aware and in ``timezone.utc``;
- domain enums map by name (``MovementKind.PICK`` <-> ``MOVEMENT_KIND_PICK``); the proto zero value
  ``*_UNSPECIFIED`` and numbers this build does not know are rejected on the way in;
- ``Alert.details`` travels as a ``google.protobuf.Struct`` (JSON semantics): mappings come back as
  ``dict``, sequences as ``list``, and numbers, which Struct holds as doubles, come back as ``int``
  when integral and within 2**53, else as ``float``.

A message that cannot become a valid domain value (missing timestamp, unknown enum, a value the
domain rejects) raises :class:`~dockwatch_core.errors.ProtocolError`, as does a domain value that
does not fit its protobuf field (e.g. a quantity beyond int64).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import struct_pb2, timestamp_pb2

from dockwatch_core.errors import ProtocolError
from gateway.domain.model import (
    Alert,
    AlertKind,
    DeviceId,
    DeviceState,
    DeviceStatus,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    MovementReason,
    RecordedMovement,
    Severity,
    Sku,
    SourceType,
    StockLevel,
)
from gateway.domain.views import AlertView, DeviceStatusView, RecordedView, StockView
from gateway.proto.dockwatch.edge.v1 import types_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

__all__ = [
    "alert_from_proto",
    "alert_to_proto",
    "chunk_by_size",
    "datetime_from_timestamp",
    "datetime_to_timestamp",
    "device_status_from_proto",
    "device_status_to_proto",
    "movement_from_proto",
    "movement_to_proto",
    "stock_level_from_proto",
    "stock_level_to_proto",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXACT_INT_LIMIT = 2**53
_V = TypeVar("_V", bound=int)
_D = TypeVar("_D", bound=enum.Enum)

_MOVEMENT_KIND = "MOVEMENT_KIND_"
_SOURCE_TYPE = "SOURCE_TYPE_"
_ALERT_KIND = "ALERT_KIND_"
_SEVERITY = "SEVERITY_"
_DEVICE_STATE = "DEVICE_STATE_"


# --- timestamps ------------------------------------------------------------------------------


def datetime_to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp, exact to the microsecond."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ProtocolError(f"timestamp must be timezone-aware, got {value!r}")
    delta = value - _EPOCH
    # timedelta normalises to days, 0 <= seconds < 86400, 0 <= microseconds < 10**6, so this is
    # the floor division protobuf wants (nanos are never negative).
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1_000
    )


def datetime_from_timestamp(value: timestamp_pb2.Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime (nanoseconds below a microsecond are dropped)."""
    if not 0 <= value.nanos < 1_000_000_000:
        raise ProtocolError(f"timestamp nanos out of range: {value.nanos}")
    try:
        return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1_000)
    except OverflowError as exc:
        raise ProtocolError(f"timestamp out of range: {value.seconds}s") from exc


def _required_timestamp(present: bool, value: timestamp_pb2.Timestamp, name: str) -> datetime:
    if not present:
        raise ProtocolError(f"{name} is missing")
    return datetime_from_timestamp(value)


# --- enums -----------------------------------------------------------------------------------


def _enum_to_proto(wrapper: _EnumTypeWrapper[_V], prefix: str, value: str) -> _V:
    """The proto number of a domain enum's member or of its value (a stored record's): the
    proto's names are the prefix and the member's name, which is its value in upper case
    (``tests/test_protos.py`` checks it of every member). Unknown: ``ValueError``."""
    return wrapper.Value(prefix + value.upper())


def _enum_from_proto(
    wrapper: _EnumTypeWrapper[_V], prefix: str, number: _V, domain: type[_D], field: str
) -> _D:
    try:
        name = wrapper.Name(number)
    except ValueError as exc:
        raise ProtocolError(f"{field}: unknown enum number {number}") from exc
    try:
        return domain[name.removeprefix(prefix)]
    except KeyError as exc:
        raise ProtocolError(f"{field}: {name} is not a valid value") from exc


# --- Struct (Alert.details) ------------------------------------------------------------------


def _to_value(obj: object, path: str) -> struct_pb2.Value:
    if obj is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(obj, bool):
        return struct_pb2.Value(bool_value=obj)
    if isinstance(obj, int | float):
        return struct_pb2.Value(number_value=float(obj))
    if isinstance(obj, str):
        return struct_pb2.Value(string_value=obj)
    if isinstance(obj, datetime):
        return struct_pb2.Value(string_value=obj.isoformat())
    if isinstance(obj, Mapping):
        return struct_pb2.Value(struct_value=_to_struct(obj, path))
    if isinstance(obj, Sequence) and not isinstance(obj, bytes | bytearray):
        values = [_to_value(item, f"{path}[{i}]") for i, item in enumerate(obj)]
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=values))
    raise ProtocolError(f"{path}: {type(obj).__name__} cannot travel in a Struct")


def _to_struct(mapping: Mapping[Any, object], path: str) -> struct_pb2.Struct:
    fields: dict[str, struct_pb2.Value] = {}
    for key, item in mapping.items():
        if not isinstance(key, str):  # a Mapping from elsewhere may hold any keys
            raise ProtocolError(f"{path}: key {key!r} is not a string")
        fields[key] = _to_value(item, f"{path}.{key}")
    return struct_pb2.Struct(fields=fields)


def _from_value(value: struct_pb2.Value) -> object:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) <= _EXACT_INT_LIMIT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _from_struct(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    return None  # null_value, or a Value with nothing set


def _from_struct(struct: struct_pb2.Struct) -> dict[str, object]:
    return {key: _from_value(struct.fields[key]) for key in sorted(struct.fields)}


# --- messages --------------------------------------------------------------------------------


def chunk_by_size(
    movements: Iterable[types_pb2.Movement], max_bytes: int
) -> list[list[types_pb2.Movement]]:
    """``movements`` in order, cut into runs whose encoding as a repeated field stays within
    ``max_bytes`` (a single larger movement still travels alone): one gRPC message each, under
    the receiver's message size limit (4 MiB by default in gRPC)."""
    chunks: list[list[types_pb2.Movement]] = []
    chunk: list[types_pb2.Movement] = []
    size = 0
    for pb in movements:
        # The movement's bytes plus its field tag and length prefix (at most 1 + 5 bytes).
        cost = pb.ByteSize() + 6
        if chunk and size + cost > max_bytes:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(pb)
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def movement_to_proto(recorded: RecordedView) -> types_pb2.Movement:
    m = recorded.movement
    try:
        return types_pb2.Movement(
            movement_id=m.movement_id,
            seq=recorded.seq,
            site=recorded.site,
            kind=_enum_to_proto(types_pb2.MovementKind, _MOVEMENT_KIND, m.kind),
            sku=m.sku,
            quantity=m.quantity,
            from_location=m.from_location,
            to_location=m.to_location,
            epcs=m.epcs,
            source=types_pb2.Source(
                type=_enum_to_proto(types_pb2.SourceType, _SOURCE_TYPE, m.source_type),
                id=m.source_id,
            ),
            observed_at=datetime_to_timestamp(m.observed_at),
            confidence=m.confidence,
            container=m.container,
            reason=None if m.reason is None else str(m.reason),
        )
    except ValueError as exc:  # an int beyond its field's range, a string that is not UTF-8
        raise ProtocolError(f"movement {m.movement_id}: {exc}") from exc


def movement_from_proto(pb: types_pb2.Movement) -> RecordedMovement:
    if pb.seq < 1:
        raise ProtocolError(f"movement {pb.movement_id!r}: seq must be >= 1, got {pb.seq}")
    if not pb.HasField("source"):
        raise ProtocolError(f"movement {pb.movement_id!r}: source is missing")
    try:
        movement = Movement(
            movement_id=MovementId(pb.movement_id),
            kind=_enum_from_proto(
                types_pb2.MovementKind, _MOVEMENT_KIND, pb.kind, MovementKind, "kind"
            ),
            sku=Sku(pb.sku),
            quantity=pb.quantity,
            from_location=LocationId(pb.from_location),
            to_location=LocationId(pb.to_location),
            source_type=_enum_from_proto(
                types_pb2.SourceType, _SOURCE_TYPE, pb.source.type, SourceType, "source.type"
            ),
            source_id=pb.source.id,
            observed_at=_required_timestamp(
                pb.HasField("observed_at"), pb.observed_at, "observed_at"
            ),
            confidence=pb.confidence,
            epcs=tuple(pb.epcs),
            container=pb.container if pb.HasField("container") else None,
            reason=MovementReason(pb.reason) if pb.HasField("reason") else None,
        )
    except ValueError as exc:  # the domain's own validation
        raise ProtocolError(f"movement {pb.movement_id!r}: {exc}") from exc
    return RecordedMovement(seq=pb.seq, site=pb.site, movement=movement)


def stock_level_to_proto(level: StockView, *, site: str) -> types_pb2.StockLevel:
    try:
        return types_pb2.StockLevel(
            site=site,
            location=level.location,
            sku=level.sku,
            on_hand=level.on_hand,
            updated_at=datetime_to_timestamp(level.updated_at),
            last_seq=level.last_seq,
        )
    except ValueError as exc:
        raise ProtocolError(f"stock level {level.location}/{level.sku}: {exc}") from exc


def stock_level_from_proto(pb: types_pb2.StockLevel) -> StockLevel:
    try:
        return StockLevel(
            location=LocationId(pb.location),
            sku=Sku(pb.sku),
            on_hand=pb.on_hand,
            updated_at=_required_timestamp(pb.HasField("updated_at"), pb.updated_at, "updated_at"),
            last_seq=pb.last_seq,
        )
    except ValueError as exc:
        raise ProtocolError(f"stock level {pb.location}/{pb.sku}: {exc}") from exc


def alert_to_proto(alert: AlertView, *, site: str) -> types_pb2.Alert:
    try:
        return types_pb2.Alert(
            site=site,
            alert_id=alert.alert_id,
            kind=_enum_to_proto(types_pb2.AlertKind, _ALERT_KIND, alert.kind),
            severity=_enum_to_proto(types_pb2.Severity, _SEVERITY, alert.severity),
            subject=alert.subject,
            message=alert.message,
            raised_at=datetime_to_timestamp(alert.raised_at),
            active=alert.active,
            details=_to_struct(alert.details, "details"),
        )
    except ValueError as exc:
        raise ProtocolError(f"alert {alert.alert_id}: {exc}") from exc


def alert_from_proto(pb: types_pb2.Alert) -> Alert:
    try:
        return Alert(
            alert_id=pb.alert_id,
            kind=_enum_from_proto(types_pb2.AlertKind, _ALERT_KIND, pb.kind, AlertKind, "kind"),
            severity=_enum_from_proto(
                types_pb2.Severity, _SEVERITY, pb.severity, Severity, "severity"
            ),
            subject=pb.subject,
            message=pb.message,
            raised_at=_required_timestamp(pb.HasField("raised_at"), pb.raised_at, "raised_at"),
            active=pb.active,
            details=_from_struct(pb.details),
        )
    except ValueError as exc:
        raise ProtocolError(f"alert {pb.alert_id!r}: {exc}") from exc


def device_status_to_proto(status: DeviceStatusView, *, site: str) -> types_pb2.DeviceStatus:
    try:
        return types_pb2.DeviceStatus(
            site=site,
            device_id=status.device_id,
            device_type=status.device_type,
            state=_enum_to_proto(types_pb2.DeviceState, _DEVICE_STATE, status.state),
            since=datetime_to_timestamp(status.since),
            detail=status.detail,
        )
    except ValueError as exc:
        raise ProtocolError(f"device {status.device_id}: {exc}") from exc


def device_status_from_proto(pb: types_pb2.DeviceStatus) -> DeviceStatus:
    try:
        return DeviceStatus(
            device_id=DeviceId(pb.device_id),
            device_type=pb.device_type,
            state=_enum_from_proto(
                types_pb2.DeviceState, _DEVICE_STATE, pb.state, DeviceState, "state"
            ),
            since=_required_timestamp(pb.HasField("since"), pb.since, "since"),
            detail=pb.detail,
        )
    except ValueError as exc:
        raise ProtocolError(f"device {pb.device_id!r}: {exc}") from exc
