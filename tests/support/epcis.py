"""Movements, closures and sites of every shape the EPCIS mapping handles (for the EPCIS tests)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gateway.domain.epc import decode_epc, encode_sgtin96, encode_sscc96
from gateway.domain.epcis import EpcisSite, ReceiptClosed
from gateway.domain.model import (
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    MovementReason,
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


def with_reason(m: Movement, reason: str) -> Movement:
    """``m`` with the contract extension's ``reason``."""
    return replace(m, reason=MovementReason(reason))


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


def hard_portal_movements(step_s: float = 0.1) -> tuple[list[Movement], dict[str, str]]:
    """The movements the portal engine makes of ``simulators/scenarios/hard.yaml``, driven in
    process (the scenario's reads, no sockets: the end-to-end run is tests/test_portal_accuracy),
    and the scenario's GTINs by SKU."""
    from pathlib import Path

    from gateway.domain.model import DeviceId, Epc, TagRead
    from gateway.domain.portal import PortalEngine, PortalSpec
    from simulators.llrp.accuracy import scenario_catalog
    from simulators.scenario import load_scenario

    scenario = load_scenario(
        Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / "hard.yaml"
    )
    catalog = scenario_catalog(scenario)
    engine = PortalEngine(
        portals=[
            PortalSpec(
                portal_id=d.id,
                reader_id=DeviceId(d.reader),
                outside_antennas=frozenset(d.outside_antennas),
                inside_antennas=frozenset(d.inside_antennas),
                outside_location=LocationId(d.outside_location),
                inside_location=LocationId(d.inside_location),
            )
            for d in scenario.doors
        ],
        catalog=catalog,
    )
    start = 1_790_000_000.0
    sources = {d.reader: scenario.read_source(d.id, start) for d in scenario.doors}
    movements: list[Movement] = []
    steps = round((scenario.duration_s + 60.0) / step_s)
    for k in range(steps):
        t0, t1 = start + k * step_s, start + (k + 1) * step_s
        now_us = round(t1 * 1_000_000)
        for reader, source in sources.items():
            reads = [
                TagRead(
                    DeviceId(reader),
                    r.antenna,
                    Epc(r.epc_hex),
                    r.rssi_dbm,
                    r.first_seen_us,
                    r.last_seen_us,
                    r.seen_count,
                )
                for r in source.reads(t0, t1)
            ]
            if reads:
                movements += engine.movements(engine.feed(reads, now_us))
        movements += engine.movements(engine.advance(now_us))
    gtins: dict[str, str] = {i.sku: i.gtin for i in catalog if i.gtin is not None}
    return movements, gtins


def shelf_movements(name: str = "shelf_noisy") -> tuple[list[Movement], dict[str, str]]:
    """The movements the shelf engine makes of a shelf scenario, driven in process (the
    transmitter's physics polled every ``poll_interval_s``, no Modbus: the end-to-end run is
    tests/test_shelf_accuracy), after an opening count of each shelf; and GTINs by SKU."""
    from pathlib import Path

    from gateway.domain.model import DeviceId, WeightSample
    from gateway.domain.params import ShelfParams
    from gateway.domain.shelf import ShelfEngine
    from simulators.modbus.accuracy import tolerance_for
    from simulators.modbus.physics import ShelfPhysics
    from simulators.shelf_scenario import load_shelf_scenario

    scenario = load_shelf_scenario(
        Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / f"{name}.yaml"
    )
    params = ShelfParams()
    movements: list[Movement] = []
    skus: set[str] = set()
    for track in scenario.shelves:
        skus.add(track.sku)
        opening = Movement(
            movement_id=MovementId(f"opening-{track.shelf_id}"),
            kind=MovementKind.ADJUSTMENT,
            sku=Sku(track.sku),
            quantity=max(1, track.initial_units),
            from_location=LocationId(params.adjust_location),
            to_location=LocationId(track.shelf_id),
            source_type=SourceType.MANUAL,
            source_id=track.shelf_id,
            observed_at=T0,
            confidence=1.0,
        )
        movements.append(with_reason(opening, "opening_count"))
        engine = ShelfEngine(
            track.shelf_id,
            location=LocationId(track.shelf_id),
            sku=Sku(track.sku),
            unit_weight_g=track.unit_weight_g,
            tolerance_g=tolerance_for(track),
            params=params,
        )
        engine.set_on_hand(track.initial_units)
        physics = ShelfPhysics(track, scenario.seed)
        steps = round(scenario.end_s / params.poll_interval_s)
        for k in range(steps):
            at = k * params.poll_interval_s
            reading = physics.reading(at)
            if reading.failure is not None:
                continue
            sample = WeightSample(
                shelf_id=DeviceId(track.shelf_id),
                at=at,
                grams=reading.gross_g,
                stable=reading.stable,
                overload=reading.overload,
                error=reading.adc_error,
            )
            out = engine.feed(sample, T0 + timedelta(seconds=at))
            movements += [m for m in out if isinstance(m, Movement)]
    gtins = {sku: f"0061414{n:06d}" for n, sku in enumerate(sorted(skus))}
    return movements, {sku: g + _gs1_check(g) for sku, g in gtins.items()}


def _gs1_check(body: str) -> str:
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)
