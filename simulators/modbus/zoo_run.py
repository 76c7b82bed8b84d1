"""Run a transmitter-zoo store end to end and score it against the physics' ground truth.

simulator (real Modbus TCP server, ``simulators.shelf_zoo``) -> ``ModbusShelfPoller`` ->
``ShelfEngine`` (every ``debounce.shelf`` key at its default, the catalog tolerance left unset,
no stock level in the store: the opening count comes from the weight) -> ``EdgeStore`` ->
``LowStockMonitor`` on the store's levels, as the gateway wires them.

Scoring (per shelf, then pooled):

* the truth of a pick or restock is its kind, its units and the moment the transmitter's output
  *settled* after it (``ShelfPhysics.settled_at``: from then on the noiseless output stays within
  max(1 division, 2 % of a unit, 0.5 g) of its final value);
* a movement is *exact* when shelf, kind and quantity are right and its ``observed_at`` is within
  3 s of that moment; each movement matches at most one event. Unmatched truth events are
  *missed*; unmatched pick/restock movements are *phantoms*; a phantom of the kind of a missed
  event within 3 s of it is also counted as a *wrong quantity*;
* ``observed_at`` error is ``observed_at - settled``; *latency* is the scenario time at which the
  movement was handed to the store minus ``settled``;
* the opening count is right when the store's first level of the shelf is its initial units;
* a low-stock crossing (a pick settling at or below the reorder point from above it) is *on time*
  when the low-stock alert is raised within 3 s after it settled; an alert raised when the truth
  is not low is *spurious*;
* put-backs, hands and bumps must produce nothing; garbage must produce one ``implausible_weight``
  alert per episode the poller read (a silent unit on the same line can hold the polls up for
  longer than a short episode lasts) and no movement.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.backoff import BackoffPolicy
from gateway.adapters.modbus import (
    ModbusShelfPoller,
    PollerSettings,
    RegisterField,
    RegisterTable,
    SampleQueue,
    ShelfPoint,
    StatusWord,
    ValueType,
    WordOrder,
    decode_value,
)
from gateway.domain.model import (
    Alert,
    AlertKind,
    CatalogItem,
    DeviceId,
    DeviceStatus,
    LocationId,
    Movement,
    MovementKind,
    MovementReason,
    Sku,
    WeightSample,
)
from gateway.domain.params import ShelfParams
from gateway.domain.shelf import BACKROOM, PICKED, ShelfEngine
from gateway.domain.stock import LowStockMonitor
from gateway.runtime.shelves import ShelfPipeline
from simulators.modbus import registers
from simulators.modbus.accuracy import EPOCH, PacedClock
from simulators.modbus.physics import ShelfPhysics
from simulators.modbus.server import ShelfSimulator
from simulators.shelf_scenario import (
    FailureMode,
    Garbage,
    ShelfEvent,
    ShelfEventKind,
    ShelfTrack,
    WeightType,
)
from simulators.shelf_zoo import ZooShelf, ZooStore

MATCH_S = 3.0
LOW_STOCK_ON_TIME_S = 3.0


def zoo_point(shelf: ZooShelf, host: str, port: int) -> ShelfPoint:
    """The installer's view of a zoo shelf: its table, encoding and (maybe) status word."""
    track = shelf.track
    table = RegisterTable(shelf.table)
    encoding = track.encoding
    return ShelfPoint(
        shelf_id=DeviceId(track.shelf_id),
        host=host,
        port=port,
        unit=track.unit,
        weight=RegisterField(
            address=registers.NET,
            table=table,
            type=ValueType.FLOAT32 if encoding.type is WeightType.FLOAT32 else ValueType.INT32,
            word_order=WordOrder(encoding.word_order.value),
            scale=encoding.scale,
        ),
        status=StatusWord(
            address=registers.STATUS,
            table=table,
            stable_bit=registers.STABLE_BIT,
            overload_bit=registers.OVERLOAD_BIT,
            error_bit=registers.ADC_ERROR_BIT,
        )
        if shelf.status_mapped
        else None,
    )


@dataclass(frozen=True, slots=True)
class ShelfScore:
    shelf_id: str
    transmitter: str
    events: int
    exact: int
    missed: int
    phantom: int
    wrong_quantity: int
    opening_ok: bool
    book_ok: bool
    crossings: int
    low_stock_on_time: int
    low_stock_spurious: int
    garbage_episodes: int
    garbage_alerts: int
    observed_errors_s: tuple[float, ...]
    latencies_s: tuple[float, ...]
    strict_errors_s: tuple[float, ...] = ()
    """``observed_at`` against when the display stopped changing (within a division)."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ZooReport:
    seed: int
    wall_s: float
    samples: int
    shelves: tuple[ShelfScore, ...]
    statuses: tuple[DeviceStatus, ...] = field(default=())

    def total(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.shelves)

    @property
    def observed_errors_s(self) -> list[float]:
        return [e for s in self.shelves for e in s.observed_errors_s]

    @property
    def latencies_s(self) -> list[float]:
        return [e for s in self.shelves for e in s.latencies_s]

    def line(self) -> str:
        events, exact = self.total("events"), self.total("exact")
        errors = [abs(e) for e in self.observed_errors_s]
        lat = self.latencies_s
        return (
            f"seed {self.seed:>3}: exact {exact}/{events} missed {self.total('missed')} "
            f"phantom {self.total('phantom')} wrong-qty {self.total('wrong_quantity')} "
            f"opening {self.total('opening_ok')}/{len(self.shelves)} "
            f"book {self.total('book_ok')}/{len(self.shelves)} "
            f"low-stock {self.total('low_stock_on_time')}/{self.total('crossings')} "
            f"(spurious {self.total('low_stock_spurious')}) "
            f"garbage alerts {self.total('garbage_alerts')}/{self.total('garbage_episodes')} "
            f"|obs err| p95 {percentile(errors, 95):.2f} s latency p95 {percentile(lat, 95):.2f} s "
            f"({self.wall_s:.1f} s wall)"
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run_zoo(
    zoo: ZooStore,
    *,
    store_url: str,
    truth_path: Path,
    speed: float = 20.0,
    params: ShelfParams | None = None,
    timeout_s: float = 0.2,
    samples_path: Path | None = None,
) -> ZooReport:
    """Run ``zoo`` through the simulator, the real adapter, the engines and the store.

    ``samples_path``: also write every sample the adapter delivered (JSON lines: shelf, at,
    grams, stable, overload, error), to replay the live path's timing into an engine offline.
    """
    params = params if params is not None else ShelfParams()
    scenario = zoo.scenario
    sim = ShelfSimulator(scenario=scenario, clock=PacedClock(speed), speed=speed, truth=truth_path)
    store = EdgeStore.open(store_url, site="zoo")
    try:
        items = [
            CatalogItem(
                sku=Sku(s.track.sku),
                name=s.track.sku,
                unit_weight_g=s.track.unit_weight_g,
                reorder_point=s.reorder_point,
            )
            for s in zoo.shelves
        ]
        locations = [LocationRecord(s.track.shelf_id) for s in zoo.shelves] + [
            LocationRecord(name, kind="virtual")
            for name in (PICKED, BACKROOM, params.adjust_location)
        ]
        store.sync_catalog(items, locations)
        await sim.start()
        try:
            return await _run(
                zoo,
                sim=sim,
                store=store,
                params=params,
                speed=speed,
                timeout_s=timeout_s,
                samples_path=samples_path,
            )
        finally:
            await sim.stop()
    finally:
        store.close()


async def _run(
    zoo: ZooStore,
    *,
    sim: ShelfSimulator,
    store: EdgeStore,
    params: ShelfParams,
    speed: float,
    timeout_s: float,
    samples_path: Path | None = None,
) -> ZooReport:
    engines = {
        s.track.shelf_id: ShelfEngine(
            s.track.shelf_id,
            location=LocationId(s.track.shelf_id),
            sku=Sku(s.track.sku),
            unit_weight_g=s.track.unit_weight_g,
            tolerance_g=None,
            params=params,
            division_g=s.division_g,
            capacity_g=s.capacity_g,
        )
        for s in zoo.shelves
    }
    monitor = LowStockMonitor(
        {Sku(s.track.sku): s.reorder_point for s in zoo.shelves},
        hysteresis=params.low_stock_hysteresis,
    )
    statuses: list[DeviceStatus] = []
    alerts: list[tuple[float, Alert]] = []
    recorded: list[tuple[float, Movement]] = []
    first_level: dict[str, int] = {}

    sample_at = 0.0  # scenario time of the sample being handled

    def taken(at: float) -> datetime:
        nonlocal sample_at
        sample_at = at
        return EPOCH + timedelta(seconds=at)

    async def record(movements: Sequence[Movement]) -> None:
        at = sample_at
        result = await asyncio.to_thread(store.record, movements, now=taken(at))
        recorded.extend((at, m) for m in movements)
        for level in result.stock:
            if level.location in engines:
                first_level.setdefault(level.location, level.on_hand)
        # What the gateway's recorder does after each commit: the books, and low stock.
        await pipeline.stock_changed(result.stock)

    async def raise_alert(alert: Alert) -> None:
        alerts.append((sample_at, alert))

    seen: list[WeightSample] = []
    read_at: dict[str, list[float]] = {s.track.shelf_id: [] for s in zoo.shelves}

    def delivered(sample: WeightSample) -> None:
        read_at[sample.shelf_id].append(sample.at)
        if samples_path is not None:
            seen.append(sample)
        pipeline.samples.put(sample)

    # The gateway's own shelf pipeline, on the scenario's clock.
    pipeline = ShelfPipeline(
        engines,
        record=record,
        raise_alert=raise_alert,
        taken=taken,
        low_stock=monitor,
        samples=SampleQueue(maxsize=10_000),
    )
    poller = ModbusShelfPoller(
        [zoo_point(s, sim.host, sim.port) for s in zoo.shelves],
        on_sample=delivered,
        on_status=statuses.append,
        settings=PollerSettings(
            poll_interval_s=params.poll_interval_s / speed,
            timeout_s=timeout_s,
            # The gateway's defaults (a silent unit is retried ever less often, so that it does
            # not hold up the other units on its connection), on the scenario's clock.
            backoff=BackoffPolicy(
                initial_s=BackoffPolicy().initial_s / speed,
                max_s=BackoffPolicy().max_s / speed,
                reset_after_s=BackoffPolicy().reset_after_s / speed,
            ),
            unit_retry_max_s=PollerSettings().unit_retry_max_s / speed,
        ),
        clock=sim.scenario_time,
        utc_now=lambda: EPOCH + timedelta(seconds=sim.scenario_time()),
    )

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        poll_task = group.create_task(poller.run(), name="poller")
        consume_task = group.create_task(pipeline.run(), name="engine")
        # The shelves live on after their last event for as long as the gateway may take to
        # count it (a restock on a shelf blind to a hand waits hand_rest_s), as real ones do.
        await sim.sleep_until(zoo.scenario.end_s + params.hand_rest_s + params.confirm_s)
        poll_task.cancel()
        consume_task.cancel()
    samples = pipeline.fed
    wall = time.monotonic() - started
    if samples_path is not None:
        with samples_path.open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(dataclasses.asdict(s)) + "\n" for s in seen)
    scores = tuple(
        _score(
            shelf,
            physics=sim.physics(shelf.track.unit),
            recorded=recorded,
            alerts=alerts,
            store=store,
            first_level=first_level,
            read_at=read_at[shelf.track.shelf_id],
        )
        for shelf in zoo.shelves
    )
    return ZooReport(
        seed=zoo.seed, wall_s=wall, samples=samples, shelves=scores, statuses=tuple(statuses)
    )


def _score(
    shelf: ZooShelf,
    *,
    physics: ShelfPhysics,
    recorded: Sequence[tuple[float, Movement]],
    alerts: Sequence[tuple[float, Alert]],
    store: EdgeStore,
    first_level: dict[str, int],
    read_at: Sequence[float],
) -> ShelfScore:
    track = shelf.track
    sid = track.shelf_id
    events = list(track.events)
    physical = [e for e in events if e.physical]
    truth: list[tuple[str, int, float]] = []  # kind, units, settled
    strict: dict[int, float] = {}  # index in truth -> settled, by the display's own division
    crossings: list[float] = []
    units = track.initial_units
    low = units <= shelf.reorder_point
    low_periods: list[tuple[float, float]] = []  # when the truth is low (with hysteresis)
    low_since = 0.0 if low else None
    for event in events:
        if event.kind not in (ShelfEventKind.PICK, ShelfEventKind.RESTOCK):
            continue
        following = [e.t for e in physical if e.t > event.t]
        until = min(following) if following else track_end(events)
        settled = physics.settled_at(event, until)
        strict[len(truth)] = physics.settled_at(event, until, strict=True)
        truth.append((str(event.kind), event.units, settled))
        units += event.units if event.kind is ShelfEventKind.RESTOCK else -event.units
        if not low and units <= shelf.reorder_point:
            low, low_since = True, settled
            crossings.append(settled)
        elif low and units > shelf.reorder_point + 2:
            low = False
            assert low_since is not None
            low_periods.append((low_since, settled))
            low_since = None
    if low and low_since is not None:
        low_periods.append((low_since, float("inf")))
    moves = [
        (at, m)
        for at, m in recorded
        if m.source_id == sid and m.kind in (MovementKind.PICK, MovementKind.RESTOCK)
    ]
    used: set[int] = set()
    exact = 0
    errors: list[float] = []
    latencies: list[float] = []
    missed: list[tuple[str, int, float]] = []
    strict_errors: list[float] = []
    for index, (kind, n, settled) in enumerate(truth):
        match = next(
            (
                i
                for i, (_, m) in enumerate(moves)
                if i not in used
                and m.kind == kind
                and m.quantity == n
                and abs(_scenario_s(m) - settled) <= MATCH_S
            ),
            None,
        )
        if match is None:
            missed.append((kind, n, settled))
            continue
        used.add(match)
        exact += 1
        at, movement = moves[match]
        errors.append(_scenario_s(movement) - settled)
        strict_errors.append(_scenario_s(movement) - strict[index])
        latencies.append(at - settled)
    phantoms = [(at, m) for i, (at, m) in enumerate(moves) if i not in used]
    wrong = sum(
        1
        for kind, _, settled in missed
        if any(m.kind == kind and abs(_scenario_s(m) - settled) <= MATCH_S for _, m in phantoms)
    )
    notes = [f"missed {k} {n} settled t={s:.1f}" for k, n, s in missed] + [
        f"phantom {m.kind} {m.quantity} observed t={_scenario_s(m):.1f}"
        + (f" ({m.reason})" if m.reason else "")
        for _, m in phantoms
    ]
    low_alerts = [
        at
        for at, a in alerts
        if a.kind is AlertKind.LOW_STOCK and a.active and a.subject.startswith(f"{sid}/")
    ]
    on_time = sum(
        1 for c in crossings if any(c - 0.5 <= at <= c + LOW_STOCK_ON_TIME_S for at in low_alerts)
    )
    spurious = sum(
        1 for at in low_alerts if not any(lo - 0.5 <= at <= hi + 3.0 for lo, hi in low_periods)
    )
    # An episode counts when the poller read the shelf during it: a unit that fell silent on the
    # same line can hold the polls up for longer than a short episode lasts, and garbage never
    # read is garbage the gateway cannot report.
    garbage = [
        e
        for e in events
        if e.kind is ShelfEventKind.FAILURE
        and e.mode is FailureMode.GARBAGE
        and any(e.t <= at < e.end for at in read_at)
    ]
    garbage_alerts = sum(
        1
        for _, a in alerts
        if a.kind is AlertKind.IMPLAUSIBLE_WEIGHT and a.active and a.subject == sid
    )
    openings = [
        m for _, m in recorded if m.source_id == sid and m.reason is MovementReason.OPENING_COUNT
    ]
    opening_ok = len(openings) == 1 and first_level.get(sid) == track.initial_units
    levels = store.stock(location=sid, sku=track.sku)
    book_ok = bool(levels) and levels[0].on_hand == units
    if not opening_ok:
        notes.append(f"opening {[m.quantity for m in openings]} first level {first_level.get(sid)}")
    if not book_ok:
        notes.append(f"book {levels[0].on_hand if levels else None} truth {units}")
    tx = track.transmitter
    described = (
        f"{track.unit_weight_g:g} g item, d={tx.division_g:g} g, noise {track.noise_g:g} g, "
        f"tau {tx.filter_tau_s:g} s, {tx.update_hz:g} Hz, {track.encoding.type}"
        f"/{track.encoding.word_order} x{track.encoding.scale:g}, {shelf.table}, "
        f"status {'yes' if shelf.status_mapped else 'no'}"
    )
    return ShelfScore(
        shelf_id=sid,
        transmitter=described,
        events=len(truth),
        exact=exact,
        missed=len(missed),
        phantom=len(phantoms),
        wrong_quantity=wrong,
        opening_ok=opening_ok,
        book_ok=book_ok,
        crossings=len(crossings),
        low_stock_on_time=on_time,
        low_stock_spurious=spurious,
        garbage_episodes=len(garbage),
        garbage_alerts=garbage_alerts,
        observed_errors_s=tuple(errors),
        latencies_s=tuple(latencies),
        strict_errors_s=tuple(strict_errors),
        notes=tuple(notes),
    )


def track_end(events: Sequence[ShelfEvent]) -> float:
    """The end of the scenario as seen from one shelf (its last event plus 8 s)."""
    return max((e.end for e in events), default=0.0) + 8.0


def _scenario_s(movement: Movement) -> float:
    return (movement.observed_at - EPOCH).total_seconds()


def replay(
    shelf: ZooShelf,
    *,
    seed: int,
    until: float,
    params: ShelfParams | None = None,
    jitter_s: float = 0.01,
    stall_p: float = 0.0,
    stall_s: tuple[float, float] = (0.2, 0.8),
    phase: int = 0,
) -> list[tuple[float, Movement | Alert]]:
    """Feed one zoo shelf's physics straight into its engine at 5 Hz (no Modbus, no clock).

    The same transmitter, the same gateway-side settings as ``run_zoo``; polling times jitter by
    ``jitter_s`` (seeded) as a real poller's do, and a share ``stall_p`` of polls comes late by
    a time drawn from ``stall_s`` (a busy host, a slow link, a retried request). ``phase``
    draws another poll clock (its start, jitter and stalls) for the same physics: where a
    sample falls decides what a poller sees of a short plateau or a hand's tremor. Garbage in the
    weight registers arrives as the adapter would decode it for the shelf's encoding; a silent
    transmitter gives no samples.
    For property tests and quick what-ifs; the benchmark runs the real path.
    """
    params = params if params is not None else ShelfParams()
    track = shelf.track
    physics = ShelfPhysics(track, seed)
    engine = ShelfEngine(
        track.shelf_id,
        location=LocationId(track.shelf_id),
        sku=Sku(track.sku),
        unit_weight_g=track.unit_weight_g,
        params=params,
        division_g=shelf.division_g,
        capacity_g=shelf.capacity_g,
    )
    rng = random.Random(f"{seed}:{track.shelf_id}:poll" + (f":{phase}" if phase else ""))
    out: list[tuple[float, Movement | Alert]] = []
    t = rng.uniform(0.0, params.poll_interval_s)
    while t < until:
        failure = physics.failure_at(t)
        if failure is None or failure.mode is not FailureMode.SILENT:
            reading = physics.reading(t)
            if reading.garbage is not None:
                grams = _garbage_grams(reading.garbage, track)
            else:
                grams = reading.gross_g - track.tare_g
            sample = WeightSample(
                DeviceId(track.shelf_id),
                t,
                grams,
                stable=reading.stable if shelf.status_mapped else None,
            )
            out.extend((t, event) for event in engine.feed(sample, EPOCH + timedelta(seconds=t)))
        t += params.poll_interval_s + rng.gauss(0.0, jitter_s)
        if stall_p and rng.random() < stall_p:
            t += rng.uniform(*stall_s)
    return out


def _garbage_grams(garbage: Garbage, track: ShelfTrack) -> float:
    """What the adapter decodes from ``registers.garbage_words`` for this track's encoding."""
    words = registers.garbage_words(garbage, track.encoding, max(track.capacity_g, 1.0) / 1000.0)
    value_type = ValueType.FLOAT32 if track.encoding.type is WeightType.FLOAT32 else ValueType.INT32
    return decode_value(words, value_type, WordOrder(track.encoding.word_order.value)) * (
        track.encoding.scale
    )
