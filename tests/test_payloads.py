"""The MQTT payload and topic contract (``gateway.domain.payloads``): bytes, not just fields."""

from __future__ import annotations

import ast
import json
import re
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain import payloads
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
    RecordedMovement,
    Severity,
    Sku,
    SourceType,
    StockLevel,
)

T0 = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)


def design_movement() -> RecordedMovement:
    """The example movement of DESIGN.md."""
    return RecordedMovement(
        seq=42,
        site="dc-east",
        movement=Movement(
            movement_id=MovementId("mv-7f3a"),
            kind=MovementKind.RECEIPT,
            sku=Sku("SKU-1001"),
            quantity=24,
            from_location=LocationId("yard"),
            to_location=LocationId("receiving"),
            source_type=SourceType.RFID_PORTAL,
            source_id="door-1",
            observed_at=T0,
            confidence=0.97,
            epcs=("urn:epc:id:sgtin:0614141.812345.6789",),
        ),
    )


def test_movement_bytes_are_the_documented_contract() -> None:
    assert payloads.movement_json(design_movement()) == (
        b'{"movement_id":"mv-7f3a","seq":42,"site":"dc-east","kind":"receipt",'
        b'"sku":"SKU-1001","quantity":24,"from_location":"yard","to_location":"receiving",'
        b'"epcs":["urn:epc:id:sgtin:0614141.812345.6789"],"container":null,'
        b'"source":{"type":"rfid_portal","id":"door-1"},'
        b'"observed_at":"2026-11-22T10:00:00.123Z","confidence":0.97}'
    )


def test_movement_keys_follow_the_design_order() -> None:
    doc = json.loads(payloads.movement_json(design_movement()))
    assert list(doc) == [
        "movement_id",
        "seq",
        "site",
        "kind",
        "sku",
        "quantity",
        "from_location",
        "to_location",
        "epcs",
        "container",
        "source",
        "observed_at",
        "confidence",
    ]


def test_the_docs_show_what_the_builders_produce() -> None:
    """docs/mqtt.md pastes real builder output; it must not drift from the code."""
    docs = (Path(__file__).parent.parent / "docs" / "mqtt.md").read_text(encoding="utf-8")
    assert payloads.movement_json(design_movement()).decode() in docs


def test_non_ascii_is_utf8_not_escaped() -> None:
    rm = design_movement()
    moved = RecordedMovement(
        seq=1,
        site="dépôt-nord",
        movement=rm.movement,
    )
    raw = payloads.movement_json(moved)
    assert "dépôt-nord".encode() in raw
    assert json.loads(raw)["site"] == "dépôt-nord"


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=datetime(2200, 1, 1),  # noqa: DTZ001 - and attaches the timezones below
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_timestamps_are_utc_milliseconds_truncated(value: datetime) -> None:
    text = payloads.format_timestamp(value)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert timedelta(0) <= value - parsed < timedelta(milliseconds=1)


def test_timestamp_never_rounds_into_the_next_second() -> None:
    value = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert payloads.format_timestamp(value) == "2026-12-31T23:59:59.999Z"


@given(st.text(max_size=40))
def test_topic_segments_are_single_safe_levels_and_reversible(value: str) -> None:
    segment = payloads.topic_segment(value)
    assert segment
    assert not set(segment) & {"/", "+", "#", "\x00"}
    if value:
        assert unquote(segment) == value


def test_topic_segment_examples() -> None:
    assert payloads.topic_segment("shelf-a1") == "shelf-a1"
    assert payloads.topic_segment("aisle/3") == "aisle%2F3"
    assert payloads.topic_segment("a+b#c") == "a%2Bb%23c"
    assert payloads.topic_segment("50%") == "50%25"
    assert payloads.topic_segment("") == "_"


def test_topics() -> None:
    p = "dockwatch/dc-east"
    assert payloads.movement_topics(p, design_movement()) == (
        "dockwatch/dc-east/movements/yard",
        "dockwatch/dc-east/movements/receiving",
    )
    assert payloads.stock_topic(p, "shelf/a1", "SKU+1") == (
        "dockwatch/dc-east/stock/shelf%2Fa1/SKU%2B1"
    )
    assert payloads.alert_topic(p, AlertKind.LOW_STOCK) == "dockwatch/dc-east/alerts/low_stock"
    assert payloads.active_alert_topic(p, AlertKind.LOW_STOCK, "shelf-a1/SKU-1") == (
        "dockwatch/dc-east/active_alerts/low_stock/shelf-a1%2FSKU-1"
    )
    assert payloads.device_status_topic(p, "door-1-reader") == (
        "dockwatch/dc-east/devices/door-1-reader/status"
    )
    assert payloads.gateway_status_topic(p) == "dockwatch/dc-east/gateway/status"


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "/a", "a/", "a//b", "$SYS/x"])
def test_bad_prefixes_are_rejected(bad: str) -> None:
    assert payloads.validate_prefix("dockwatch/dc-east") == "dockwatch/dc-east"
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        payloads.validate_prefix(bad)


def test_stock_device_and_alert_payloads() -> None:
    level = StockLevel(LocationId("shelf-a1"), Sku("SKU-1001"), 37, T0, 42)
    assert payloads.stock_json("dc-east", level) == (
        b'{"site":"dc-east","location":"shelf-a1","sku":"SKU-1001","on_hand":37,'
        b'"updated_at":"2026-11-22T10:00:00.123Z","last_seq":42}'
    )
    status = DeviceStatus(DeviceId("door-1-reader"), "llrp_reader", DeviceState.OFFLINE, T0, "x")
    assert payloads.device_status_json("dc-east", status) == (
        b'{"site":"dc-east","device_id":"door-1-reader","device_type":"llrp_reader",'
        b'"state":"offline","since":"2026-11-22T10:00:00.123Z","detail":"x"}'
    )
    alert = Alert(
        alert_id="low_stock:shelf-a1:SKU-1001",
        kind=AlertKind.LOW_STOCK,
        severity=Severity.WARNING,
        subject="shelf-a1",
        message="low",
        raised_at=T0,
        details={"reorder_point": 10, "on_hand": 4, "at": T0, "state": DeviceState.ONLINE},
    )
    assert payloads.alert_json("dc-east", alert) == (
        b'{"alert_id":"low_stock:shelf-a1:SKU-1001","site":"dc-east","kind":"low_stock",'
        b'"severity":"warning","subject":"shelf-a1","active":true,"message":"low",'
        b'"raised_at":"2026-11-22T10:00:00.123Z","details":{"at":"2026-11-22T10:00:00.123Z",'
        b'"on_hand":4,"reorder_point":10,"state":"online"}}'
    )


def test_alert_details_of_any_shape_still_build() -> None:
    """A payload that cannot be built would block the outbox: builders are total."""
    alert = Alert(
        alert_id="a",
        kind=AlertKind.UNEXPLAINED_WEIGHT_CHANGE,
        severity=Severity.INFO,
        subject="s",
        message="m",
        raised_at=T0,
        details={
            "nan": float("nan"),
            "inf": float("inf"),
            "nested": {"b": (1, 2), "a": {3, 1}, 7: "int key"},
            "obj": Path("/var/x"),
        },
    )
    doc = json.loads(payloads.alert_json("s", alert))
    assert doc["details"]["nan"] is None
    assert doc["details"]["inf"] is None
    assert doc["details"]["nested"] == {"7": "int key", "a": [1, 3], "b": [1, 2]}
    assert list(doc["details"]["nested"]) == ["7", "a", "b"]
    assert doc["details"]["obj"] == "/var/x"


def test_payload_module_is_pure() -> None:
    source = Path(payloads.__file__).read_text(encoding="utf-8")
    forbidden = {"asyncio", "logging", "socket", "sqlite3", "threading", "subprocess", "time"}
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            assert top not in forbidden, name
            assert top in sys.stdlib_module_names or name.startswith("gateway.domain"), name
