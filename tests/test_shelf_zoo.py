"""The shelf engine over random zoo transmitters: properties (hypothesis, the physics fed straight
into the engine) and a few random stores end to end through the real Modbus path.

Every example draws a transmitter the engine has never seen: division, noise, internal filter,
update rate, encoding, item weight and spread, status word mapped or not
(``simulators.shelf_zoo``). Nothing is tuned per example; every ``debounce.shelf`` key is at its
default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.domain.model import Alert, AlertKind, Movement, MovementKind, MovementReason
from simulators.modbus.accuracy import EPOCH
from simulators.modbus.physics import ShelfPhysics
from simulators.modbus.zoo_run import MATCH_S, replay, run_zoo, track_end
from simulators.shelf_scenario import (
    GESTURE_S,
    FailureMode,
    Garbage,
    ShelfEvent,
    ShelfEventKind,
    ShelfTrack,
)
from simulators.shelf_zoo import ZooShelf, zoo_shelf, zoo_store

SETTLE_S = 2.5  # the slowest filter's ramp and the platform's ringing, with margin
HAND_VISIBLE_NOISE_G = 2.5
"""Below this noise a resting hand's tremor (10 g and more) shows in one second of 5 Hz samples;
above it, only the transmitter's stable bit, or time, tells a still hand from goods
(docs/shelves.md)."""
HAND_MAX_G = 2500.0
"""The most a resting hand presses (gateway.domain.shelf._HAND_MAX_G): heavier is goods."""

seeds = st.integers(min_value=0, max_value=10**6)
slow = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def movements(out: Sequence[tuple[float, Movement | Alert]]) -> list[tuple[float, Movement]]:
    return [(t, m) for t, m in out if isinstance(m, Movement)]


def counted(out: Sequence[tuple[float, Movement | Alert]]) -> list[Movement]:
    """Movements other than the opening count."""
    return [m for _, m in movements(out) if m.reason is not MovementReason.OPENING_COUNT]


def hand_grams(track: ShelfTrack, value: float) -> float:
    """A resting hand weighing about a whole number (1-3) of the shelf's units."""
    units_like, offset = divmod(value, 1.0)
    return max(150.0, (units_like + 1) * track.unit_weight_g * (0.98 + 0.04 * offset))


def timeline(
    track: ShelfTrack, specs: Sequence[tuple[str, float]], *, start: float = 5.0
) -> list[ShelfEvent]:
    """Events one after the other, each followed by time for the shelf to settle."""
    events: list[ShelfEvent] = []
    t = start
    units = track.initial_units
    for kind, value in specs:
        if kind == "bump":
            grams = min(2000.0, value * track.unit_weight_g)
            events.append(ShelfEvent(t=t, kind=ShelfEventKind.BUMP, duration=0.3, grams=grams))
            t += 0.3
        elif kind == "hand":
            # The hard case: a hand (or a parcel put down) weighing a whole number of units.
            grams = hand_grams(track, value)
            events.append(ShelfEvent(t=t, kind=ShelfEventKind.HAND, duration=6.0, grams=grams))
            t += 6.0
        elif kind == "putback":
            n = max(1, min(units, int(value)))
            duration = 2 * GESTURE_S + 0.2 + (value % 1.0)  # back within 2 s
            events.append(ShelfEvent(t=t, kind=ShelfEventKind.PUTBACK, duration=duration, units=n))
            t += duration
        elif kind in ("pick", "restock"):
            n = max(1, round(value))
            # A pick takes what is there; a restock fills up to what the zoo's shelves hold.
            n = min(n, units) if kind == "pick" else min(n, track.initial_units + 60 - units)
            if n == 0:
                continue
            units += n if kind == "restock" else -n
            event_kind = ShelfEventKind.PICK if kind == "pick" else ShelfEventKind.RESTOCK
            events.append(ShelfEvent(t=t, kind=event_kind, duration=0.8, units=n))
            t += 0.8
        else:
            garbage = Garbage(kind)
            events.append(
                ShelfEvent(
                    t=t,
                    kind=ShelfEventKind.FAILURE,
                    duration=value,
                    mode=FailureMode.GARBAGE,
                    garbage=garbage,
                )
            )
            t += value
        t += SETTLE_S + 1.5
    return events


def end_of(shelf: ZooShelf) -> float:
    return max((e.end for e in shelf.track.events), default=0.0) + 6.0


@slow
@given(
    seed=seeds,
    specs=st.lists(
        st.one_of(
            st.tuples(st.just("bump"), st.floats(0.3, 1.5)),
            st.tuples(st.just("hand"), st.floats(0.0, 2.999)),
            st.tuples(st.just("putback"), st.floats(1.0, 3.999)),
        ),
        min_size=1,
        max_size=4,
    ),
    mapped=st.booleans(),
    late=st.sampled_from([0.0, 0.05]),
)
def test_property_bumps_hands_and_putbacks_never_make_a_movement(
    seed: int, specs: list[tuple[str, float]], mapped: bool, late: float
) -> None:
    probe = zoo_shelf(seed, lambda _t: [])
    # The documented limit: a still "hand" heavier than a hand presses (a parcel put down for
    # six seconds) on a transmitter too noisy to show tremor, without its stable bit. (A hand
    # of up to 2.5 kg there waits hand_rest_s, 12 s, before it counts; it rests 6 s here.)
    heavy = any(
        kind == "hand" and hand_grams(probe.track, value) > HAND_MAX_G for kind, value in specs
    )
    assume(mapped or not heavy or probe.track.noise_g <= HAND_VISIBLE_NOISE_G)
    shelf = zoo_shelf(seed, lambda track: timeline(track, specs), status_mapped=mapped)
    # ``late``: a share of polls comes 0.2-0.8 s late (a busy host), which leaves two samples
    # of some plateaus: those glimpses never make a movement of their own.
    out = replay(shelf, seed=seed, until=end_of(shelf), stall_p=late)
    assert counted(out) == [], (shelf.track.transmitter, specs, late)


@slow
@given(
    seed=seeds,
    specs=st.lists(
        st.one_of(
            st.tuples(st.just("pick"), st.integers(1, 5).map(float)),
            st.tuples(st.just("restock"), st.integers(5, 30).map(float)),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_property_after_every_settled_event_the_book_equals_the_weight_count(
    seed: int, specs: list[tuple[str, float]]
) -> None:
    shelf = zoo_shelf(seed, lambda track: timeline(track, specs))
    out = replay(shelf, seed=seed, until=end_of(shelf))
    physics = ShelfPhysics(shelf.track, seed)
    moved = movements(out)
    for event in shelf.track.events:
        check_at = event.end + SETTLE_S + 1.0  # settled and confirmed, before the next one
        book = 0
        for t, m in moved:
            if t > check_at:
                break
            sign = 1 if m.to_location == shelf.track.shelf_id else -1
            book += sign * m.quantity
        assert book == physics.units_at(check_at), (event, shelf.track.transmitter)
    assert [(m.kind, m.quantity) for m in counted(out)] == [
        (MovementKind(e.kind.value), e.units) for e in shelf.track.events
    ]


@slow
@given(
    seed=seeds,
    garbage=st.lists(st.sampled_from(Garbage), min_size=1, max_size=4),
    length=st.floats(0.4, 3.0),
)
def test_property_garbage_never_makes_a_movement_and_is_one_alert_an_episode(
    seed: int, garbage: list[Garbage], length: float
) -> None:
    specs: list[tuple[str, float]] = []
    for kind in garbage:
        specs += [(kind.value, length), ("pick", 1.0)]
    shelf = zoo_shelf(seed, lambda track: timeline(track, specs))
    out = replay(shelf, seed=seed, until=end_of(shelf))
    assert [(m.kind, m.quantity) for m in counted(out)] == [(MovementKind.PICK, 1)] * len(garbage)
    raised = [a for _, a in out if isinstance(a, Alert) and a.kind is AlertKind.IMPLAUSIBLE_WEIGHT]
    assert [a.active for a in raised] == [True, False] * len(garbage)


@pytest.mark.integration
@pytest.mark.slow
def test_random_zoo_stores_count_right_through_the_real_modbus_path(tmp_path: Path) -> None:
    """Three random stores (18 transmitters) through simulator -> Modbus TCP -> adapter ->
    engine -> store, as benchmarks/shelf_accuracy.py does over 50."""
    reports = []
    for seed in (101, 102, 103):
        coro = run_zoo(
            zoo_store(seed, duration_s=90.0),
            store_url=f"sqlite:///{tmp_path / f'zoo-{seed}.db'}",
            truth_path=tmp_path / f"truth-{seed}.jsonl",
            speed=5.0,
            timeout_s=0.2,
        )
        reports.append(uvloop.run(coro))
        print(reports[-1].line())
    events = sum(r.total("events") for r in reports)
    exact = sum(r.total("exact") for r in reports)
    shelves = sum(len(r.shelves) for r in reports)
    assert events >= 150
    assert exact >= 0.97 * events, [r.line() for r in reports]
    assert sum(r.total("opening_ok") for r in reports) == shelves
    assert sum(r.total("garbage_alerts") for r in reports) == sum(
        r.total("garbage_episodes") for r in reports
    )
    assert sum(r.total("book_ok") for r in reports) >= shelves - 1
    crossings = sum(r.total("crossings") for r in reports)
    assert sum(r.total("low_stock_on_time") for r in reports) >= crossings - 1


def _truth(shelf: ZooShelf, seed: int) -> list[tuple[str, int, float]]:
    """The shelf's picks and restocks: kind, units, when the transmitter's output settled."""
    physics = ShelfPhysics(shelf.track, seed)
    events = list(shelf.track.events)
    physical = [e.t for e in events if e.physical]
    truth = []
    for event in events:
        if event.kind in (ShelfEventKind.PICK, ShelfEventKind.RESTOCK):
            later = [t for t in physical if t > event.t]
            until = min(later) if later else track_end(events)
            truth.append((str(event.kind), event.units, physics.settled_at(event, until)))
    return truth


@pytest.mark.parametrize(
    ("seed", "shelf_id", "phase", "late"),
    [
        # Opened late: a quantised output seldom flickering, or at most a division of noise,
        # broke every candidate until its division was learned, and a pick came first.
        (88, "zoo-s3", 0, 0.0),
        (145, "zoo-s1", 0, 0.0),
        # A dozen differences read 8 g of noise as 5.5 g: the plateau after a pick broke on
        # every third sample, the transmitter fell silent, and the pick came 8 s late.
        (77, "zoo-s5", 0, 0.0),
        # Two items 5 % heavier than the catalog's, from an anchor in a filter's tail.
        (58, "zoo-s4", 0, 0.0),
        # A plateau split in two (a tail's three samples, or a hand's first three) anchored on
        # the short piece: the next pick was off the fit and a double pick merged.
        (238, "zoo-s1", 0, 0.0),
        (149, "zoo-s5", 0, 0.0),
        # Other poll clocks over the same physics (``phase``), some with late polls (``late``):
        # a resting hand of about one 510 g unit whose tremor broke its plateau and came back
        # to it, each piece still for a second (a restock and a pick of one);
        (47, "zoo-s3", 5, 0.0),
        # the short plateau between two picks, pulled off its level by the filter's tail at
        # its start and the next gesture's hand at its end (two picks merged);
        (47, "zoo-s6", 6, 0.0),
        (22, "zoo-s2", 2, 0.0),
        # four samples of it, one 3 sigma off: too few to judge a hand by, and dropped;
        (47, "zoo-s5", 38, 0.0),
        # a piece of seven samples rejoined after one sample of the next gesture's hand,
        # taken for a plateau of the three after it, the hand's among them;
        (119, "zoo-s5", 1, 0.0),
        # a late poll left two samples of it, the first still in the filter's tail;
        (11, "zoo-s3", 1, 0.03),
        # a late poll left two samples of the next gesture's hand: counted as a restock;
        (5, "zoo-s1", 1, 0.03),
        # late polls (a dead unit holding up the line for a second) left one sample of it,
        # at the bottom of the valley between the first pick's tail and the next hand's press
        # (and, in the third, a peak beside a late poll, the hand's press, which is no plateau).
        (52, "zoo-s4", 37, 0.03),
        (52, "zoo-s4", 8, 0.03),
        (52, "zoo-s4", 28, 0.03),
        # two samples of it beside a late poll, the later already the next hand's press: the
        # glimpse lay 4 g above the plateau, off the fit (a weight that came down lies at the
        # lower sample);
        (58, "zoo-s4", 32, 0.12),
    ],
)
def test_held_out_zoo_shelves_once_miscounted_count_every_event(
    seed: int, shelf_id: str, phase: int, late: float
) -> None:
    """Transmitters from random stores the engine was not tuned on (held-out seeds 51-300, and
    other poll clocks for seeds 1-50) on which an earlier engine missed, merged or dated events
    wrongly: now every pick and restock is one movement of the right kind and quantity within
    3 s of when the output settled, and the opening count is the shelf's true stock."""
    shelf = next(s for s in zoo_store(seed).shelves if s.track.shelf_id == shelf_id)
    out = replay(
        shelf, seed=seed, until=track_end(shelf.track.events) + 14.0, phase=phase, stall_p=late
    )
    moved = movements(out)
    openings = [m for _, m in moved if m.reason is MovementReason.OPENING_COUNT]
    assert [m.quantity for m in openings] == [shelf.track.initial_units]
    counted_ = [
        (str(m.kind), m.quantity, (m.observed_at - EPOCH).total_seconds()) for m in counted(out)
    ]
    unmatched = list(counted_)
    for kind, units, settled in _truth(shelf, seed):
        match = next(
            (
                c
                for c in unmatched
                if c[0] == kind and c[1] == units and abs(c[2] - settled) <= MATCH_S
            ),
            None,
        )
        assert match is not None, (kind, units, settled, counted_)
        unmatched.remove(match)
    assert unmatched == []
