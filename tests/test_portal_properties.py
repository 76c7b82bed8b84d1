"""Property tests of the portal engine's stated invariants (see gateway.domain.portal).

Scenes mix crossings in both directions, cross-reads from the neighbouring door, parked strays,
the same EPC crossing repeatedly, and timestamps quantised so that ties are common.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.model import DeviceId, Epc, TagRead
from gateway.domain.params import PortalParams
from gateway.domain.portal import PortalEngine, PortalStats, TagCrossed
from tests.test_portal_engine import (
    DOOR1,
    DOOR2,
    T0,
    case_epc,
    crossing,
    make_engine,
    parked,
    reports,
)

# DOCKWATCH_PROPERTY_EXAMPLES=500 runs a deeper search than the suite's quick default.
EXAMPLES = int(os.environ.get("DOCKWATCH_PROPERTY_EXAMPLES", "40"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenes(draw: st.DrawFn) -> list[TagRead]:
    reads: list[TagRead] = []
    for _ in range(draw(st.integers(1, 5))):
        what = draw(st.sampled_from(["in", "out", "cross_read", "stray"]))
        serial = draw(st.integers(1, 6))  # few serials: the same tag often comes back
        start = T0 + draw(st.integers(0, 25_000_000))
        seed = draw(st.integers(0, 10_000))
        door, other = draw(st.sampled_from([(DOOR1, DOOR2), (DOOR2, DOOR1)]))
        epc = case_epc(serial)
        if what == "stray":
            reads += parked(epc, door, start_us=start, duration_s=30.0, seed=seed)
        else:
            direction = "out" if what == "out" else "in"
            speed = draw(st.sampled_from([0.7, 1.5, 2.5]))
            reads += crossing(
                epc, door, start_us=start, direction=direction, speed_mps=speed, seed=seed
            )
            if what == "cross_read":
                reads += crossing(
                    epc,
                    other,
                    start_us=start,
                    direction=direction,
                    speed_mps=speed,
                    peak_dbm=-58.0,
                    drop=0.6,
                    seed=seed + 1,
                )
    quantum = draw(st.sampled_from([1, 1_000, 50_000]))
    if quantum > 1:
        reads = [
            r._replace(
                first_seen_us=r.first_seen_us // quantum * quantum,
                last_seen_us=r.last_seen_us // quantum * quantum,
            )
            for r in reads
        ]
    return reads


def _engine() -> PortalEngine:
    return make_engine([DOOR1, DOOR2])


def _drive(
    engine: PortalEngine, batches: list[tuple[int, list[TagRead]]], tail_s: float = 15.0
) -> list[TagCrossed]:
    out: list[TagCrossed] = []
    now = T0
    for now, batch in batches:
        out += engine.feed(batch, now)
    for step in range(1, int(tail_s * 10) + 1):
        out += engine.advance(now + step * 100_000)
    return out


def _comparable(stats: PortalStats) -> PortalStats:
    return replace(stats, reads=0, duplicate_reads=0)


@FAST
@given(scene=scenes(), shuffle_seed=st.integers(0, 2**32 - 1))
def test_reordering_reads_inside_reports_changes_nothing(
    scene: list[TagRead], shuffle_seed: int
) -> None:
    batches = reports(scene, period_ms=300)
    rng = random.Random(shuffle_seed)
    shuffled = [(now, rng.sample(batch, len(batch))) for now, batch in batches]

    a, b = _engine(), _engine()
    crossings_a = _drive(a, batches)
    crossings_b = _drive(b, shuffled)
    assert crossings_a == crossings_b
    assert a.movements(crossings_a) == b.movements(crossings_b)
    assert a.stats == b.stats


@FAST
@given(scene=scenes(), twice=st.lists(st.booleans(), min_size=1))
def test_feeding_a_report_again_adds_nothing(scene: list[TagRead], twice: list[bool]) -> None:
    batches = reports(scene)
    once, again = _engine(), _engine()
    expected = _drive(once, batches)

    got: list[TagCrossed] = []
    now = T0
    for index, (now, batch) in enumerate(batches):
        got += again.feed(batch, now)
        if twice[index % len(twice)]:
            got += again.feed(list(reversed(batch)), now)
    for step in range(1, 151):
        got += again.advance(now + step * 100_000)

    assert got == expected
    assert _comparable(again.stats) == _comparable(once.stats)
    # A replay much later (a reconnecting adapter re-sending old reports) adds nothing either.
    assert again.feed(batches[0][1], now + 10_000_000) == []


@FAST
@given(
    scene=scenes(),
    cadence=st.sampled_from([(40, 10), (100, 30), (250, 5), (500, 80), (1000, 30)]),
)
def test_report_cadence_does_not_change_movements(
    scene: list[TagRead], cadence: tuple[int, int]
) -> None:
    period_ms, latency_ms = cadence
    reference, other = _engine(), _engine()
    expected = reference.movements(_drive(reference, reports(scene)))
    got = other.movements(_drive(other, reports(scene, period_ms=period_ms, latency_ms=latency_ms)))
    assert got == expected


@settings(max_examples=max(25, EXAMPLES // 2), deadline=None)
@given(
    max_tags=st.integers(1, 40),
    per_report=st.integers(1, 30),
    reports_n=st.integers(1, 60),
    seed=st.integers(0, 1000),
)
def test_memory_stays_bounded_on_an_endless_stream_of_new_epcs(
    max_tags: int, per_report: int, reports_n: int, seed: int
) -> None:
    engine = make_engine([DOOR1, DOOR2], PortalParams(max_tags=max_tags))
    rng = random.Random(seed)
    serial = 0
    now = T0
    for _ in range(reports_n):
        batch = []
        for _ in range(per_report):
            serial += 1
            t = now - rng.randrange(100_000)
            door = rng.choice([DOOR1, DOOR2])
            batch.append(
                TagRead(
                    reader_id=DeviceId(door.reader),
                    antenna=rng.choice([*door.outside, *door.inside]),
                    epc=Epc(case_epc(serial)),
                    rssi_dbm=-50.0 - rng.random() * 20,
                    first_seen_us=t,
                    last_seen_us=t,
                )
            )
        now += 100_000
        engine.feed(batch, now)
        assert engine.tracked_tags <= max_tags
        engine.advance(now + 50_000)
        assert engine.tracked_tags <= max_tags
    assert engine.stats.evicted_tags >= serial - max_tags
