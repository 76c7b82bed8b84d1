"""End-to-end accuracy run of a shelf scenario, shared by the accuracy test and benchmark.

simulator (real Modbus TCP server) -> ``ModbusShelfPoller`` -> ``ShelfEngine`` -> ``EdgeStore``,
then the recorded movements are compared with the simulator's ground truth.

Time: the simulator runs ``speed`` times faster than real time. The poller timestamps samples with
the simulator's scenario clock and polls every ``poll_interval_s / speed`` real seconds, so the
engine sees what it would see at 5 Hz in real time, only sooner. UTC times are
``EPOCH + scenario seconds``. The scenario clock is a :class:`PacedClock`: on a shared machine
the process can be descheduled for a second, which at 10x would be ten seconds of scenario that
nobody observed; the paced clock turns such a stall into a pause instead.

Matching: a truth pick or restock is *counted exactly* when a movement of the same shelf, kind and
quantity was observed within its window: from the event's start to 4 s after it ends (or, when a
sensor failure overlaps the event, 6 s after the failure ends, since nothing can be seen before).
Each movement matches at most one event. Truth events without such a movement are *missed*;
pick/restock movements matching no event are *phantoms* (a wrong count is both).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.backoff import BackoffPolicy
from gateway.adapters.modbus import (
    ModbusShelfPoller,
    PollerSettings,
    RegisterField,
    SampleQueue,
    ShelfPoint,
    StatusWord,
    ValueType,
    WordOrder,
)
from gateway.domain.model import (
    Alert,
    CatalogItem,
    DeviceId,
    DeviceStatus,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)
from gateway.domain.params import ShelfParams
from gateway.domain.shelf import BACKROOM, PICKED, ShelfEngine
from gateway.runtime.shelves import ShelfPipeline
from simulators.modbus import registers
from simulators.modbus.server import ShelfSimulator
from simulators.shelf_scenario import ShelfScenario, ShelfTrack, WeightType
from simulators.truth import read_ground_truth

EPOCH = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
MATCH_AFTER_END_S = 4.0
MATCH_AFTER_FAILURE_S = 6.0


class PacedClock:
    """Scenario time at ``speed`` x real time that never jumps more than ``max_step_s`` at once.

    Everything in the run (simulator physics, sample timestamps, truth) reads this one clock many
    times a second, so normal progress is never capped; only a stall of the whole process is
    (it becomes a pause of the scenario rather than a gap in the samples).
    """

    def __init__(
        self,
        speed: float,
        *,
        max_step_s: float = 0.3,
        real: Callable[[], float] = time.monotonic,
    ) -> None:
        self.speed = speed
        self.max_step_s = max_step_s
        self._real = real
        self._last_real = real()
        self._t = 0.0

    def __call__(self) -> float:
        now = self._real()
        step = (now - self._last_real) * self.speed
        self._last_real = now
        self._t += min(step, self.max_step_s)
        return self._t


def tolerance_for(track: ShelfTrack) -> float:
    """The catalog ``weight_tolerance_g`` the run configures: 5 sigma of one item, at least 10 g."""
    return max(10.0, 5.0 * track.item_sigma_g)


def point_for(track: ShelfTrack, host: str, port: int) -> ShelfPoint:
    """The gateway's view of a simulated shelf (the register map of ``registers``)."""
    encoding = track.encoding
    return ShelfPoint(
        shelf_id=DeviceId(track.shelf_id),
        host=host,
        port=port,
        unit=track.unit,
        weight=RegisterField(
            address=registers.NET,
            type=ValueType.FLOAT32 if encoding.type is WeightType.FLOAT32 else ValueType.INT32,
            word_order=WordOrder(encoding.word_order.value),
            scale=encoding.scale,
        ),
        status=StatusWord(
            address=registers.STATUS,
            stable_bit=registers.STABLE_BIT,
            overload_bit=registers.OVERLOAD_BIT,
            error_bit=registers.ADC_ERROR_BIT,
        ),
        heartbeat=RegisterField(address=registers.HEARTBEAT, type=ValueType.UINT16),
    )


@dataclass(frozen=True, slots=True)
class ShelfTally:
    shelf_id: str
    events: int
    exact: int
    missed: int
    phantom: int
    adjustments: int
    unexplained_alerts: int
    truth_final: int
    store_final: int | None
    misses: tuple[str, ...] = ()
    phantoms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    scenario: str
    speed: float
    wall_s: float
    samples: int
    shelves: tuple[ShelfTally, ...]
    statuses: tuple[DeviceStatus, ...] = field(default=())

    @property
    def events(self) -> int:
        return sum(s.events for s in self.shelves)

    @property
    def exact(self) -> int:
        return sum(s.exact for s in self.shelves)

    @property
    def missed(self) -> int:
        return sum(s.missed for s in self.shelves)

    @property
    def phantom(self) -> int:
        return sum(s.phantom for s in self.shelves)

    @property
    def exact_ratio(self) -> float:
        return 1.0 if self.events == 0 else self.exact / self.events

    def lines(self) -> list[str]:
        out = [
            f"scenario {self.scenario}: {self.events} picks/restocks, {self.exact} counted exactly "
            f"({100 * self.exact_ratio:.1f} %), {self.missed} missed, {self.phantom} phantom; "
            f"{self.samples} samples in {self.wall_s:.1f} s wall at {self.speed:g}x",
        ]
        for s in self.shelves:
            out.append(
                f"  {s.shelf_id}: events {s.events} exact {s.exact} missed {s.missed} "
                f"phantom {s.phantom} adjustments {s.adjustments} "
                f"unexplained-alerts {s.unexplained_alerts} "
                f"on-hand truth {s.truth_final} store {s.store_final}"
            )
            out.extend(f"    missed  {m}" for m in s.misses)
            out.extend(f"    phantom {p}" for p in s.phantoms)
        return out


async def run_accuracy(
    scenario: ShelfScenario,
    *,
    store_url: str,
    truth_path: Path,
    speed: float = 20.0,
    params: ShelfParams | None = None,
    timeout_s: float = 1.0,
) -> AccuracyReport:
    """Run ``scenario`` end to end and compare the store's movements with the ground truth."""
    params = params if params is not None else ShelfParams()
    sim = ShelfSimulator(scenario=scenario, clock=PacedClock(speed), speed=speed, truth=truth_path)
    store = EdgeStore.open(store_url, site="accuracy")
    try:
        _prime_store(store, scenario, params)
        await sim.start()
        try:
            report = await _run(
                sim=sim,
                scenario=scenario,
                store=store,
                params=params,
                speed=speed,
                timeout_s=timeout_s,
                truth_path=truth_path,
            )
        finally:
            await sim.stop()
    finally:
        store.close()
    return report


def _prime_store(store: EdgeStore, scenario: ShelfScenario, params: ShelfParams) -> None:
    items = {
        t.sku: CatalogItem(sku=Sku(t.sku), name=t.sku, unit_weight_g=t.unit_weight_g)
        for t in scenario.shelves
    }
    locations = [LocationRecord(t.shelf_id) for t in scenario.shelves] + [
        LocationRecord(name, kind="virtual") for name in (PICKED, BACKROOM, params.adjust_location)
    ]
    store.sync_catalog(items.values(), locations)
    opening = [
        Movement(
            movement_id=MovementId(f"opening-{t.shelf_id}"),
            kind=MovementKind.ADJUSTMENT,
            sku=Sku(t.sku),
            quantity=t.initial_units,
            from_location=LocationId(params.adjust_location),
            to_location=LocationId(t.shelf_id),
            source_type=SourceType.MANUAL,
            source_id="opening-count",
            observed_at=EPOCH,
            confidence=1.0,
        )
        for t in scenario.shelves
        if t.initial_units > 0
    ]
    store.record(opening, now=EPOCH)


async def _run(
    *,
    sim: ShelfSimulator,
    scenario: ShelfScenario,
    store: EdgeStore,
    params: ShelfParams,
    speed: float,
    timeout_s: float,
    truth_path: Path,
) -> AccuracyReport:
    engines: dict[str, ShelfEngine] = {}
    for track in scenario.shelves:
        engine = ShelfEngine(
            track.shelf_id,
            location=LocationId(track.shelf_id),
            sku=Sku(track.sku),
            unit_weight_g=track.unit_weight_g,
            tolerance_g=tolerance_for(track),
            params=params,
        )
        levels = store.stock(location=track.shelf_id, sku=track.sku)
        engine.set_on_hand(levels[0].on_hand if levels else 0)
        engines[track.shelf_id] = engine
    statuses: list[DeviceStatus] = []
    alerts: list[Alert] = []
    recorded: list[Movement] = []

    sample_at = 0.0  # scenario time of the sample being handled

    def taken(at: float) -> datetime:
        nonlocal sample_at
        sample_at = at
        return EPOCH + timedelta(seconds=at)

    async def record(movements: Sequence[Movement]) -> None:
        # The store is synchronous (SQLAlchemy): keep it off the event loop.
        await asyncio.to_thread(store.record, movements, now=taken(sample_at))
        recorded.extend(movements)

    async def raise_alert(alert: Alert) -> None:
        alerts.append(alert)

    # The gateway's own shelf pipeline, on the scenario's clock.
    pipeline = ShelfPipeline(
        engines,
        record=record,
        raise_alert=raise_alert,
        taken=taken,
        samples=SampleQueue(maxsize=10_000),
    )
    settings = PollerSettings(
        poll_interval_s=params.poll_interval_s / speed,
        timeout_s=timeout_s,
        backoff=BackoffPolicy(initial_s=0.05, max_s=0.5, reset_after_s=2.0),
    )
    poller = ModbusShelfPoller(
        [point_for(t, sim.host, sim.port) for t in scenario.shelves],
        on_sample=pipeline.samples.put,
        on_status=statuses.append,
        settings=settings,
        clock=sim.scenario_time,
        utc_now=lambda: EPOCH + timedelta(seconds=sim.scenario_time()),
    )

    started = time.monotonic()
    end = scenario.end_s
    async with asyncio.TaskGroup() as group:
        poll_task = group.create_task(poller.run(), name="poller")
        consume_task = group.create_task(pipeline.run(), name="engine")
        await sim.sleep_until(end)
        poll_task.cancel()
        consume_task.cancel()
    samples = pipeline.fed
    wall = time.monotonic() - started
    truth = read_ground_truth(truth_path)
    tallies = tuple(_tally(track, truth, recorded, alerts, store) for track in scenario.shelves)
    return AccuracyReport(
        scenario=scenario.name,
        speed=speed,
        wall_s=wall,
        samples=samples,
        shelves=tallies,
        statuses=tuple(statuses),
    )


def _tally(
    track: ShelfTrack,
    truth: Sequence[dict[str, Any]],
    recorded: Sequence[Movement],
    alerts: Sequence[Alert],
    store: EdgeStore,
) -> ShelfTally:
    shelf = track.shelf_id
    events = [e for e in truth if e.get("shelf") == shelf and e["event"] in ("pick", "restock")]
    failures = [e for e in truth if e.get("shelf") == shelf and e["event"] == "failure"]
    moves = [
        m
        for m in recorded
        if m.source_id == shelf and m.kind in (MovementKind.PICK, MovementKind.RESTOCK)
    ]
    used: set[int] = set()
    exact = 0
    misses: list[str] = []
    for event in events:
        start = float(event["t"])
        stop = start + float(event["duration"]) + MATCH_AFTER_END_S
        for failure in failures:
            f_start, f_end = float(failure["t"]), float(failure["t"]) + float(failure["duration"])
            if f_start <= stop and start <= f_end:
                stop = max(stop, f_end + MATCH_AFTER_FAILURE_S)
        match = next(
            (
                i
                for i, m in enumerate(moves)
                if i not in used
                and m.kind == event["event"]
                and m.quantity == event["units"]
                and start <= _scenario_s(m) <= stop
            ),
            None,
        )
        if match is None:
            misses.append(f"{event['event']} {event['units']} at t={start:.1f}")
        else:
            used.add(match)
            exact += 1
    phantoms = [
        f"{m.kind} {m.quantity} at t={_scenario_s(m):.1f}"
        for i, m in enumerate(moves)
        if i not in used
    ]
    levels = store.stock(location=shelf, sku=track.sku)
    final_truth = events[-1]["on_hand_after"] if events else track.initial_units
    return ShelfTally(
        shelf_id=shelf,
        events=len(events),
        exact=exact,
        missed=len(events) - exact,
        phantom=len(phantoms),
        adjustments=sum(
            1 for m in recorded if m.source_id == shelf and m.kind is MovementKind.ADJUSTMENT
        ),
        unexplained_alerts=sum(1 for a in alerts if a.subject == shelf and a.active),
        truth_final=int(final_truth),
        store_final=levels[0].on_hand if levels else None,
        misses=tuple(misses),
        phantoms=tuple(phantoms),
    )


def _scenario_s(movement: Movement) -> float:
    return (movement.observed_at - EPOCH).total_seconds()
