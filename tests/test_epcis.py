"""Movements as EPCIS 2.0 events: the mapping table, and every event of the hard portal scenario
and of a shelf scenario valid under the GS1 JSON Schema (formats on) and under an independent
validator (epcis2.js, run with node)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.epcis import (
    EpcisSite,
    ReceiptClosed,
    document,
    document_bytes,
    movement_events,
    receipt_closed_event,
)
from gateway.domain.model import Alert, AlertKind, MovementKind, RecordedMovement, Severity
from simulators.epcis import SCHEMA_DIR, EpcisValidator
from tests.conftest import missing
from tests.support.epcis import (
    SITE_WITH_GLNS,
    SITE_WITHOUT_GLNS,
    T0,
    case,
    closures,
    hard_portal_movements,
    movement,
    pallet,
    recorded,
    shelf_movements,
    variety,
    with_reason,
)

REPO = Path(__file__).resolve().parents[1]
JS_DIR = REPO / "tests" / "js"
SHARED_EPCIS = REPO.parent / "shared" / "epcis"


@pytest.fixture(scope="module")
def validator() -> EpcisValidator:
    return EpcisValidator()


def _one(events: list[dict[str, object]], kind: str) -> dict[str, object]:
    (event,) = [e for e in events if e["type"] == kind]
    return event


# --- the mapping table -------------------------------------------------------------------------


def test_receipt_of_a_pallet_is_an_object_event_and_an_aggregation() -> None:
    cases = (case(1), case(2))
    m = movement(MovementKind.RECEIPT, epcs=cases, container=pallet(1), quantity=24)
    events = movement_events(recorded(m), SITE_WITH_GLNS)
    obj, agg = _one(events, "ObjectEvent"), _one(events, "AggregationEvent")
    assert obj["action"] == "OBSERVE"
    assert (obj["bizStep"], obj["disposition"]) == ("receiving", "in_progress")
    assert obj["epcList"] == [*cases, pallet(1)]
    assert obj["readPoint"] == {"id": "urn:epc:id:sgln:0614141.00001.door1"}
    assert obj["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.00001.0"}
    assert obj["eventTime"] == "2026-11-22T10:00:00.123Z"  # observed_at, milliseconds
    assert obj["eventTimeZoneOffset"] == "+00:00"
    assert obj["dockwatch:movementId"] == m.movement_id
    assert agg["parentID"] == pallet(1)
    assert agg["childEPCs"] == list(cases)
    assert (agg["action"], agg["bizStep"]) == ("OBSERVE", "receiving")
    assert list(obj)[:2] == ["type", "eventID"]


@pytest.mark.parametrize(
    ("kind", "frm", "to", "step", "disposition", "located"),
    [
        (MovementKind.SHIPMENT, "receiving", "yard", "shipping", "in_transit", False),
        (MovementKind.TRANSFER, "receiving", "backroom", "entering_exiting", None, True),
        (MovementKind.RETURN, "yard", "receiving", "receiving", "returned", True),
        (MovementKind.RETURN, "receiving", "yard", "shipping", "returned", False),
    ],
)
def test_door_movements(
    kind: MovementKind, frm: str, to: str, step: str, disposition: str | None, located: bool
) -> None:
    m = movement(kind, epcs=(case(1),), frm=frm, to=to)
    (event,) = movement_events(recorded(m), SITE_WITHOUT_GLNS)
    assert event["bizStep"] == step
    assert event.get("disposition") == disposition
    assert ("bizLocation" in event) is located
    base = "https://example.invalid/dockwatch/site/dc-east"
    assert event["readPoint"] == {"id": f"{base}/readpoint/door-1"}
    if located:
        assert event["bizLocation"] == {"id": f"{base}/location/{to}"}


def test_shelf_pick_and_restock_carry_the_class_and_eaches() -> None:
    pick = movement(MovementKind.PICK, quantity=3, source="shelf-a1", frm="shelf-a1", to="picked")
    (event,) = movement_events(recorded(pick), SITE_WITH_GLNS)
    assert "epcList" not in event
    assert event["quantityList"] == [
        {"epcClass": "https://id.gs1.org/01/00614141123452", "quantity": 3, "uom": "EA"}
    ]
    assert event["bizStep"] == "picking"
    assert "disposition" not in event
    assert "bizLocation" not in event
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:0614141.00002.a1"}
    restock = movement(
        MovementKind.RESTOCK, quantity=5, source="shelf-a1", frm="backroom", to="shelf-a1"
    )
    (event,) = movement_events(recorded(restock), SITE_WITH_GLNS)
    assert (event["bizStep"], event["disposition"]) == ("stocking", "sellable_accessible")
    assert event["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.00002.0"}


@pytest.mark.parametrize(("up", "change"), [(True, 4), (False, -4)])
def test_adjustment_is_a_cycle_count_with_its_reason(up: bool, change: int) -> None:
    m = movement(
        MovementKind.ADJUSTMENT,
        quantity=4,
        source="shelf-a1",
        frm="adjustment" if up else "shelf-a1",
        to="shelf-a1" if up else "adjustment",
    )
    (event,) = movement_events(recorded(with_reason(m, "opening_count")), SITE_WITH_GLNS)
    assert event["bizStep"] == "cycle_counting"
    assert event["dockwatch:reason"] == "opening_count"
    assert event["dockwatch:quantityChange"] == change
    assert event["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.00002.0"}  # the shelf
    (plain,) = movement_events(recorded(m), SITE_WITH_GLNS)
    assert "dockwatch:reason" not in plain


@pytest.mark.parametrize(
    ("index", "disposition"),
    [
        (0, "completeness_verified"),
        (1, "mismatch_quantity"),
        (2, "mismatch_class"),
        (3, "mismatch_instance"),
        (4, "mismatch_class"),
    ],
)
def test_closed_receipt(index: int, disposition: str) -> None:
    closed = closures()[index]
    event = receipt_closed_event(closed, SITE_WITH_GLNS)
    assert (event["bizStep"], event["disposition"]) == ("receiving", disposition)
    base = "https://example.invalid/dockwatch/site/dc-east"
    transactions = event.get("bizTransactionList", [])
    assert isinstance(transactions, list)
    if closed.planned:
        assert {"type": "desadv", "bizTransaction": f"{base}/desadv/{closed.receipt_id}"} in (
            transactions
        )
    else:
        assert all(t["type"] != "desadv" for t in transactions)
    if closed.purchase_order:
        assert {"type": "po", "bizTransaction": f"{base}/po/{closed.purchase_order}"} in (
            transactions
        )
    assert event["dockwatch:receiptId"] == closed.receipt_id


def test_closed_receipt_from_the_receiving_alert() -> None:
    alert = Alert(
        alert_id="receiving_discrepancy:ASN-9",
        kind=AlertKind.RECEIVING_DISCREPANCY,
        severity=Severity.WARNING,
        subject="ASN-9",
        message="short",
        raised_at=T0,
        details={
            "receipt_id": "ASN-9",
            "door": "door-1",
            "po": "PO-9",
            "planned": True,
            "received": {"SKU-1001": 12},
            "short": {"SKU-1001": 12},
            "over": {},
            "unexpected": {},
            "missing_epcs": [case(7)],
            "unexpected_epcs": [],
            "movement_ids": ["m-1"],
        },
    )
    closed = ReceiptClosed.from_alert(alert)
    assert closed is not None
    assert (closed.disposition, closed.purchase_order, closed.movement_ids) == (
        "mismatch_quantity",
        "PO-9",
        ("m-1",),
    )
    event = receipt_closed_event(closed, SITE_WITH_GLNS, received_epcs=[case(1), pallet(1)])
    assert event["epcList"] == [case(1), pallet(1)]
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:0614141.00001.door1"}
    low = Alert("low_stock:x", AlertKind.LOW_STOCK, Severity.WARNING, "x", "low", T0)
    assert ReceiptClosed.from_alert(low) is None


def test_site_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="SGLN"):
        EpcisSite(site="dc", read_points={"door-1": "urn:epc:id:sgln:123.4.5"})
    with pytest.raises(ValueError, match="base_uri"):
        EpcisSite(site="dc", base_uri="ftp://x")


def test_the_document_is_compact_json_ld() -> None:
    events = movement_events(variety(1)[0], SITE_WITH_GLNS)
    body = document_bytes(events, creation_date=T0 + timedelta(hours=1))
    parsed = json.loads(body)
    assert parsed["@context"][0] == "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
    assert parsed["@context"][1] == {"dockwatch": "https://example.invalid/dockwatch/epcis/"}
    assert (parsed["type"], parsed["schemaVersion"]) == ("EPCISDocument", "2.0")
    assert parsed["creationDate"] == "2026-11-22T11:00:00.123Z"
    assert parsed["epcisBody"]["eventList"] == events
    assert b" " not in body.replace(b"GTIN ", b"")


# --- validity: the GS1 schema with formats on, and epcis2.js ----------------------------------


def _scenario_documents() -> dict[str, dict[str, object]]:
    """Every event of the hard portal scenario and of the noisy shelf scenario, one document
    each per site flavour (with SGLNs, with fallback URIs), plus receipts' closures."""
    portal, portal_gtins = hard_portal_movements()
    shelf, shelf_gtins = shelf_movements()
    assert len(portal) >= 10
    assert len(shelf) >= 100
    assert {m.kind for m in portal} == {MovementKind.RECEIPT, MovementKind.SHIPMENT}
    assert {MovementKind.PICK, MovementKind.RESTOCK, MovementKind.ADJUSTMENT} <= {
        m.kind for m in shelf
    }
    documents: dict[str, dict[str, object]] = {}
    for flavour, site in (("glns", SITE_WITH_GLNS), ("fallback", SITE_WITHOUT_GLNS)):
        mapped = EpcisSite(
            site=site.site,
            site_sgln=site.site_sgln,
            read_points=site.read_points,
            locations=site.locations,
            gtins={**portal_gtins, **shelf_gtins},
            inside={"door-1": "receiving", "door-2": "receiving"},
        )
        for name, movements in (("portal", portal), ("shelf", shelf)):
            events = [
                e
                for seq, m in enumerate(movements, 1)
                for e in movement_events(RecordedMovement(seq, "dc-east", m), mapped)
            ]
            if name == "portal":
                events += [receipt_closed_event(c, mapped) for c in closures()]
            documents[f"{name}-{flavour}"] = document(events, creation_date=T0)
    return documents


@pytest.fixture(scope="module")
def scenario_documents() -> dict[str, dict[str, object]]:
    return _scenario_documents()


def test_scenario_events_validate_against_the_gs1_schema(
    validator: EpcisValidator, scenario_documents: dict[str, dict[str, object]]
) -> None:
    for name, doc in scenario_documents.items():
        assert validator.problems(doc) == [], name
        # The fast path is the published schema's verdict (checked here on real documents).
        assert not list(validator.full.iter_errors(doc)), name


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("bizStep", "recieving", "bizStep"),
        ("eventTime", "2026-13-01T00:00:00Z", "eventTime: '2026-13-01T00:00:00Z' is not a"),
        ("readPoint", {"id": "not a uri"}, "readPoint.id"),
        ("eventTimeZoneOffset", "+25:00", "eventTimeZoneOffset"),
        ("action", "LOOK", "action"),
    ],
)
def test_invalid_events_are_refused_with_their_path(
    validator: EpcisValidator, field: str, value: object, expected: str
) -> None:
    event = dict(movement_events(variety(1)[0], SITE_WITH_GLNS)[0])
    event[field] = value
    doc = document([movement_events(variety(2)[1], SITE_WITH_GLNS)[0], event], creation_date=T0)
    problems = validator.problems(doc)
    assert problems, field
    assert problems[0].startswith("epcisBody.eventList[1]."), problems
    assert expected in problems[0], problems
    assert list(validator.full.iter_errors(doc))  # the published schema agrees


def test_vendored_schema_is_gs1s_unmodified() -> None:
    for name in ("EPCIS-JSON-Schema.json", "epcis-context.jsonld"):
        vendored = SCHEMA_DIR / name
        assert vendored.is_file(), name
        if (SHARED_EPCIS / name).is_file():
            assert vendored.read_bytes() == (SHARED_EPCIS / name).read_bytes(), name
    assert "GS1" in (SCHEMA_DIR / "NOTICE.md").read_text()


def _epcis2js() -> list[str]:
    node = shutil.which("node")
    script = JS_DIR / "validate.cjs"
    if node is None or not (JS_DIR / "node_modules" / "epcis2.js").is_dir():
        missing("node and tests/js/node_modules (bash deploy/install-system-deps.sh test)")
    assert node is not None
    return [node, str(script)]


def test_an_independent_validator_accepts_the_scenario_events(
    tmp_path: Path, scenario_documents: dict[str, dict[str, object]]
) -> None:
    command = _epcis2js()
    files = []
    for name, doc in scenario_documents.items():
        path = tmp_path / f"{name}.jsonld"
        path.write_text(json.dumps(doc), encoding="utf-8")
        files.append(str(path))
    bad = dict(movement_events(variety(1)[0], SITE_WITH_GLNS)[0])
    bad["bizStep"] = "recieving"
    bad_path = tmp_path / "bad.jsonld"
    bad_path.write_text(json.dumps(document([bad], creation_date=T0)), encoding="utf-8")
    done = subprocess.run(
        [*command, *files, str(bad_path)], capture_output=True, text=True, timeout=120, check=False
    )
    results = {json.loads(line)["file"]: json.loads(line) for line in done.stdout.splitlines()}
    for file in files:
        assert results[file]["success"], results[file]["errors"]
    # It does validate: a misspelt bizStep is refused.
    assert not results[str(bad_path)]["success"]
    assert done.returncode == 1


if __name__ == "__main__":  # pragma: no cover - writes the scenario documents for a look
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for key, value in _scenario_documents().items():
        (out / f"{key}.jsonld").write_text(json.dumps(value, indent=1), encoding="utf-8")


# --- properties of the mapping ---------------------------------------------------------------

_KINDS = [
    (MovementKind.RECEIPT, "yard", "receiving", "door-1"),
    (MovementKind.SHIPMENT, "receiving", "yard", "door-1"),
    (MovementKind.TRANSFER, "receiving", "backroom", "door-1"),
    (MovementKind.RETURN, "yard", "receiving", "door-1"),
    (MovementKind.PICK, "shelf-a1", "picked", "shelf-a1"),
    (MovementKind.RESTOCK, "backroom", "shelf-a1", "shelf-a1"),
    (MovementKind.ADJUSTMENT, "adjustment", "shelf-a1", "shelf-a1"),
]


@st.composite
def movements(draw: st.DrawFn) -> RecordedMovement:
    kind, frm, to, source = draw(st.sampled_from(_KINDS))
    door = source.startswith("door")
    serials = draw(st.lists(st.integers(0, 2**38 - 1), max_size=6 if door else 0, unique=True))
    boxed = door and bool(serials) and draw(st.booleans())
    m = movement(
        kind,
        n=draw(st.integers(0, 10**6)),
        quantity=draw(st.integers(1, 10_000)),
        source=source,
        frm=frm,
        to=to,
        epcs=tuple(case(s) for s in serials),
        container=pallet(draw(st.integers(0, 10**8))) if boxed else None,
    )
    reason = draw(st.sampled_from(["", "opening_count", "offline_change", "reconciliation"]))
    return recorded(with_reason(m, reason) if reason else m)


@settings(max_examples=150, deadline=None)
@given(recorded_movement=movements(), glns=st.booleans())
def test_every_movement_maps_to_valid_deterministic_events(
    validator: EpcisValidator, recorded_movement: RecordedMovement, glns: bool
) -> None:
    site = SITE_WITH_GLNS if glns else SITE_WITHOUT_GLNS
    events = movement_events(recorded_movement, site)
    m = recorded_movement.movement
    assert 1 <= len(events) <= 2
    assert len(events) == 2 if (m.container and m.epcs) else len(events) == 1
    assert events == movement_events(recorded_movement, site)  # a re-send is the same
    assert validator.problems(document(events, creation_date=T0)) == []
    assert all(e["dockwatch:movementId"] == m.movement_id for e in events)
    assert len({e["eventID"] for e in events}) == len(events)
