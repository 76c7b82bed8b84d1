"""MQTT topics and JSON payloads: the byte-for-byte contract integrators code against.

Theory of operation
-------------------
Every builder here is a pure, total function of its arguments: the same movement always yields
the same bytes (a replay after a crash is indistinguishable from the first delivery except for
MQTT's DUP flag), and no value an engine can produce makes a builder raise, because one payload
that cannot be built would block the movement outbox behind it forever.

Encoding rules (see ``docs/mqtt.md``):

- UTF-8 JSON, compact (``,`` and ``:`` separators, no whitespace, no trailing newline), non-ASCII
  characters written as themselves rather than ``\\u`` escapes.
- Object keys in the order documented for each payload (the order of ``docs/mqtt.md``), not
  sorted; nested free-form objects (alert ``details``) have their keys sorted.
- Timestamps as ``YYYY-MM-DDTHH:MM:SS.mmmZ``: UTC, milliseconds, truncated (not rounded) so a
  timestamp never moves into the next second.
- Integers as plain decimals; floats as Python's shortest round-trip form (``0.97``, ``1.0``).
- Absent optional values are ``null``; lists keep the producer's order.

Topics: the configured prefix (validated, may contain ``/``) followed by fixed words and
*segments* taken from data (location, SKU, device, alert subject). A segment is made safe by
percent-encoding ``%``, ``/``, ``+``, ``#``, NUL and other control characters (so the mapping is
one-to-one and reversible); an empty segment becomes ``_``.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.domain.model import LocationId
from gateway.domain.views import AlertView, DeviceStatusView, RecordedView, StockView

GATEWAY_ONLINE = b"online"
"""Retained on ``{prefix}/gateway/status`` when the gateway connects."""
GATEWAY_OFFLINE = b"offline"
"""The Last Will on ``{prefix}/gateway/status`` (also published on a graceful shutdown)."""
CLEARED = b""
"""An empty retained payload: MQTT's way of deleting a retained message."""

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=True, sort_keys=False
)
_UNSAFE_TOPIC_CHARS = frozenset("%/+#\x7f") | frozenset(chr(c) for c in range(0x20))


# --------------------------------------------------------------------------------------------
# Scalars


def format_timestamp(value: datetime) -> str:
    """``2026-11-22T10:00:00.123Z``: UTC with millisecond precision (truncated).

    A naive datetime is taken to be UTC already (the model rejects naive times; this keeps the
    builder total).
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}."
        f"{value.microsecond // 1000:03d}Z"
    )


def _jsonable(value: object) -> object:
    """A JSON-ready copy of a free-form value (alert details): never raises."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=_encode_str)
    return str(value)


def _encode_str(value: object) -> str:
    return _ENCODER.encode(value)


def _encode(document: Mapping[str, object]) -> bytes:
    return _ENCODER.encode(document).encode("utf-8")


def _number(value: float) -> float | None:
    # NaN and infinities are not JSON; null is the honest rendering of "no number".
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# Payloads


def movement_document(recorded: RecordedView) -> dict[str, object]:
    """The movement as a JSON object, keys in contract order."""
    m = recorded.movement
    return {
        "movement_id": m.movement_id,
        "seq": recorded.seq,
        "site": recorded.site,
        "kind": str(m.kind),
        "sku": m.sku,
        "quantity": m.quantity,
        "from_location": m.from_location,
        "to_location": m.to_location,
        "epcs": list(m.epcs),
        "container": m.container,
        "source": {"type": str(m.source_type), "id": m.source_id},
        "observed_at": format_timestamp(m.observed_at),
        "confidence": _number(m.confidence),
        **({"reason": str(m.reason)} if m.reason is not None else {}),
    }


def movement_json(recorded: RecordedView) -> bytes:
    """The bytes published for a movement on every one of its topics."""
    return _encode(movement_document(recorded))


def stock_json(site: str, level: StockView) -> bytes:
    """Retained on ``{prefix}/stock/{location}/{sku}``."""
    return _encode(
        {
            "site": site,
            "location": level.location,
            "sku": level.sku,
            "on_hand": level.on_hand,
            "updated_at": format_timestamp(level.updated_at),
            "last_seq": level.last_seq,
        }
    )


def alert_json(site: str, alert: AlertView) -> bytes:
    """Published on ``{prefix}/alerts/{kind}`` (raised and cleared alike) and, while active,
    retained on ``{prefix}/active_alerts/{kind}/{subject}``."""
    return _encode(
        {
            "alert_id": alert.alert_id,
            "site": site,
            "kind": str(alert.kind),
            "severity": str(alert.severity),
            "subject": alert.subject,
            "active": alert.active,
            "message": alert.message,
            "raised_at": format_timestamp(alert.raised_at),
            "details": _jsonable(alert.details),
        }
    )


def device_status_json(site: str, status: DeviceStatusView) -> bytes:
    """Retained on ``{prefix}/devices/{device_id}/status``."""
    return _encode(
        {
            "site": site,
            "device_id": status.device_id,
            "device_type": status.device_type,
            "state": str(status.state),
            "since": format_timestamp(status.since),
            "detail": status.detail,
        }
    )


# --------------------------------------------------------------------------------------------
# Topics


def topic_segment(value: str) -> str:
    """``value`` made safe as ONE topic level: wildcards, separators and control characters
    percent-encoded (``/`` -> ``%2F``), ``%`` itself too so the mapping stays one-to-one."""
    if not value:
        return "_"
    if not any(c in _UNSAFE_TOPIC_CHARS for c in value):
        return value
    return "".join(f"%{ord(c):02X}" if c in _UNSAFE_TOPIC_CHARS else c for c in value)


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a usable topic prefix, else raise ``ValueError``.

    The prefix comes from configuration and may hold several levels (``dockwatch/dc-east``);
    it must not be empty, hold wildcards or NUL, or start or end with ``/``.
    """
    problems = []
    if not prefix:
        problems.append("must not be empty")
    if any(c in prefix for c in "+#\x00"):
        problems.append("must not contain '+', '#' or NUL")
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        problems.append("must not start or end with '/' or contain an empty level")
    if prefix.startswith("$"):
        problems.append("must not start with '$' (reserved for broker topics)")
    if problems:
        raise ValueError(f"topic prefix {prefix!r} " + "; ".join(problems))
    return prefix


def movement_topic(prefix: str, location: LocationId | str) -> str:
    return f"{prefix}/movements/{topic_segment(location)}"


def movement_topics(prefix: str, recorded: RecordedView) -> tuple[str, str]:
    """The two topics a movement is published on: its ``from_location``'s, then its
    ``to_location``'s, so a subscriber to one location sees stock leaving it and arriving."""
    m = recorded.movement
    return (movement_topic(prefix, m.from_location), movement_topic(prefix, m.to_location))


def stock_topic(prefix: str, location: str, sku: str) -> str:
    return f"{prefix}/stock/{topic_segment(location)}/{topic_segment(sku)}"


def alert_topic(prefix: str, kind: str) -> str:
    return f"{prefix}/alerts/{topic_segment(str(kind))}"


def active_alert_topic(prefix: str, kind: str, subject: str) -> str:
    return f"{prefix}/active_alerts/{topic_segment(str(kind))}/{topic_segment(subject)}"


def door_passes_topic(prefix: str, portal_id: str) -> str:
    """Fast per-pass door events (not retained): see docs/mqtt.md."""
    return f"{prefix}/doors/{topic_segment(portal_id)}/passes"


def device_status_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/devices/{topic_segment(device_id)}/status"


def gateway_status_topic(prefix: str) -> str:
    return f"{prefix}/gateway/status"
