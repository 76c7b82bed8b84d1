"""Movements, closures and sites of every shape the EPCIS mapping handles (for the EPCIS tests)."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta

from gateway.domain.epc import decode_epc, encode_sgtin96, encode_sscc96
from gateway.domain.epcis import EpcisSite, ReceiptClosed
from gateway.domain.model import (
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    RecordedMovement,
    Sku,
    SourceType,
)

T0 = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
GTINS = {"SKU-1001": "00614141123452", "SKU-2002": "10614141000019"}

SITE_WITH_GLNS = EpcisSite(
    site="dc-east",
    site_sgln="urn:epc:id:sgln:0614141.00000.0",
    read_points={
        "door-1": "urn:epc:id:sgln:0614141.00001.door1",
        "shelf-a1": "urn:epc:id:sgln:0614141.00002.a1",
    },
    locations={
        "receiving": "urn:epc:id:sgln:0614141.00001.0",
        "shelf-a1": "urn:epc:id:sgln:0614141.00002.0",
    },
    gtins=GTINS,
    inside={"door-1": "receiving"},
    shelves={"shelf-a1": "shelf-a1"},
)
SITE_WITHOUT_GLNS = EpcisSite(
    site="dc-east",
    gtins=GTINS,
    inside={"door-1": "receiving"},
    shelves={"shelf-a1": "shelf-a1"},
)


@dataclass(frozen=True, slots=True)
class WithReason:
    """A movement carrying the contract extension's ``reason`` (whether or not Movement has it)."""

    movement: Movement
    reason: str

    def __getattr__(self, name: str) -> object:
        return getattr(self.movement, name)


def with_reason(m: Movement, reason: str) -> Movement:
    """``m`` with a ``reason``: the model's own field once it has one, else a stand-in."""
    if "reason" in {f.name for f in fields(Movement)}:
        return replace(m, reason=reason)  # type: ignore[call-arg, unused-ignore]
    return WithReason(m, reason)  # type: ignore[return-value]


def case(serial: int, item: str = "812345") -> str:
    return decode_epc(encode_sgtin96("0614141", item, serial)).uri


def pallet(serial: int) -> str:
    return decode_epc(encode_sscc96("0614141", "1" + f"{serial:09d}")).uri


def movement(
    kind: MovementKind,
    *,
    n: int = 0,
    sku: str = "SKU-1001",
    quantity: int = 12,
    source: str = "door-1",
    frm: str = "yard",
    to: str = "receiving",
    epcs: tuple[str, ...] = (),
    container: str | None = None,
    source_type: SourceType = SourceType.RFID_PORTAL,
) -> Movement:
    return Movement(
        movement_id=MovementId(f"m-{kind}-{n}"),
        kind=kind,
        sku=Sku(sku),
        quantity=quantity,
        from_location=LocationId(frm),
        to_location=LocationId(to),
        source_type=source_type,
        source_id=source,
        observed_at=T0 + timedelta(seconds=n, microseconds=n * 777),
        confidence=0.9,
        epcs=epcs,
        container=container,
    )


def recorded(m: Movement, seq: int = 1) -> RecordedMovement:
    return RecordedMovement(seq=seq, site="dc-east", movement=m)


def variety(count: int = 40, seed: int = 7) -> list[RecordedMovement]:
    """Movements of every kind and shape, reproducibly."""
    rng = random.Random(seed)
    out: list[RecordedMovement] = []
    for n in range(count):
        shape = n % 8
        cases = tuple(case(1000 + n * 10 + i) for i in range(rng.randint(1, 4)))
        box = pallet(n) if rng.random() < 0.6 else None
        if shape == 0:
            m = movement(
                MovementKind.RECEIPT, n=n, epcs=cases, container=box, quantity=12 * len(cases)
            )
        elif shape == 1:
            m = movement(
                MovementKind.SHIPMENT, n=n, epcs=cases, container=box, frm="receiving", to="yard"
            )
        elif shape == 2:
            m = movement(MovementKind.TRANSFER, n=n, epcs=cases, frm="receiving", to="backroom")
        elif shape == 3:
            m = movement(
                MovementKind.RETURN, n=n, epcs=cases, container=box, frm="receiving", to="yard"
            )
        elif shape == 4:
            m = movement(MovementKind.RETURN, n=n, epcs=cases, frm="yard", to="receiving")
        elif shape == 5:
            m = movement(
                MovementKind.PICK,
                n=n,
                quantity=rng.randint(1, 9),
                source="shelf-a1",
                frm="shelf-a1",
                to="picked",
                source_type=SourceType.WEIGHT_SHELF,
            )
        elif shape == 6:
            m = movement(
                MovementKind.RESTOCK,
                n=n,
                sku="SKU-2002",
                quantity=rng.randint(1, 30),
                source="shelf-a1",
                frm="backroom",
                to="shelf-a1",
                source_type=SourceType.WEIGHT_SHELF,
            )
        else:
            up = rng.random() < 0.5
            m = movement(
                MovementKind.ADJUSTMENT,
                n=n,
                quantity=rng.randint(1, 5),
                source="shelf-a1",
                frm="adjustment" if up else "shelf-a1",
                to="shelf-a1" if up else "adjustment",
                source_type=SourceType.WEIGHT_SHELF,
            )
            reason = rng.choice(["opening_count", "offline_change", "reconciliation", ""])
            if reason:
                m = with_reason(m, reason)
        out.append(recorded(m, n + 1))
    return out


def closures() -> list[ReceiptClosed]:
    """A closed receipt of each disposition, with and without its purchase order and door."""
    t = T0 + timedelta(minutes=10)
    return [
        ReceiptClosed("ASN-1", t, door="door-1", received={"SKU-1001": 24}),
        ReceiptClosed(
            "ASN-2",
            t,
            door="door-1",
            received={"SKU-1001": 12},
            short={"SKU-1001": 12},
            purchase_order="PO-77",
        ),
        ReceiptClosed(
            "ASN-3",
            t,
            received={"SKU-1001": 24, "SKU-2002": 5},
            unexpected={"SKU-2002": 5},
            purchase_order="PO-78",
        ),
        ReceiptClosed(
            "ASN-4",
            t,
            door="door-1",
            received={"SKU-1001": 24},
            missing_epcs=(case(1),),
            unexpected_epcs=(case(2),),
            received_epcs=(case(2), case(3)),
        ),
        ReceiptClosed(
            "unplanned:door-1:abc",
            t,
            door="door-1",
            planned=False,
            received={"SKU-2002": 3},
            unexpected={"SKU-2002": 3},
        ),
    ]
