"""Receiving reconciliation: expected receipts (ASNs) against receipt movements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.epc import decode_epc, encode_sgtin96_from_gtin
from gateway.domain.model import (
    AlertKind,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Severity,
    Sku,
    SourceType,
)
from gateway.domain.receiving import (
    ExpectedLine,
    ExpectedReceipt,
    ReceiptState,
    ReceivingTracker,
)
from gateway.receipts_file import ReceiptsError, parse_expected
from tests.test_portal_engine import GTIN_A, GTIN_B, make_catalog, make_engine, pallet, run

NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def urn(serial: int, gtin: str = GTIN_A) -> str:
    return decode_epc(encode_sgtin96_from_gtin(gtin, 7, serial)).uri


def receipt_movement(
    sku: str,
    cases: int,
    *,
    door: str = "door-1",
    at: datetime = NOON,
    serials: range | None = None,
    movement_id: str | None = None,
    kind: MovementKind = MovementKind.RECEIPT,
) -> Movement:
    pack = {"SKU-A": 12, "SKU-B": 6}[sku]
    gtin = {"SKU-A": GTIN_A, "SKU-B": GTIN_B}[sku]
    epcs = tuple(urn(s, gtin) for s in (serials or range(1, cases + 1)))
    inward = kind is MovementKind.RECEIPT
    return Movement(
        movement_id=MovementId(movement_id or f"{door}-{sku}-{at.isoformat()}-{kind}"),
        kind=kind,
        sku=Sku(sku),
        quantity=len(epcs) * pack,
        from_location=LocationId("yard" if inward else "receiving"),
        to_location=LocationId("receiving" if inward else "yard"),
        source_type=SourceType.RFID_PORTAL,
        source_id=door,
        observed_at=at,
        confidence=0.9,
        epcs=epcs,
    )


def tracker(*receipts: ExpectedReceipt, idle_s: float = 300.0) -> ReceivingTracker:
    return ReceivingTracker(catalog=make_catalog(), expected=receipts, idle_close_s=idle_s)


def asn(receipt_id: str, *lines: ExpectedLine, door: str | None = "door-1") -> ExpectedReceipt:
    return ExpectedReceipt(receipt_id=receipt_id, lines=lines, door=door)


def qty(sku: str, quantity: int) -> ExpectedLine:
    return ExpectedLine(sku=Sku(sku), quantity=quantity)


# --- parsing ----------------------------------------------------------------------------------


def test_parse_expected_reads_receipts_with_quantity_and_epc_lines() -> None:
    hex_epc = encode_sgtin96_from_gtin(GTIN_A, 7, 5)
    receipts = parse_expected(
        {
            "receipts": [
                {
                    "id": "ASN-1",
                    "door": "door-1",
                    "supplier": "ACME",
                    "lines": [
                        {"sku": "SKU-A", "quantity": 48},
                        {"epcs": [urn(1, GTIN_B), hex_epc.lower()]},
                    ],
                },
                {"id": "ASN-2", "lines": [{"sku": "SKU-B", "quantity": 6}]},
            ]
        }
    )
    assert [r.receipt_id for r in receipts] == ["ASN-1", "ASN-2"]
    assert receipts[0].door == "door-1"
    assert receipts[1].door is None
    assert receipts[0].lines[0] == qty("SKU-A", 48)
    assert receipts[0].lines[1].epcs == frozenset({urn(1, GTIN_B), urn(5)})
    assert parse_expected([]) == []
    assert parse_expected({"receipts": []}) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"receipt": []}, r"receipt: unknown key \(allowed: receipts\); did you mean 'receipts'"),
        ({}, "receipts: missing"),
        ("ASN-1", "receipts: must be a list of receipts, got 'ASN-1'"),
        ([["ASN-1"]], r"receipts\[0\]: must be a mapping"),
        ([{"lines": [{"sku": "A", "quantity": 1}]}], r"receipts\[0\]\.id: missing"),
        ([{"id": "", "lines": []}], r"receipts\[0\]\.id: must be a receipt id of letters"),
        ([{"id": "A", "lines": []}], r"receipts\[0\]\.lines: must be a non-empty list"),
        ([{"id": "A"}], r"receipts\[0\]\.lines: missing"),
        (
            [{"id": "A", "dock": 1, "lines": []}],
            r"receipts\[0\]\.dock: unknown key \(allowed: id, lines, door, po, supplier, "
            r"reference\); receipts\[0\]\.lines: must be a non-empty list",
        ),
        (
            [{"id": "A", "lines": [{"sku": "X", "quantity": 1}, {"sku": "X", "quantity": -3}]}],
            r"receipts\[0\]\.lines\[1\]\.quantity: must be an integer in 1..2147483647, got -3",
        ),
        (
            [{"id": "A", "lines": [{"sku": "X", "quantity": True}]}],
            r"lines\[0\]\.quantity: must be an integer in 1..2147483647",
        ),
        ([{"id": "A", "lines": [{"quantity": 2}]}], r"lines\[0\]\.sku: required"),
        ([{"id": "A", "lines": [{"sku": "X"}]}], r"lines\[0\]\.quantity: required"),
        (
            [{"id": "A", "lines": [{"sku": "X", "quantity": 1, "epcs": [urn(1)]}]}],
            r"lines\[0\]: give either quantity or epcs",
        ),
        (
            [{"id": "A", "lines": [{"epcs": ["not-an-epc"]}]}],
            r"lines\[0\]\.epcs\[0\]: 'not-an-epc' is neither an EPC URN",
        ),
        (
            [{"id": "A", "lines": [{"epcs": ["urn:epc:id:sgtin:0614141.012345.01"]}]}],
            r"lines\[0\]\.epcs\[0\]: serial '01' is not a 96-bit numeric serial",
        ),
        ([{"id": "A", "lines": [{"epcs": [urn(1), urn(1)]}]}], "lists an EPC twice"),
        (
            [
                {"id": "A", "lines": [{"sku": "X", "quantity": 1}]},
                {"id": "A", "lines": [{"sku": "X", "quantity": 1}]},
            ],
            r"receipts\[1\]\.id: duplicate receipt id 'A'",
        ),
        (
            [
                {"id": "A", "lines": [{"epcs": [urn(1)]}]},
                {"id": "B", "lines": [{"epcs": [urn(1)]}]},
            ],
            r"receipts\[1\]\.lines\[0\]\.epcs: .* is already expected in A",
        ),
    ],
)
def test_parse_expected_names_the_offending_key(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_expected(data)


def test_every_problem_of_a_receipts_file_is_reported_at_once() -> None:
    with pytest.raises(ReceiptsError) as caught:
        parse_expected(
            [
                {"id": "A", "lines": [{"sku": "X", "quantity": 0}], "dor": "door-1"},
                {"id": "B b", "lines": [{"epcs": ["not-an-epc"]}, {"sku": "X"}]},
                {"id": "C", "lines": "none"},
            ]
        )
    assert caught.value.problems == [
        "receipts[0].dor: unknown key (allowed: id, lines, door, po, supplier, reference); "
        "did you mean 'door'?",
        "receipts[0].lines[0].quantity: must be an integer in 1..2147483647, got 0",
        "receipts[1].id: must be a receipt id of letters, digits, '.', '_', ':' or '-' starting "
        "with a letter or digit, got 'B b'",
        "receipts[1].lines[0].epcs[0]: 'not-an-epc' is neither an EPC URN nor a decodable "
        "96-bit EPC",
        "receipts[1].lines[1].quantity: required when the line has no epcs",
        "receipts[2].lines: must be a list of lines, got 'none'",
    ]


def test_tracker_rejects_epcs_it_cannot_price() -> None:
    stranger = ExpectedLine(epcs=frozenset({"urn:epc:id:sgtin:0614141.000000.1"}))
    with pytest.raises(ValueError, match="not a catalog item; give the line a sku"):
        tracker(asn("ASN-1", stranger))
    with pytest.raises(ValueError, match="is SKU-A in the catalog, not SKU-B"):
        tracker(asn("ASN-1", ExpectedLine(sku=Sku("SKU-B"), epcs=frozenset({urn(1)}))))
    with pytest.raises(ValueError, match="already expected"):
        tracker(asn("ASN-1", qty("SKU-A", 1)), asn("ASN-1", qty("SKU-A", 1)))


# --- reconciliation -----------------------------------------------------------------------------


def test_receipt_that_matches_completes_with_an_info_alert_after_the_door_goes_idle() -> None:
    t = tracker(asn("ASN-1", qty("SKU-A", 24), qty("SKU-B", 6)), idle_s=300)
    assert t.status("ASN-1").state is ReceiptState.EXPECTED

    assert t.observe([receipt_movement("SKU-A", 2)], NOON) == []
    assert t.observe([receipt_movement("SKU-B", 1, at=NOON + timedelta(seconds=40))], NOON) == []
    assert t.status("ASN-1").state is ReceiptState.RECEIVING
    assert t.advance(NOON + timedelta(seconds=339)) == []  # 299 s after the last movement

    (alert,) = t.advance(NOON + timedelta(seconds=340))
    assert alert.kind is AlertKind.RECEIVING_DISCREPANCY
    assert alert.severity is Severity.INFO
    assert not alert.active
    assert alert.alert_id == "receiving_discrepancy:ASN-1"
    assert alert.subject == "ASN-1"
    assert "all 2 SKU(s) matched" in alert.message
    assert alert.details["received"] == {"SKU-A": 24, "SKU-B": 6}
    status = t.status("ASN-1")
    assert status.state is ReceiptState.COMPLETE
    assert status.completed_at == NOON + timedelta(seconds=340)
    assert t.advance(NOON + timedelta(hours=1)) == []  # completes once


def test_short_over_and_unexpected_items_are_listed() -> None:
    t = tracker(asn("ASN-1", qty("SKU-A", 36), qty("SKU-B", 6)), idle_s=60)
    movements = [
        receipt_movement("SKU-A", 2),  # 24 of 36: short 12
        receipt_movement("SKU-B", 2, at=NOON + timedelta(seconds=1)),  # 12 of 6: over 6
    ]
    t.observe(movements, NOON + timedelta(seconds=2))
    (alert,) = t.advance(NOON + timedelta(minutes=5))

    assert alert.severity is Severity.WARNING
    assert alert.active
    assert alert.details["short"] == {"SKU-A": 12}
    assert alert.details["over"] == {"SKU-B": 6}
    assert alert.details["unexpected"] == {}
    assert alert.message == "receipt ASN-1 at door-1: short SKU-A 12, over SKU-B 6"
    ids = alert.details["movement_ids"]
    assert isinstance(ids, list)
    assert set(ids) == {m.movement_id for m in movements}


def test_epc_lines_report_missing_and_unexpected_cases() -> None:
    listed = ExpectedLine(epcs=frozenset({urn(1), urn(2), urn(3)}))
    t = tracker(asn("ASN-1", listed), idle_s=60)
    # Case 3 never arrives; case 9 (same SKU, not listed) does.
    t.observe([receipt_movement("SKU-A", 3, serials=range(1, 10, 8))], NOON)
    t.observe([receipt_movement("SKU-A", 1, serials=range(2, 3), movement_id="m2")], NOON)
    (alert,) = t.advance(NOON + timedelta(minutes=2))

    assert alert.severity is Severity.WARNING
    assert alert.details["expected"] == {"SKU-A": 36}
    assert alert.details["received"] == {"SKU-A": 36}
    assert alert.details["short"] == {}
    assert alert.details["missing_epcs"] == [urn(3)]
    assert alert.details["unexpected_epcs"] == [urn(9)]


def test_movements_are_attributed_by_epc_then_by_door() -> None:
    door_1 = asn("ASN-1", qty("SKU-A", 12), door="door-1")
    door_2 = asn("ASN-2", qty("SKU-A", 12), door="door-2")
    by_epc = asn("ASN-3", ExpectedLine(epcs=frozenset({urn(7)})), door=None)
    t = tracker(door_1, door_2, by_epc, idle_s=60)
    t.observe(
        [
            receipt_movement("SKU-A", 1, door="door-2", serials=range(1, 2)),
            receipt_movement("SKU-A", 1, door="door-1", serials=range(2, 3)),
            receipt_movement("SKU-A", 1, door="door-1", serials=range(7, 8), movement_id="x"),
        ],
        NOON,
    )
    alerts = {a.subject: a for a in t.advance(NOON + timedelta(minutes=2))}

    assert set(alerts) == {"ASN-1", "ASN-2", "ASN-3"}
    assert all(a.severity is Severity.INFO for a in alerts.values())


def test_receipt_at_a_door_without_asn_is_an_unplanned_receipt() -> None:
    t = tracker(asn("ASN-1", qty("SKU-A", 12), door="door-1"), idle_s=60)
    t.observe([receipt_movement("SKU-B", 4, door="door-7")], NOON)
    (alert,) = t.advance(NOON + timedelta(minutes=2))

    assert alert.severity is Severity.WARNING
    assert alert.subject.startswith("unplanned:door-7:")
    assert alert.details["unexpected"] == {"SKU-B": 24}
    assert alert.details["planned"] is False
    assert t.status("ASN-1").state is ReceiptState.EXPECTED


def test_a_replayed_movement_is_counted_once() -> None:
    t = tracker(asn("ASN-1", qty("SKU-A", 12)), idle_s=60)
    movement = receipt_movement("SKU-A", 1)
    t.observe([movement], NOON)
    t.observe([movement, movement], NOON + timedelta(seconds=5))
    (alert,) = t.advance(NOON + timedelta(minutes=2))
    assert alert.severity is Severity.INFO
    assert alert.details["received"] == {"SKU-A": 12}


def test_cases_put_back_on_the_truck_are_taken_off_the_receipt() -> None:
    t = tracker(asn("ASN-1", qty("SKU-A", 24)), idle_s=60)
    t.observe([receipt_movement("SKU-A", 3)], NOON)  # one case too many...
    back = receipt_movement(
        "SKU-A", 1, serials=range(3, 4), kind=MovementKind.SHIPMENT, at=NOON + timedelta(seconds=20)
    )
    t.observe([back], NOON + timedelta(seconds=21))  # ...carried back out
    assert t.status("ASN-1").received == {"SKU-A": 24}
    (alert,) = t.advance(NOON + timedelta(seconds=81))
    assert alert.severity is Severity.INFO


def test_arrivals_after_completion_are_reported_not_silently_added() -> None:
    t = tracker(asn("ASN-1", qty("SKU-A", 12)), idle_s=60)
    t.observe([receipt_movement("SKU-A", 1)], NOON)
    (done,) = t.advance(NOON + timedelta(minutes=2))
    assert done.severity is Severity.INFO
    late = receipt_movement("SKU-A", 1, serials=range(5, 6), at=NOON + timedelta(minutes=3))
    t.observe([late], NOON + timedelta(minutes=3))
    (alert,) = t.advance(NOON + timedelta(minutes=5))
    assert alert.subject.startswith("unplanned:door-1:")
    assert alert.details["unexpected"] == {"SKU-A": 12}


def test_completed_receipts_kept_are_bounded() -> None:
    t = ReceivingTracker(
        catalog=make_catalog(),
        expected=[asn(f"ASN-{n}", qty("SKU-A", 12), door=f"door-{n}") for n in range(5)],
        idle_close_s=60,
        keep_completed=2,
    )
    t.observe(
        [receipt_movement("SKU-A", 1, door=f"door-{n}", movement_id=f"m{n}") for n in range(5)],
        NOON,
    )
    assert len(t.advance(NOON + timedelta(minutes=2))) == 5
    assert [r.receipt_id for r in t.receipts] == ["ASN-3", "ASN-4"]


def test_now_must_be_utc() -> None:
    t = tracker(asn("ASN-1", qty("SKU-A", 12)))
    with pytest.raises(ValueError, match="UTC"):
        t.advance(datetime(2026, 11, 22, 12, 0))  # noqa: DTZ001 - the point of the test


# --- end to end through the portal engine -------------------------------------------------------


def test_pallet_through_the_door_reconciles_against_its_asn() -> None:
    receipts = parse_expected(
        {
            "receipts": [
                {
                    "id": "ASN-77",
                    "door": "door-1",
                    "lines": [{"sku": "SKU-A", "quantity": 120}, {"sku": "SKU-B", "quantity": 6}],
                }
            ]
        }
    )
    t = ReceivingTracker(catalog=make_catalog(), expected=receipts, idle_close_s=60)
    engine = make_engine()
    movements = engine.movements(run(engine, pallet(range(1, 9))))  # 8 cases of 12, no SKU-B
    assert [m.quantity for m in movements] == [96]

    last = max(m.observed_at for m in movements)
    assert t.observe(movements, last) == []
    (alert,) = t.advance(last + timedelta(seconds=60))
    assert alert.details["short"] == {"SKU-A": 24, "SKU-B": 6}
    assert alert.details["received"] == {"SKU-A": 96}
