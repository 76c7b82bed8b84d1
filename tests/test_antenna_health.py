"""The antenna-health engine (gateway.domain.antenna): unit cases and property tests of its rules.

Invariants checked on random traffic:
* an antenna that reads is never down after the read (up is immediate);
* down is raised only after ``silence_s`` without reads and with at least ``min_peer_tags``
  arrivals read by its peers (or the reader's report), at most once per outage;
* a down antenna whose whole side keeps reading is found within ``silence_s`` plus one check;
* events alternate down/up per antenna.
"""

from __future__ import annotations

import os
from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.antenna import AntennaDown, AntennaHealth, AntennaUp
from gateway.domain.model import DeviceId, Epc, LocationId, TagRead
from gateway.domain.params import AntennaParams
from gateway.domain.portal import PortalSpec

READER = DeviceId("door-1-reader")
DOOR = PortalSpec(
    portal_id="door-1",
    reader_id=READER,
    outside_antennas=frozenset({1, 2}),
    inside_antennas=frozenset({3, 4}),
    outside_location=LocationId("yard"),
    inside_location=LocationId("receiving"),
)
# One antenna a side: the peers are the other side.
NARROW = PortalSpec(
    portal_id="door-2",
    reader_id=DeviceId("door-2-reader"),
    outside_antennas=frozenset({1}),
    inside_antennas=frozenset({2}),
    outside_location=LocationId("yard"),
    inside_location=LocationId("receiving"),
)
PARAMS = AntennaParams(silence_s=30.0, min_peer_tags=3, forget_s=60.0, rate_window_s=10.0)
_serials = count(1)


def read(antenna: int, epc: str, reader: DeviceId = READER) -> TagRead:
    return TagRead(
        reader_id=reader,
        antenna=antenna,
        epc=Epc(epc),
        rssi_dbm=-60.0,
        first_seen_us=1,
        last_seen_us=1,
        seen_count=1,
    )


def new_epc() -> str:
    return f"30{next(_serials):022X}"


def run(
    engine: AntennaHealth, until: float, *, step: float, start: float, **feed: list[int]
) -> list:  # type: ignore[type-arg]
    """Tick the engine from ``start`` to ``until``; ``antennas`` read one new tag per step."""
    events = []
    now = start
    while now <= until:
        epc = new_epc()
        events += engine.feed([read(a, epc) for a in feed["antennas"]], now)
        events += engine.advance(now)
        now += step
    return events


def test_a_silent_antenna_whose_side_reads_arrivals_is_down_within_the_silence_limit() -> None:
    engine = AntennaHealth([DOOR], PARAMS, now=0.0)
    assert run(engine, 20.0, step=1.0, start=0.0, antennas=[1, 2, 3, 4]) == []
    # Antenna 2's cable is cut at t=21: its side (antenna 1) keeps reading new tags.
    events = run(engine, 60.0, step=1.0, start=21.0, antennas=[1, 3, 4])
    (down,) = events
    assert isinstance(down, AntennaDown)
    assert (down.reader_id, down.antenna, down.portal_id) == (READER, 2, "door-1")
    assert 30.0 <= down.silent_s <= 31.0  # within silence_s (+ one tick)
    assert down.peer_tags >= 3
    assert "antenna 2 has read nothing for" in down.detail
    assert set(engine.down()) == {(READER, 2)}
    # It reads again: up at once.
    (up,) = engine.feed([read(2, new_epc())], 61.0)
    assert isinstance(up, AntennaUp)
    assert up.antenna == 2
    assert engine.down() == {}


def test_no_traffic_is_no_evidence() -> None:
    engine = AntennaHealth([DOOR], PARAMS, now=0.0)
    assert run(engine, 600.0, step=1.0, start=0.0, antennas=[]) == []


def test_tags_parked_by_one_antenna_are_no_evidence_against_its_peer() -> None:
    engine = AntennaHealth([DOOR], PARAMS, now=0.0)
    parked = [new_epc() for _ in range(10)]
    events: list[AntennaDown | AntennaUp] = []
    for t in range(600):
        events += engine.feed([read(1, epc) for epc in parked], float(t))
        events += engine.advance(float(t))
    # Antenna 1 reads ten parked tags all along: they arrived before antenna 2's (start)
    # "last read", so they say nothing about antenna 2; antennas 3 and 4 have no traffic.
    assert events == []


def test_the_readers_antenna_event_is_down_at_once_and_connected_is_up() -> None:
    engine = AntennaHealth([DOOR], PARAMS, now=0.0)
    (down,) = engine.reported(READER, 3, connected=False, now=5.0)
    assert isinstance(down, AntennaDown)
    assert down.reported
    assert down.detail == "the reader reports antenna 3 disconnected"
    assert engine.reported(READER, 3, connected=False, now=6.0) == []
    assert engine.advance(100.0) == []  # already down: no second event
    (up,) = engine.reported(READER, 3, connected=True, now=7.0)
    assert isinstance(up, AntennaUp)
    assert engine.reported(DeviceId("other"), 1, connected=False, now=8.0) == []


def test_single_antenna_sides_use_the_other_side_as_peers() -> None:
    engine = AntennaHealth([NARROW], PARAMS, now=0.0)
    events: list[AntennaDown | AntennaUp] = []
    for t in range(40):
        events += engine.feed([read(2, new_epc(), NARROW.reader_id)], float(t))
        events += engine.advance(float(t))
    (down,) = events
    assert isinstance(down, AntennaDown)
    assert down.antenna == 1


def test_read_rates_per_antenna_over_the_last_window() -> None:
    engine = AntennaHealth([DOOR], PARAMS, now=0.0)
    for t in range(10):
        engine.feed([read(1, new_epc()), read(1, new_epc()), read(3, new_epc())], t + 0.5)
    engine.advance(10.0)
    rates = engine.rates()
    assert rates[READER, 1] == 2.0
    assert rates[READER, 3] == 1.0
    assert rates[READER, 2] == 0.0
    assert engine.seconds_since_read(12.0)[READER, 1] == 2.5


# -- properties ---------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("DOCKWATCH_PROPERTY_EXAMPLES", "40"))


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[float, list[int], bool]]:
    """Ticks of (time, antennas reading a new tag, whether the tag is new or parked)."""
    ticks: list[tuple[float, list[int], bool]] = []
    now = 0.0
    for _ in range(draw(st.integers(1, 200))):
        now += draw(st.sampled_from([0.25, 1.0, 5.0, 20.0]))
        antennas = draw(st.lists(st.integers(1, 4), max_size=4, unique=True))
        ticks.append((now, antennas, draw(st.booleans())))
    return ticks


@settings(max_examples=EXAMPLES, deadline=None)
@given(traffic())
def test_down_needs_silence_and_evidence_and_up_follows_a_read(
    ticks: list[tuple[float, list[int], bool]],
) -> None:
    engine = AntennaHealth([DOOR], PARAMS, now=0.0)
    last_read = dict.fromkeys((1, 2, 3, 4), 0.0)
    state = dict.fromkeys((1, 2, 3, 4), "up")
    parked = new_epc()
    for now, antennas, fresh in ticks:
        epc = new_epc() if fresh else parked
        for event in engine.feed([read(a, epc) for a in antennas], now):
            assert isinstance(event, AntennaUp)
            assert state[event.antenna] == "down"
            assert event.antenna in antennas
            state[event.antenna] = "up"
        for a in antennas:
            last_read[a] = now
            assert (READER, a) not in engine.down()
        for event in engine.advance(now):
            assert isinstance(event, AntennaDown)
            assert state[event.antenna] == "up"
            assert now - last_read[event.antenna] >= PARAMS.silence_s
            assert event.peer_tags >= PARAMS.min_peer_tags
            assert event.antenna not in antennas
            state[event.antenna] = "down"


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    cut=st.sampled_from([1, 2, 3, 4]),
    step=st.sampled_from([0.25, 0.5, 1.0]),
    cut_at=st.floats(0.0, 100.0),
)
def test_a_cut_antenna_whose_side_reads_is_found_within_the_limit(
    cut: int, step: float, cut_at: float
) -> None:
    engine = AntennaHealth([DOOR], PARAMS, now=0.0)
    side = [1, 2] if cut in (1, 2) else [3, 4]
    found = None
    now = 0.0
    while now < cut_at + 120.0:
        antennas = [1, 2, 3, 4] if now < cut_at else [a for a in (1, 2, 3, 4) if a != cut]
        engine.feed([read(a, new_epc()) for a in antennas], now)
        for event in engine.advance(now):
            assert isinstance(event, AntennaDown)
            assert event.antenna == cut
            assert set(side) - {cut} <= set(antennas)
            found = now
        if found is not None:
            break
        now += step
    assert found is not None
    # Last read at the tick before the cut; found at most one check (1 s) plus a tick later.
    assert found - cut_at <= PARAMS.silence_s + 1.0 + 2 * step
