"""Portal engine behaviour on synthetic read sequences.

The scene helpers below model one dock door the way its antennas see it: a tag moves along the
door's axis (negative x is outside); outside antennas at x = -0.3 m face the yard and inside
antennas at x = +0.3 m face the building, each hearing a tag within a few metres in front of it
(and 10 dB weaker just behind it). The reader cycles through its antennas every ``interval_ms``.
``run`` replays reads as reports of ``period_ms`` delivered ``latency_ms`` late, like an LLRP
reader with periodic reports.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import pytest

from gateway.domain.catalog import Catalog
from gateway.domain.epc import decode_epc, encode_giai96, encode_sgtin96_from_gtin, encode_sscc96
from gateway.domain.model import (
    CatalogItem,
    DeviceId,
    Epc,
    LocationId,
    Movement,
    MovementKind,
    Sku,
    SourceType,
    TagRead,
)
from gateway.domain.params import PortalParams
from gateway.domain.portal import (
    DecidedBy,
    Direction,
    PortalEngine,
    PortalSpec,
    TagCrossed,
    portal_movement_id,
)

T0 = 1_790_000_000_000_000  # 2026-09-21T14:13:20Z in UTC microseconds
GTIN_A = "00614141123452"
GTIN_B = "00614141999996"


@dataclass(frozen=True)
class Door:
    portal_id: str
    reader: str
    outside: tuple[int, ...] = (1, 2)
    inside: tuple[int, ...] = (3, 4)
    outside_location: str = "yard"
    inside_location: str = "receiving"

    def spec(self) -> PortalSpec:
        return PortalSpec(
            portal_id=self.portal_id,
            reader_id=DeviceId(self.reader),
            outside_antennas=frozenset(self.outside),
            inside_antennas=frozenset(self.inside),
            outside_location=LocationId(self.outside_location),
            inside_location=LocationId(self.inside_location),
        )


DOOR1 = Door("door-1", "reader-1")
DOOR2 = Door("door-2", "reader-2")


def _rssi(door: Door, antenna: int, x: float, peak: float) -> float | None:
    if antenna in door.outside:
        at, heard = -0.3, -3.5 <= x <= 0.8
        behind = x > at
    else:
        at, heard = 0.3, -0.8 <= x <= 3.5
        behind = x < at
    if not heard:
        return None
    return peak - 6.0 * abs(x - at) - (10.0 if behind else 0.0)


def crossing(
    epc: str,
    door: Door = DOOR1,
    *,
    start_us: int = T0,
    direction: str = "in",
    speed_mps: float = 1.5,
    interval_ms: int = 25,
    peak_dbm: float = -45.0,
    drop: float = 0.1,
    seed: int = 0,
    path_m: float = 4.0,
    start_m: float | None = None,
    stop_at_m: float | None = None,
    dwell_s: float = 0.0,
    sides: str = "both",
) -> list[TagRead]:
    """Reads of one tag carried through ``door``.

    The tag starts ``start_m`` (default ``path_m``) before the door and ends ``path_m`` past it;
    ``stop_at_m``/``dwell_s``: the tag stops at that distance past the door and stays there
    (still read) for ``dwell_s``. ``sides``: "outside"/"inside" keeps only that side's reads, as
    when the other antennas (or the reader, for half the pass) were offline.
    """
    rng = random.Random(f"{epc}/{door.portal_id}/{seed}")
    antennas = [*door.outside, *door.inside]
    step = interval_ms * 1000
    begin_m = path_m if start_m is None else start_m
    end_m = path_m if stop_at_m is None else stop_at_m
    travel_s = (end_m + begin_m) / speed_mps
    total_s = travel_s + (dwell_s if stop_at_m is not None else 0.0)
    reads = []
    for k in range(int(total_s * 1e6) // step):
        elapsed = k * step / 1e6
        x = -begin_m + speed_mps * min(elapsed, travel_s)
        if direction == "out":
            x = -x
        antenna = antennas[k % len(antennas)]
        if sides == "outside" and antenna not in door.outside:
            continue
        if sides == "inside" and antenna not in door.inside:
            continue
        rssi = _rssi(door, antenna, x, peak_dbm)
        if rssi is None or rng.random() < drop:
            continue
        t = start_us + k * step + rng.randrange(step // 2)
        reads.append(
            TagRead(
                reader_id=DeviceId(door.reader),
                antenna=antenna,
                epc=Epc(epc),
                rssi_dbm=round(rssi + rng.gauss(0.0, 1.0), 1),
                first_seen_us=t,
                last_seen_us=t,
            )
        )
    return reads


def parked(
    epc: str,
    door: Door = DOOR1,
    *,
    start_us: int = T0,
    duration_s: float = 120.0,
    x_m: float = -0.2,
    interval_ms: int = 100,
    peak_dbm: float = -50.0,
    seed: int = 0,
) -> list[TagRead]:
    """Reads of a tag parked at ``x_m`` (still, flat noisy RSSI) for ``duration_s``."""
    rng = random.Random(f"{epc}/parked/{seed}")
    antennas = [*door.outside, *door.inside]
    step = interval_ms * 1000
    reads = []
    for k in range(int(duration_s * 1e6) // step):
        antenna = antennas[k % len(antennas)]
        rssi = _rssi(door, antenna, x_m, peak_dbm)
        if rssi is None or rng.random() < 0.2:
            continue
        t = start_us + k * step
        reads.append(
            TagRead(
                reader_id=DeviceId(door.reader),
                antenna=antenna,
                epc=Epc(epc),
                rssi_dbm=round(rssi + rng.gauss(0.0, 1.5), 1),
                first_seen_us=t,
                last_seen_us=t,
            )
        )
    return reads


def reports(
    reads: Iterable[TagRead], *, period_ms: int = 100, latency_ms: int = 30
) -> list[tuple[int, list[TagRead]]]:
    """Reads cut into reports of ``period_ms`` (by timestamp): (delivery time, reads) pairs."""
    ordered = sorted(reads, key=lambda r: r.last_seen_us)
    if not ordered:
        return []
    period = period_ms * 1000
    out: list[tuple[int, list[TagRead]]] = []
    end = ordered[0].last_seen_us + period
    batch: list[TagRead] = []
    for read in ordered:
        while read.last_seen_us >= end:
            out.append((end + latency_ms * 1000, batch))
            batch = []
            end += period
        batch.append(read)
    out.append((end + latency_ms * 1000, batch))
    return out


def run(
    engine: PortalEngine,
    reads: Iterable[TagRead],
    *,
    period_ms: int = 100,
    latency_ms: int = 30,
    tail_s: float = 20.0,
) -> list[TagCrossed]:
    """Feed ``reads`` report by report, then let ``tail_s`` pass in report-period steps."""
    crossings: list[TagCrossed] = []
    now = T0
    for now, batch in reports(reads, period_ms=period_ms, latency_ms=latency_ms):
        crossings += engine.feed(batch, now)
    end = now + round(tail_s * 1e6)
    while now < end:
        now += period_ms * 1000
        crossings += engine.advance(now)
    return crossings


def case_epc(serial: int, gtin: str = GTIN_A) -> str:
    return encode_sgtin96_from_gtin(gtin, 7, serial, filter=2)


def make_catalog() -> Catalog:
    return Catalog(
        [
            CatalogItem(sku=Sku("SKU-A"), gtin=GTIN_A, name="Widget", pack_size=12),
            CatalogItem(sku=Sku("SKU-B"), gtin=GTIN_B, name="Gadget", pack_size=6),
        ]
    )


def make_engine(
    doors: Sequence[Door] = (DOOR1,), params: PortalParams | None = None
) -> PortalEngine:
    return PortalEngine(
        portals=[door.spec() for door in doors],
        catalog=make_catalog(),
        params=params or PortalParams(),
    )


def pallet(
    serials: Sequence[int],
    door: Door = DOOR1,
    *,
    start_us: int = T0,
    direction: str = "in",
    gtin: str = GTIN_A,
    sscc_ref: str | None = "1234567890",
    seed: int = 0,
) -> list[TagRead]:
    """A forklift carrying one pallet: an SSCC tag plus case tags, all within 0.5 s."""
    epcs = [case_epc(s, gtin) for s in serials]
    if sscc_ref is not None:
        epcs.append(encode_sscc96("0614141", sscc_ref, filter=2))
    reads: list[TagRead] = []
    for k, epc in enumerate(epcs):
        reads += crossing(epc, door, start_us=start_us + k * 20_000, direction=direction, seed=seed)
    return reads


# --- single crossings -----------------------------------------------------------------------


def test_inbound_case_becomes_one_receipt_movement() -> None:
    engine = make_engine()
    epc = case_epc(1)
    crossings = run(engine, crossing(epc))

    assert [(c.epc, c.direction, c.portal_id) for c in crossings] == [(epc, Direction.IN, "door-1")]
    crossed = crossings[0]
    assert crossed.uri == "urn:epc:id:sgtin:0614141.012345.1"
    assert crossed.confidence >= 0.8
    assert crossed.evidence.transition > 0.5
    # Decided as soon as the outside fell quiet, while the inside still hears the tag coming
    # closer: the trend (a trace, no vote) is whatever that part of the pass shows.
    assert crossed.evidence.decided_by is DecidedBy.QUIET_SIDE
    assert crossed.evidence.trend is not None
    assert -1.0 <= crossed.evidence.trend <= 1.0
    (movement,) = engine.movements(crossings)
    assert movement.kind is MovementKind.RECEIPT
    assert movement.sku == "SKU-A"
    assert movement.quantity == 12  # one case of pack_size 12, in eaches
    assert (movement.from_location, movement.to_location) == ("yard", "receiving")
    assert movement.source_type is SourceType.RFID_PORTAL
    assert movement.source_id == "door-1"
    assert movement.epcs == ("urn:epc:id:sgtin:0614141.012345.1",)
    assert movement.container is None
    assert movement.confidence == crossed.confidence
    # observed_at is when the tag crossed, from the reads' own UTC timestamps.
    assert T0 < crossed.moment_us < T0 + 6_000_000
    assert movement.observed_at.timestamp() == pytest.approx(crossed.moment_us / 1e6)


def test_outbound_crossing_is_a_shipment_from_inside_to_outside() -> None:
    engine = make_engine()
    crossings = run(engine, crossing(case_epc(2), direction="out"))

    assert [c.direction for c in crossings] == [Direction.OUT]
    assert crossings[0].evidence.transition < -0.5
    (movement,) = engine.movements(crossings)
    assert movement.kind is MovementKind.SHIPMENT
    assert (movement.from_location, movement.to_location) == ("receiving", "yard")


def test_portal_kinds_come_from_the_spec() -> None:
    spec = replace(DOOR1.spec(), kind_in=MovementKind.RETURN, kind_out=MovementKind.TRANSFER)
    engine = PortalEngine(portals=[spec], catalog=make_catalog())
    crossings = run(engine, crossing(case_epc(3)) + crossing(case_epc(4), direction="out"))

    assert sorted(m.kind for m in engine.movements(crossings)) == [
        MovementKind.RETURN,
        MovementKind.TRANSFER,
    ]


def test_slow_crossing_and_sparse_reads_still_decide_the_direction() -> None:
    engine = make_engine()
    slow = crossing(case_epc(5), speed_mps=0.5, interval_ms=60, drop=0.5)
    crossings = run(engine, slow)

    assert [c.direction for c in crossings] == [Direction.IN]


def test_too_few_reads_give_no_crossing() -> None:
    engine = make_engine(params=PortalParams(min_reads=5))
    reads = crossing(case_epc(6))
    outside = [r for r in reads if r.antenna in DOOR1.outside][-1:]
    inside = [r for r in reads if r.antenna in DOOR1.inside][:1]
    assert run(engine, outside + inside) == []
    assert engine.stats.too_few_reads == 1


# --- loads (pallets) --------------------------------------------------------------------------


def test_pallet_load_is_one_movement_per_sku_with_its_container() -> None:
    engine = make_engine()
    reads = pallet([1, 2, 3, 4, 5, 6, 7, 8])
    reads += [
        read
        for k, serial in enumerate([1, 2, 3, 4])
        for read in crossing(case_epc(serial, GTIN_B), start_us=T0 + 200_000 + k * 20_000)
    ]
    crossings = run(engine, reads)

    assert len(crossings) == 13
    assert len({c.pass_id for c in crossings}) == 1
    movements = engine.movements(crossings)
    assert [(m.sku, m.quantity, len(m.epcs)) for m in movements] == [
        ("SKU-A", 8 * 12, 8),
        ("SKU-B", 4 * 6, 4),
    ]
    assert {m.container for m in movements} == {"urn:epc:id:sscc:0614141.1234567890"}
    assert len({m.movement_id for m in movements}) == 2
    assert len({m.observed_at for m in movements}) == 1


def test_movements_do_not_depend_on_the_order_of_crossings() -> None:
    engine = make_engine()
    reads = pallet([1, 2, 3])
    reads += crossing(case_epc(4, GTIN_B), start_us=T0 + 100_000)
    crossings = run(engine, reads)
    assert len(engine.movements(crossings)) == 2
    assert engine.movements(list(reversed(crossings))) == engine.movements(crossings)


def test_two_pallets_on_one_forklift_leave_the_container_unknown() -> None:
    engine = make_engine()
    reads = pallet([1, 2], sscc_ref="0000000001")
    reads += pallet([3, 4], start_us=T0 + 100_000, sscc_ref="0000000002", seed=1)
    (movement,) = engine.movements(run(engine, reads))
    assert movement.quantity == 4 * 12
    assert movement.container is None


def test_pallet_only_or_asset_tags_move_no_stock() -> None:
    engine = make_engine()
    forklift = encode_giai96("0614141", 42)
    reads = pallet([], sscc_ref="1234567891") + crossing(forklift, start_us=T0 + 10_000)
    crossings = run(engine, reads)

    assert len(crossings) == 2
    assert engine.movements(crossings) == []
    assert engine.stats.unknown_crossings == 0


def test_two_loads_of_the_same_sku_get_distinct_ids() -> None:
    engine = make_engine()
    reads = pallet([1, 2, 3], sscc_ref="0000000001")
    reads += pallet([4, 5, 6], start_us=T0 + 30_000_000, sscc_ref="0000000002")
    movements = engine.movements(run(engine, reads))

    assert [m.quantity for m in movements] == [36, 36]
    assert len({m.movement_id for m in movements}) == 2
    assert {m.container for m in movements} == {
        "urn:epc:id:sscc:0614141.0000000001",
        "urn:epc:id:sscc:0614141.0000000002",
    }


def test_same_cases_crossing_again_later_get_a_new_id() -> None:
    engine = make_engine()
    reads = pallet([1, 2], sscc_ref=None)
    reads += pallet([1, 2], start_us=T0 + 40_000_000, direction="out", sscc_ref=None)
    reads += pallet([1, 2], start_us=T0 + 80_000_000, sscc_ref=None)
    movements = engine.movements(run(engine, reads))

    assert [m.kind for m in movements] == [
        MovementKind.RECEIPT,
        MovementKind.SHIPMENT,
        MovementKind.RECEIPT,
    ]
    assert movements[0].epcs == movements[2].epcs
    assert len({m.movement_id for m in movements}) == 3


def test_movement_id_is_recomputable_from_the_published_movement() -> None:
    engine = make_engine()
    (movement,) = engine.movements(run(engine, pallet([1, 2, 3])))

    assert movement.movement_id == portal_movement_id(
        source_id=movement.source_id,
        kind=movement.kind,
        from_location=movement.from_location,
        to_location=movement.to_location,
        sku=movement.sku,
        observed_at=movement.observed_at,
        epcs=reversed(movement.epcs),
    )


def _ids(movements: Iterable[Movement]) -> list[tuple[str, str, int]]:
    return sorted((m.movement_id, m.sku, m.quantity) for m in movements)


def test_replay_gives_the_same_ids_whatever_the_report_cadence() -> None:
    reads = pallet([1, 2, 3, 4], seed=3)
    reads += pallet(
        [5, 6], start_us=T0 + 15_000_000, direction="out", sscc_ref="0000000077", seed=4
    )
    reads += parked(case_epc(90), start_us=T0 - 5_000_000, duration_s=60)

    results = []
    for period_ms, latency_ms in [(100, 30), (250, 5), (40, 120), (1000, 30)]:
        engine = make_engine()
        results.append(
            _ids(engine.movements(run(engine, reads, period_ms=period_ms, latency_ms=latency_ms)))
        )
    assert len(results[0]) == 2
    assert all(result == results[0] for result in results)


# --- strays, dwell, re-reads ------------------------------------------------------------------


def test_stray_parked_by_the_door_for_minutes_produces_nothing() -> None:
    engine = make_engine()
    reads = parked(case_epc(50), duration_s=300, x_m=-0.2)  # heard by both sides
    reads += parked(case_epc(51), duration_s=300, x_m=-1.5, seed=1)  # outside only
    reads += parked(case_epc(52), duration_s=300, x_m=0.1, seed=2)  # both, inside-leaning
    crossings = run(engine, reads)

    assert crossings == []
    stats = engine.stats
    assert stats.stray_windows >= 3 * 10
    assert stats.crossings == 0


def test_tag_parked_outside_then_carried_in_is_received_once() -> None:
    engine = make_engine()
    epc = case_epc(53)
    reads = parked(epc, duration_s=90, x_m=-2.5)
    reads += crossing(epc, start_us=T0 + 90_000_000, start_m=2.5)
    crossings = run(engine, reads)

    assert [(c.epc, c.direction) for c in crossings] == [(epc, Direction.IN)]


def test_pallet_dropped_right_behind_the_door_is_decided_while_still_read() -> None:
    engine = make_engine()
    epc = case_epc(54)
    # Stops 1 m inside the door and sits there, read by the inside antennas, for two minutes.
    reads = crossing(epc, stop_at_m=1.0, dwell_s=120.0)
    first_movement_at = None
    for now, batch in reports(reads):
        if engine.feed(batch, now) and first_movement_at is None:
            first_movement_at = now
    assert first_movement_at is not None
    assert first_movement_at - T0 < 15_000_000  # not after the two minutes
    assert engine.known_location(epc) == "receiving"


def test_rereads_of_a_tag_already_inside_produce_nothing_new() -> None:
    engine = make_engine()
    epc = case_epc(55)
    reads = crossing(epc)
    # Later the same tag is carried past the door again inwards (e.g. jostled back and forth
    # while staging): it is already inside, so this is not a new receipt.
    reads += crossing(epc, start_us=T0 + 30_000_000, seed=1)
    # And then it sits inside within reach of the inside antennas.
    reads += parked(epc, start_us=T0 + 60_000_000, duration_s=60, x_m=1.5)
    crossings = run(engine, reads)

    assert [c.direction for c in crossings] == [Direction.IN]
    assert engine.stats.repeats_suppressed == 1


def test_in_then_out_gives_both_movements() -> None:
    engine = make_engine()
    epc = case_epc(56)
    reads = crossing(epc) + crossing(epc, start_us=T0 + 20_000_000, direction="out")
    crossings = run(engine, reads)

    assert [c.direction for c in crossings] == [Direction.IN, Direction.OUT]
    assert [m.kind for m in engine.movements(crossings)] == [
        MovementKind.RECEIPT,
        MovementKind.SHIPMENT,
    ]
    assert engine.known_location(epc) == "yard"


# --- cross-reads and offline readers ----------------------------------------------------------


@pytest.mark.parametrize(("through", "neighbour"), [(DOOR1, DOOR2), (DOOR2, DOOR1)])
def test_cross_read_is_credited_to_the_door_actually_passed(through: Door, neighbour: Door) -> None:
    engine = make_engine([DOOR1, DOOR2])
    reads: list[TagRead] = []
    for serial in range(1, 6):
        epc = case_epc(serial)
        start = T0 + serial * 20_000
        reads += crossing(epc, through, start_us=start)
        # The neighbouring door hears the same pass 15 dB weaker, with many reads lost.
        reads += crossing(epc, neighbour, start_us=start, peak_dbm=-60.0, drop=0.6, seed=1)
    crossings = run(engine, reads)

    assert len(crossings) == 5
    assert {c.portal_id for c in crossings} == {through.portal_id}
    assert all(c.evidence.runner_up == neighbour.portal_id for c in crossings)
    assert all(
        c.evidence.runner_up_gap_db is not None and c.evidence.runner_up_gap_db > 10
        for c in crossings
    )
    (movement,) = engine.movements(crossings)
    assert movement.source_id == through.portal_id
    assert movement.quantity == 5 * 12
    assert engine.stats.cross_reads_resolved == 5


def test_cross_read_within_the_margin_lowers_confidence() -> None:
    engine = make_engine([DOOR1, DOOR2], PortalParams(min_confidence=0.0))
    epc = case_epc(7)
    reads = crossing(epc, DOOR1) + crossing(epc, DOOR2, peak_dbm=-46.0, seed=1)
    (crossed,) = run(engine, reads)

    assert crossed.evidence.runner_up is not None
    assert crossed.confidence < 0.75
    clean = make_engine([DOOR1, DOOR2], PortalParams(min_confidence=0.0))
    (alone,) = run(clean, crossing(epc, DOOR1))
    assert crossed.confidence < alone.confidence


@pytest.mark.parametrize("heard", ["inside", "outside"])
def test_reader_offline_for_half_the_pass_gives_no_movement(heard: str) -> None:
    """Only one side heard the tag: no direction is guessed (documented policy)."""
    engine = make_engine()
    epc = case_epc(8)
    crossings = run(engine, crossing(epc, sides=heard))

    assert crossings == []
    assert engine.stats.one_sided == 1
    assert engine.known_location(epc) is None


def test_unknown_and_unrecognised_epcs_cross_but_move_no_stock() -> None:
    engine = make_engine()
    not_in_catalog = encode_sgtin96_from_gtin("00614141000005", 7, 1)
    garbage = "E280116060000209A1B2C3D4"
    reads = crossing(not_in_catalog) + crossing(garbage, start_us=T0 + 50_000)
    crossings = run(engine, reads)

    assert {c.epc for c in crossings} == {not_in_catalog, garbage}
    assert {c.uri for c in crossings} == {
        decode_epc(not_in_catalog).uri,
        "urn:epc:raw:96.xE280116060000209A1B2C3D4",
    }
    assert engine.movements(crossings) == []
    assert engine.stats.unknown_crossings == 2


def test_reads_from_antennas_of_no_portal_are_ignored() -> None:
    engine = make_engine()
    reads = crossing(case_epc(9))
    stranger = [r._replace(reader_id=DeviceId("reader-9")) for r in reads]
    unmapped = [r._replace(antenna=7) for r in reads]
    assert run(engine, stranger + unmapped) == []
    assert engine.stats.ignored_reads == 2 * len(reads)
    assert engine.tracked_tags == 0


def test_reader_clock_far_behind_the_gateway_does_not_split_passes() -> None:
    skew = 3_600_000_000  # the reader's clock runs an hour behind the gateway's
    engine = make_engine()
    crossings: list[TagCrossed] = []
    now = T0
    for now, batch in reports(pallet([1, 2, 3])):
        crossings += engine.feed(batch, now + skew)
    for step in range(1, 200):
        crossings += engine.advance(now + skew + step * 100_000)
    assert len(crossings) == 4
    assert [m.quantity for m in engine.movements(crossings)] == [36]


# --- memory bounds ----------------------------------------------------------------------------


def test_tag_state_is_forgotten_after_the_horizon() -> None:
    engine = make_engine(params=PortalParams(horizon_s=60.0))
    run(engine, crossing(case_epc(10)))
    assert engine.tracked_tags == 1
    assert engine.known_location(case_epc(10)) == "receiving"
    engine.advance(T0 + 70_000_000)
    assert engine.tracked_tags == 0
    assert engine.stats.forgotten_tags == 1


def test_max_tags_evicts_idle_tags_first_then_decides_open_passes() -> None:
    engine = make_engine(params=PortalParams(max_tags=3))
    run(engine, crossing(case_epc(11)) + crossing(case_epc(12), start_us=T0 + 10_000))
    assert engine.tracked_tags == 2
    # Three more tags at once: the two idle ones go, then the oldest open pass is decided.
    reads = [
        read
        for serial in (13, 14, 15)
        for read in crossing(case_epc(serial), start_us=T0 + 60_000_000 + serial * 1000)
    ]
    crossings = run(engine, reads)
    assert engine.tracked_tags <= 3
    assert engine.stats.evicted_tags >= 2
    assert {c.epc for c in crossings} <= {case_epc(s) for s in (13, 14, 15)}


# --- configuration ----------------------------------------------------------------------------


def test_portal_spec_rejects_inconsistent_doors() -> None:
    with pytest.raises(ValueError, match="both sides"):
        replace(DOOR1.spec(), inside_antennas=frozenset({2, 3}))
    with pytest.raises(ValueError, match="at least one antenna"):
        replace(DOOR1.spec(), inside_antennas=frozenset())
    with pytest.raises(ValueError, match="outside and inside are both"):
        replace(DOOR1.spec(), inside_location=LocationId("yard"))


def test_engine_rejects_an_antenna_shared_by_two_doors() -> None:
    twin = Door("door-2", "reader-1", outside=(4,), inside=(5,)).spec()
    with pytest.raises(ValueError, match="antenna 4 of reader reader-1"):
        PortalEngine(portals=[DOOR1.spec(), twin], catalog=make_catalog())
    with pytest.raises(ValueError, match="duplicate portal ids"):
        PortalEngine(portals=[DOOR1.spec(), DOOR1.spec()], catalog=make_catalog())


def test_portal_params_are_validated() -> None:
    with pytest.raises(ValueError, match="idle_close_s"):
        PortalParams(idle_close_s=0)
    with pytest.raises(ValueError, match="stray_dwell_s must be longer"):
        PortalParams(idle_close_s=30.0)
    with pytest.raises(ValueError, match="min_confidence"):
        PortalParams(min_confidence=1.5)


def test_decided_by_reports_the_trigger() -> None:
    engine = make_engine()
    crossings = run(engine, crossing(case_epc(12)))
    assert crossings[0].evidence.decided_by in {DecidedBy.IDLE, DecidedBy.QUIET_SIDE}


def test_assumed_locations_suppress_a_crossing_to_where_the_tag_already_went() -> None:
    """After a restart the app gives the engine the destinations of recent door movements
    (``assume_locations``): a replayed pass to the same place is a repeat, not a new crossing;
    to another place, or beyond ``horizon_s``, it is a crossing."""
    uri = {n: f"urn:epc:id:sgtin:0614141.012345.{n}" for n in (60, 61, 62)}
    engine = make_engine(params=PortalParams(horizon_s=600.0))
    engine.assume_locations(
        {
            uri[60]: ("receiving", T0 - 60_000_000),  # went in a minute ago: this is a repeat
            uri[61]: ("yard", T0 - 60_000_000),  # went out: coming in is new
            uri[62]: ("receiving", T0 - 700_000_000),  # beyond horizon_s: forgotten
        }
    )
    reads = crossing(case_epc(60)) + crossing(case_epc(61), seed=2) + crossing(case_epc(62), seed=3)
    crossings = run(engine, reads)

    assert sorted(c.uri for c in crossings) == [uri[61], uri[62]]
    assert engine.stats.repeats_suppressed == 1
