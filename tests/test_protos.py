"""The .proto contract, its committed generated code, and the domain <-> protobuf conversions."""

from __future__ import annotations

import enum
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from dockwatch_core.errors import ProtocolError
from gateway.adapters import proto_convert as pc
from gateway.domain.model import (
    MAX_QUANTITY,
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
from gateway.proto.dockwatch.central.v1 import ingest_pb2, ingest_pb2_grpc
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2

ROOT = Path(__file__).resolve().parent.parent


# --- the generated tree ----------------------------------------------------------------------


def _run_generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "protos" / "generate.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The proto sources and the committed generated code, copied where a test may break them."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "protos", tmp_path / "protos", ignore=ignore)
    shutil.copytree(ROOT / "gateway" / "proto", tmp_path / "gateway" / "proto", ignore=ignore)
    return tmp_path


def test_committed_generated_code_is_up_to_date() -> None:
    done = _run_generate(ROOT, "--check")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_check_lists_stale_files_after_a_proto_change_and_make_protos_fixes_it(
    repo_copy: Path,
) -> None:
    types_proto = repo_copy / "protos" / "dockwatch" / "edge" / "v1" / "types.proto"
    text = types_proto.read_text(encoding="utf-8")
    marker = "  optional string container = 13;\n"
    assert marker in text
    types_proto.write_text(text.replace(marker, marker + "  string lot = 99;\n"), encoding="utf-8")
    stray = repo_copy / "gateway" / "proto" / "dockwatch" / "edge" / "v1" / "old_pb2.py"
    stray.write_text("# left over from a removed .proto\n", encoding="utf-8")

    done = _run_generate(repo_copy, "--check")
    assert done.returncode == 1
    assert "stale: gateway/proto/dockwatch/edge/v1/types_pb2.py" in done.stderr
    assert "stale: gateway/proto/dockwatch/edge/v1/types_pb2.pyi" in done.stderr
    assert "extra: gateway/proto/dockwatch/edge/v1/old_pb2.py" in done.stderr
    # Files the change does not affect are not reported.
    assert "ingest_pb2_grpc.py" not in done.stderr

    regenerated = _run_generate(repo_copy)
    assert regenerated.returncode == 0, regenerated.stderr
    assert not stray.exists()
    assert "lot" in (stray.parent / "types_pb2.pyi").read_text(encoding="utf-8")
    assert _run_generate(repo_copy, "--check").returncode == 0


def test_check_reports_a_missing_file(repo_copy: Path) -> None:
    (repo_copy / "gateway" / "proto" / "dockwatch" / "central" / "v1" / "ingest_pb2.pyi").unlink()
    done = _run_generate(repo_copy, "--check")
    assert done.returncode == 1
    assert "missing: gateway/proto/dockwatch/central/v1/ingest_pb2.pyi" in done.stderr


def test_check_refuses_to_compare_output_of_other_generator_versions(repo_copy: Path) -> None:
    versions = repo_copy / "gateway" / "proto" / "VERSIONS"
    text = versions.read_text(encoding="utf-8")
    lines = [
        "grpcio-tools 0.0.1" if line.startswith("grpcio-tools ") else line
        for line in text.splitlines()
    ]
    versions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _run_generate(repo_copy, "--check")
    assert done.returncode == 1
    assert "generator versions differ" in done.stderr
    assert "grpcio-tools 0.0.1" in done.stderr
    assert "stale:" not in done.stderr


def test_generated_code_lives_in_gateway_proto_but_keeps_wire_names() -> None:
    assert types_pb2.Movement.__module__ == "gateway.proto.dockwatch.edge.v1.types_pb2"
    assert types_pb2.Movement.DESCRIPTOR.full_name == "dockwatch.edge.v1.Movement"
    ingest = ingest_pb2.DESCRIPTOR.services_by_name["InventoryIngest"]
    assert ingest.full_name == "dockwatch.central.v1.InventoryIngest"
    assert ingest.methods_by_name["Ingest"].input_type.fields_by_name["movements"].message_type is (
        types_pb2.Movement.DESCRIPTOR
    )
    edge = edge_api_pb2.DESCRIPTOR.services_by_name["EdgeApi"]
    assert set(edge.methods_by_name) == {
        "WatchMovements",
        "ListMovements",
        "GetStock",
        "ListAlerts",
        "ListDevices",
        "GetStatus",
    }
    # One watch, streaming pages of movements (etcd-style), not one message per movement.
    watch = edge.methods_by_name["WatchMovements"]
    assert watch.server_streaming
    assert watch.output_type.fields_by_name["movements"].message_type is (
        types_pb2.Movement.DESCRIPTOR
    )
    assert hasattr(ingest_pb2_grpc, "InventoryIngestStub")
    assert hasattr(edge_api_pb2_grpc, "add_EdgeApiServicer_to_server")
    # No top-level "dockwatch" package was needed to import any of it.
    assert "dockwatch" not in sys.modules


def test_every_enum_zero_value_is_unspecified() -> None:
    for file in (types_pb2.DESCRIPTOR, edge_api_pb2.DESCRIPTOR, ingest_pb2.DESCRIPTOR):
        for enum_type in file.enum_types_by_name.values():
            assert enum_type.values_by_number[0].name.endswith("_UNSPECIFIED"), enum_type.name


# --- enums map one to one --------------------------------------------------------------------

ENUMS: list[tuple[type[enum.Enum], str, str]] = [
    (MovementKind, "MovementKind", "MOVEMENT_KIND_"),
    (SourceType, "SourceType", "SOURCE_TYPE_"),
    (AlertKind, "AlertKind", "ALERT_KIND_"),
    (Severity, "Severity", "SEVERITY_"),
    (DeviceState, "DeviceState", "DEVICE_STATE_"),
]


@pytest.mark.parametrize(("domain", "proto_name", "prefix"), ENUMS)
def test_domain_and_proto_enums_have_the_same_members(
    domain: type[enum.Enum], proto_name: str, prefix: str
) -> None:
    proto_names = set(types_pb2.DESCRIPTOR.enum_types_by_name[proto_name].values_by_name)
    assert proto_names == {prefix + "UNSPECIFIED"} | {prefix + m.name for m in domain}
    # proto_convert maps a value (a stored record's enums are their str values) by upper-casing it
    assert all(m.name == str(m.value).upper() for m in domain)


# --- round trips -----------------------------------------------------------------------------

# Protobuf strings are UTF-8, which cannot hold lone surrogates.
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
ID = TEXT.filter(bool)
UTC_TIMES = st.datetimes(timezones=st.just(UTC))
# Zero-offset zones other than timezone.utc are UTC too; they come back as timezone.utc.
ZERO_OFFSET_TIMES = st.datetimes(
    timezones=st.sampled_from([UTC, timezone(timedelta(0), "Z"), timezone(timedelta(0))])
)


@st.composite
def recorded_movements(draw: st.DrawFn) -> RecordedMovement:
    from_location = draw(ID)
    to_location = draw(ID.filter(lambda s: s != from_location))
    movement = Movement(
        movement_id=MovementId(draw(ID)),
        kind=draw(st.sampled_from(MovementKind)),
        sku=Sku(draw(TEXT)),
        quantity=draw(st.integers(1, MAX_QUANTITY)),
        reason=draw(st.none() | st.sampled_from(MovementReason)),
        from_location=LocationId(from_location),
        to_location=LocationId(to_location),
        source_type=draw(st.sampled_from(SourceType)),
        source_id=draw(TEXT),
        observed_at=draw(ZERO_OFFSET_TIMES),
        confidence=draw(st.floats(0.0, 1.0)),
        epcs=tuple(draw(st.lists(TEXT, max_size=5))),
        container=draw(st.none() | TEXT),
    )
    return RecordedMovement(seq=draw(st.integers(1, 2**64 - 1)), site=draw(TEXT), movement=movement)


@given(recorded_movements())
def test_movement_round_trips_through_proto_and_the_wire(recorded: RecordedMovement) -> None:
    pb = pc.movement_to_proto(recorded)
    wire = types_pb2.Movement.FromString(pb.SerializeToString())
    back = pc.movement_from_proto(wire)
    assert back == recorded
    assert back.movement.observed_at.tzinfo is UTC
    assert back.movement.observed_at.microsecond == recorded.movement.observed_at.microsecond


def test_movement_fields_match_the_json_contract() -> None:
    recorded = RecordedMovement(
        seq=42,
        site="dc-east",
        movement=Movement(
            movement_id=MovementId("m-1"),
            kind=MovementKind.RECEIPT,
            sku=Sku("SKU-1001"),
            quantity=24,
            from_location=LocationId("yard"),
            to_location=LocationId("receiving"),
            source_type=SourceType.RFID_PORTAL,
            source_id="door-1",
            observed_at=datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC),
            confidence=0.97,
            epcs=("urn:epc:id:sgtin:0614141.812345.6789",),
        ),
    )
    pb = pc.movement_to_proto(recorded)
    assert pb.kind == types_pb2.MOVEMENT_KIND_RECEIPT
    assert pb.source == types_pb2.Source(type=types_pb2.SOURCE_TYPE_RFID_PORTAL, id="door-1")
    assert pb.observed_at.ToJsonString() == "2026-11-22T10:00:00.123456Z"
    assert not pb.HasField("container")
    assert (pb.seq, pb.site, pb.quantity, list(pb.epcs)) == (
        42,
        "dc-east",
        24,
        ["urn:epc:id:sgtin:0614141.812345.6789"],
    )


@given(
    st.builds(
        StockLevel,
        location=ID.map(LocationId),
        sku=ID.map(Sku),
        on_hand=st.integers(-(2**63), 2**63 - 1),
        updated_at=UTC_TIMES,
        last_seq=st.integers(0, 2**64 - 1),
    ),
    TEXT,
)
def test_stock_level_round_trips(level: StockLevel, site: str) -> None:
    pb = pc.stock_level_to_proto(level, site=site)
    assert pb.site == site
    assert pc.stock_level_from_proto(types_pb2.StockLevel.FromString(pb.SerializeToString())) == (
        level
    )


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)


@given(
    st.builds(
        Alert,
        alert_id=ID,
        kind=st.sampled_from(AlertKind),
        severity=st.sampled_from(Severity),
        subject=TEXT,
        message=TEXT,
        raised_at=UTC_TIMES,
        active=st.booleans(),
        details=st.dictionaries(TEXT, JSON_VALUES, max_size=4),
    ),
    TEXT,
)
def test_alert_round_trips(alert: Alert, site: str) -> None:
    pb = pc.alert_to_proto(alert, site=site)
    back = pc.alert_from_proto(types_pb2.Alert.FromString(pb.SerializeToString()))
    assert back == alert


def test_alert_details_come_back_as_json_values() -> None:
    alert = Alert(
        alert_id="a-1",
        kind=AlertKind.RECEIVING_DISCREPANCY,
        severity=Severity.WARNING,
        subject="door-1",
        message="expected 24, saw 23",
        raised_at=datetime(2026, 1, 1, tzinfo=UTC),
        details={
            "expected": 24,
            "ratio": 0.5,
            "epcs": ("A", "B"),
            "at": datetime(2026, 1, 1, tzinfo=UTC),
        },
    )
    details = pc.alert_from_proto(pc.alert_to_proto(alert, site="s")).details
    assert details == {
        "expected": 24,
        "ratio": 0.5,
        "epcs": ["A", "B"],
        "at": "2026-01-01T00:00:00+00:00",
    }
    assert type(details["expected"]) is int


def test_alert_details_that_json_cannot_hold_are_refused() -> None:
    alert = Alert(
        alert_id="a-1",
        kind=AlertKind.LOW_STOCK,
        severity=Severity.INFO,
        subject="shelf-a1/SKU-1",
        message="low",
        raised_at=datetime(2026, 1, 1, tzinfo=UTC),
        details={"raw": b"\x00"},
    )
    with pytest.raises(ProtocolError, match=r"details\.raw"):
        pc.alert_to_proto(alert, site="s")


@given(
    st.builds(
        DeviceStatus,
        device_id=ID.map(DeviceId),
        device_type=TEXT,
        state=st.sampled_from(DeviceState),
        since=UTC_TIMES,
        detail=TEXT,
    ),
    TEXT,
)
def test_device_status_round_trips(status: DeviceStatus, site: str) -> None:
    pb = pc.device_status_to_proto(status, site=site)
    back = pc.device_status_from_proto(types_pb2.DeviceStatus.FromString(pb.SerializeToString()))
    assert back == status


# --- timestamps and invalid input ------------------------------------------------------------


@given(st.integers(-62135596800, 253402300799), st.integers(0, 999_999_999))
def test_timestamps_keep_microseconds_and_truncate_nanoseconds(seconds: int, nanos: int) -> None:
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    dt = pc.datetime_from_timestamp(ts)
    assert dt.tzinfo is UTC
    assert pc.datetime_to_timestamp(dt) == timestamp_pb2.Timestamp(
        seconds=seconds, nanos=nanos - nanos % 1000
    )


def test_datetime_before_the_epoch_converts_exactly() -> None:
    dt = datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert pc.datetime_to_timestamp(dt) == timestamp_pb2.Timestamp(seconds=-1, nanos=999_999_000)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ProtocolError, match="timezone-aware"):
        pc.datetime_to_timestamp(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def _valid_movement_pb() -> types_pb2.Movement:
    return types_pb2.Movement(
        movement_id="m-1",
        seq=1,
        site="dc-east",
        kind=types_pb2.MOVEMENT_KIND_PICK,
        sku="SKU-1",
        quantity=2,
        from_location="shelf-a1",
        to_location="picked",
        source=types_pb2.Source(type=types_pb2.SOURCE_TYPE_WEIGHT_SHELF, id="shelf-a1"),
        observed_at=timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=123_456_789),
        confidence=0.9,
    )


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda pb: pb.ClearField("observed_at"), "observed_at is missing"),
        (lambda pb: pb.ClearField("source"), "source is missing"),
        (lambda pb: setattr(pb, "kind", types_pb2.MOVEMENT_KIND_UNSPECIFIED), "kind"),
        (lambda pb: setattr(pb, "kind", 99), "unknown enum number 99"),
        (lambda pb: setattr(pb.source, "type", 0), "source.type"),
        (lambda pb: setattr(pb, "quantity", 0), "quantity must be within"),
        (lambda pb: setattr(pb, "quantity", 2**31), "quantity must be within"),
        (lambda pb: setattr(pb, "reason", "whim"), "whim"),
        (lambda pb: setattr(pb, "seq", 0), "seq must be >= 1"),
        (lambda pb: setattr(pb, "to_location", "shelf-a1"), "both"),
        (lambda pb: setattr(pb, "confidence", 1.5), "confidence"),
    ],
)
def test_invalid_movement_messages_raise_protocol_error(
    breakage: Callable[[types_pb2.Movement], object], message: str
) -> None:
    pb = _valid_movement_pb()
    assert pc.movement_from_proto(pb).movement.observed_at.microsecond == 123_456
    breakage(pb)
    with pytest.raises(ProtocolError, match=message):
        pc.movement_from_proto(pb)


def test_quantity_beyond_the_store_is_refused_before_it_reaches_the_wire() -> None:
    recorded = pc.movement_from_proto(_valid_movement_pb())
    with pytest.raises(ValueError, match="quantity must be within"):
        replace(recorded, movement=replace(recorded.movement, quantity=MAX_QUANTITY + 1))
