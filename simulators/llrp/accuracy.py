"""End-to-end accuracy run of a portal scenario, shared by the accuracy test and benchmark.

One :class:`~simulators.llrp.server.LlrpReaderSimulator` per door (real TCP) plays the scenario;
real sllurp, through :class:`~gateway.adapters.llrp.LlrpReaderAdapter`, reads it; a
:class:`~gateway.domain.portal.PortalEngine` turns the reads into crossings and movements; a real
:class:`~edge_store.EdgeStore` records them. The stored movements, and the engine's crossings, are
then compared with the ground truth the scenario writes.

Time. The run goes ``speed`` times faster than real time on one scenario clock shared by the
simulators (physics, LLRP timestamps, keepalives) and the engine's ``now_us``:
``EPOCH + paced scenario seconds``, a :class:`~simulators.modbus.accuracy.PacedClock` so that a
stall of this process on a shared machine becomes a pause of the scenario, not a gap nobody
heard. The reader's report period is scaled too (``report_every_s`` of scenario time, 0.2 s by
default: the gateway's ``report_every_ms`` 200), so the engine sees the reports it would see in
real time, only sooner. The scenario starts once every reader is inventorying, so no read is
lost to connection set-up; reads stop at ``duration_s``; after that the engine's clock runs on
until every pass has closed and every load has settled.

Scoring. *Movements* (what stock sees): each case EPC of each stored movement is a predicted
``(EPC, from, to)``; the truth is every crossing of a case EPC (an SGTIN the catalog knows; the
run's catalog has every GTIN of the scenario). *Crossings* (every tag, pallet labels included):
the engine's ``TagCrossed`` events against every truth crossing. Precision = correct predicted /
predicted, recall = correct predicted / truth (multisets: a tag crossing twice counts twice);
direction accuracy = correct / predicted whose EPC crossed that door in the truth. A wrong
prediction is classified as a *stray* (the EPC never crossed: it is parked), a *cross-read*
(it crossed the other door), or a *wrong direction*.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.llrp import LlrpReaderAdapter, ReadBatch
from gateway.domain.catalog import Catalog
from gateway.domain.epc import decode_epc
from gateway.domain.lights import PortalLights, StackLights
from gateway.domain.model import (
    Alert,
    CatalogItem,
    DeviceId,
    DeviceState,
    DeviceStatus,
    LocationId,
    Movement,
    Sku,
)
from gateway.domain.params import PortalParams
from gateway.domain.portal import PassEvent, PortalEngine, PortalSpec, PortalStats, TagCrossed
from gateway.domain.receiving import ExpectedReceipt, ReceivingTracker
from gateway.domain.views import MovementView
from gateway.runtime.doors import TICK_S, DoorPipeline, DoorPorts, PhotoEye
from simulators.llrp.server import GpioChange, LlrpReaderSimulator
from simulators.llrp.source import SimRead
from simulators.modbus.accuracy import PacedClock
from simulators.scenario import Scenario, ScenarioReadSource
from simulators.truth import read_ground_truth

EPOCH = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
EPOCH_S = EPOCH.timestamp()
SITE = "accuracy"
CONNECT_TIMEOUT_S = 30.0
"""Wall seconds every reader has to reach inventory before the run gives up."""
LEAD_S = 0.5
"""Scenario seconds between the readers inventorying and the scenario's time 0."""
TAIL_S = 60.0
"""Scenario seconds the engine's clock runs on after the last read (passes close, loads settle)."""

GPI_OUTSIDE = 1
GPI_INSIDE = 2
"""The GPI ports the photo eyes are wired to (with ``photo_eyes``)."""

Triple = tuple[str, str, str]  # (EPC URN, from, to)


def sku_for(gtin: str) -> str:
    return f"SKU-{gtin}"


def scenario_catalog(scenario: Scenario) -> Catalog:
    """A catalog with one item per GTIN the scenario's case tags carry (pack size 1)."""
    gtins = sorted(
        {
            decoded.gtin
            for load in _loads(scenario)
            for epc in load
            if (decoded := decode_epc(epc)).recognised and decoded.gtin is not None
        }
    )
    return Catalog([CatalogItem(sku=Sku(sku_for(g)), gtin=g, name=f"GTIN {g}") for g in gtins])


def _loads(scenario: Scenario) -> Iterable[tuple[str, ...]]:
    yield from (p.load.epcs for p in scenario.pallets)
    yield from (s.load.epcs for s in scenario.strays)


@dataclass(frozen=True, slots=True)
class Score:
    """Predicted vs truth ``(EPC, from, to)`` multisets, with the wrong ones classified."""

    truth: int
    predicted: int
    correct: int
    same_door: int
    """Predicted whose EPC crossed that door in the truth (right or wrong direction)."""
    strays: tuple[Triple, ...] = ()
    cross_reads: tuple[Triple, ...] = ()
    wrong_direction: tuple[Triple, ...] = ()
    missed: tuple[Triple, ...] = ()

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.truth if self.truth else 1.0

    @property
    def direction_accuracy(self) -> float:
        return self.correct / self.same_door if self.same_door else 1.0


def score(
    predicted: Iterable[Triple], truth: Iterable[Triple], door_of: dict[tuple[str, str], str]
) -> Score:
    """Compare multisets of ``(EPC, from, to)``; ``door_of[(from, to)]`` names the door."""
    pred = Counter(predicted)
    true = Counter(truth)
    hits = pred & true
    wrong = pred - true
    true_doors = Counter((epc, door_of[(a, b)]) for epc, a, b in true.elements())
    pred_doors = Counter((epc, door_of[(a, b)]) for epc, a, b in pred.elements())
    crossed = {epc for epc, _, _ in true}
    strays: list[Triple] = []
    cross_reads: list[Triple] = []
    wrong_direction: list[Triple] = []
    for triple, n in sorted(wrong.items()):
        epc, a, b = triple
        if epc not in crossed:
            strays += [triple] * n
        elif (epc, door_of[(a, b)]) in true_doors:
            wrong_direction += [triple] * n
        else:
            cross_reads += [triple] * n
    return Score(
        truth=sum(true.values()),
        predicted=sum(pred.values()),
        correct=sum(hits.values()),
        same_door=sum((pred_doors & true_doors).values()),
        strays=tuple(strays),
        cross_reads=tuple(cross_reads),
        wrong_direction=tuple(wrong_direction),
        missed=tuple(sorted((true - pred).elements())),
    )


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution in seconds (scenario time)."""

    n: int
    median: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        if not values:
            return cls(0, math.nan, math.nan, math.nan)
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return cls(len(ordered), statistics.median(ordered), p95, ordered[-1])

    def __str__(self) -> str:
        return (
            f"median {self.median:.2f} s, p95 {self.p95:.2f} s, max {self.max:.2f} s (n={self.n})"
        )


@dataclass(frozen=True, slots=True)
class PortalAccuracyReport:
    scenario: str
    seed: int
    speed: float
    wall_s: float
    reads: int
    """TagReportData entries delivered by sllurp (one per EPC and antenna per report)."""
    batches: int
    movements: Score
    """Case EPCs of the movements in the store (what stock sees)."""
    crossings: Score
    """Every tag the engine saw cross, pallet labels included."""
    stored_movements: int
    truth_movements: int
    """Truth (load crossing, SKU) pairs: the movements a perfect gateway records."""
    stats: PortalStats
    lag_p50_s: float
    lag_max_s: float
    """Scenario seconds from a report's newest read to the engine taking it in."""
    statuses: tuple[DeviceStatus, ...] = field(default=())
    photo_eyes: bool = False
    movement_latency: Latency = Latency(0, math.nan, math.nan, math.nan)
    """From the pallet passing the door plane to its movement committed (per truth movement)."""
    pass_latency: Latency = Latency(0, math.nan, math.nan, math.nan)
    """From the pallet passing the door plane to the first pass event of its load."""
    handoff_latency: Latency = Latency(0, math.nan, math.nan, math.nan)
    """From the pallet passing the door plane to its movement handed to the store (decided)."""
    movement_latencies: tuple[float, ...] = ()
    handoff_latencies: tuple[float, ...] = ()
    pass_latencies: tuple[float, ...] = ()
    gpo: Mapping[str, tuple[GpioChange, ...]] = field(default_factory=dict)
    """door -> the GPO writes its reader simulator recorded (clock time, port, level)."""
    start: float = 0.0
    """The scenario's time 0 on the simulators' clock (GPO times minus this: scenario time)."""
    pass_events: tuple[tuple[float, PassEvent], ...] = ()
    """(clock time, event) of every pass event, in order."""
    beams: Mapping[str, int] = field(default_factory=dict)
    """How the photo eyes judged the crossings (``CrossingEvidence.beams``: agree...)."""

    HEADER = (
        "scenario      seed  level       truth  found  correct  precision  recall   direction"
        "  strays  cross-reads  movements"
    )

    def rows(self) -> list[str]:
        out = []
        for level, s, moves in (
            ("movements", self.movements, f"{self.stored_movements}/{self.truth_movements}"),
            ("crossings", self.crossings, ""),
        ):
            out.append(
                f"{self.scenario:<12} {self.seed:>5}  {level:<10} {s.truth:>6} {s.predicted:>6}"
                f" {s.correct:>8}  {s.precision:>8.2%}  {s.recall:>7.2%}"
                f"  {s.direction_accuracy:>8.2%}  {len(s.strays):>6}  {len(s.cross_reads):>11}"
                f"  {moves:>9}"
            )
        return out

    def details(self) -> list[str]:
        s = self.crossings
        out = [
            f"  {self.scenario} seed {self.seed}: {self.reads} reads in {self.batches} reports,"
            f" {self.wall_s:.1f} s wall at {self.speed:g}x; report lag p50 {self.lag_p50_s:.2f} s,"
            f" max {self.lag_max_s:.2f} s (scenario time)",
            f"  engine: {self.stats}",
        ]
        for what, triples in (
            ("stray", s.strays),
            ("cross-read", s.cross_reads),
            ("wrong direction", s.wrong_direction),
            ("missed", s.missed),
        ):
            out.extend(f"    {what}: {t}" for t in triples)
        return out


class _Deferred:
    """A reader's source that hears nothing until the scenario starts, and after it ends."""

    def __init__(self) -> None:
        self.inner: ScenarioReadSource | None = None

    def reads(self, t0: float, t1: float) -> Sequence[SimRead]:
        inner = self.inner
        return () if inner is None else inner.reads(t0, t1)


async def run_portal_accuracy(
    scenario: Scenario,
    *,
    store_url: str,
    truth_path: Path,
    speed: float = 10.0,
    params: PortalParams | None = None,
    report_every_s: float = 0.2,
    photo_eyes: bool = False,
    lights: Sequence[PortalLights] = (),
    expected: Sequence[ExpectedReceipt] = (),
) -> PortalAccuracyReport:
    """Run ``scenario`` end to end and score the store's movements against its ground truth."""
    params = params if params is not None else PortalParams()
    paced = PacedClock(speed)

    def clock() -> float:
        return EPOCH_S + paced()

    catalog = scenario_catalog(scenario)
    scenario.write_truth(truth_path)
    store = EdgeStore.open(store_url, site=SITE)
    try:
        _prime_store(store, scenario, catalog)
        started = time.monotonic()
        result = await _run(
            scenario=scenario,
            store=store,
            catalog=catalog,
            params=params,
            clock=clock,
            speed=speed,
            report_every_s=report_every_s,
            photo_eyes=photo_eyes,
            lights=lights,
            expected=expected,
        )
        wall = time.monotonic() - started
        stored = _stored_movements(store)
    finally:
        store.close()
    truth = read_ground_truth(truth_path)
    return _report(
        scenario=scenario,
        speed=speed,
        wall=wall,
        truth=truth,
        stored=stored,
        catalog=catalog,
        result=result,
        photo_eyes=photo_eyes,
    )


def _prime_store(store: EdgeStore, scenario: Scenario, catalog: Catalog) -> None:
    items = [CatalogItem(sku=i.sku, name=i.name, gtin=i.gtin) for i in catalog]
    places = {d.outside_location for d in scenario.doors} | {
        d.inside_location for d in scenario.doors
    }
    store.sync_catalog(items, [LocationRecord(p) for p in sorted(places)])


@dataclass(slots=True)
class _RunResult:
    crossings: list[TagCrossed] = field(default_factory=list)
    start: float = 0.0
    """The scenario's time 0 on the run's clock."""
    recorded_at: dict[str, float] = field(default_factory=dict)
    """movement_id -> clock time its store transaction committed (sinks notified)."""
    handed_at: dict[str, float] = field(default_factory=dict)
    """movement_id -> clock time the door pipeline handed it to be recorded."""
    passes: list[tuple[float, PassEvent]] = field(default_factory=list)
    gpo: dict[str, tuple[GpioChange, ...]] = field(default_factory=dict)
    """door -> the GPO writes its reader simulator applied, in order."""
    reads: int = 0
    batches: int = 0
    lags_us: list[int] = field(default_factory=list)
    statuses: list[DeviceStatus] = field(default_factory=list)
    stats: PortalStats | None = None


async def _run(
    *,
    scenario: Scenario,
    store: EdgeStore,
    catalog: Catalog,
    params: PortalParams,
    clock: Callable[[], float],
    speed: float,
    report_every_s: float,
    photo_eyes: bool,
    lights: Sequence[PortalLights],
    expected: Sequence[ExpectedReceipt],
) -> _RunResult:
    engine = PortalEngine(
        portals=[
            PortalSpec(
                portal_id=d.id,
                reader_id=DeviceId(d.reader),
                outside_antennas=frozenset(d.outside_antennas),
                inside_antennas=frozenset(d.inside_antennas),
                outside_location=LocationId(d.outside_location),
                inside_location=LocationId(d.inside_location),
                photo_eyes=photo_eyes,
            )
            for d in scenario.doors
        ],
        catalog=catalog,
        params=params,
    )
    result = _RunResult()
    sources = {d.id: _Deferred() for d in scenario.doors}
    batches: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=10_000)
    to_record: asyncio.Queue[list[Movement]] = asyncio.Queue(maxsize=1_000)
    tracker = ReceivingTracker(catalog=catalog, expected=expected) if expected else None
    adapters: dict[str, LlrpReaderAdapter] = {}

    def now_us() -> int:
        return round(clock() * 1_000_000)

    async def record(movements: Sequence[Movement]) -> None:
        if movements:
            handed = clock()
            for movement in movements:
                result.handed_at[movement.movement_id] = handed
            await to_record.put(list(movements))

    def write_gpo(reader_id: DeviceId, levels: Mapping[int, bool]) -> None:
        adapters[reader_id].write_gpo(levels)

    doors = DoorPipeline(
        engine=engine,
        ports=DoorPorts(
            record=record,
            raise_alert=_ignore_alert,
            write_gpo=write_gpo,
            receipt_progress=tracker.progress if tracker is not None else None,
            crossed=result.crossings.extend,
        ),
        site=SITE,
        now_us=now_us,
        lights=StackLights(lights) if lights else None,
        photo_eyes={
            (DeviceId(d.reader), port): PhotoEye(d.id, side)
            for d in scenario.doors
            for side, port in (("outside", GPI_OUTSIDE), ("inside", GPI_INSIDE))
        }
        if photo_eyes
        else None,
        monotonic=clock,
        # The gateway's portal clock, on the sped-up scenario clock.
        tick_s=TICK_S / speed,
    )

    async def consume() -> None:
        while True:
            batch = await batches.get()
            now = now_us()
            result.batches += 1
            result.reads += len(batch.reads)
            result.lags_us.append(now - max(r.last_seen_us for r in batch.reads))
            await doors.feed(batch.reads)

    async def store_movements() -> None:
        while True:
            movements = await to_record.get()
            at = datetime.fromtimestamp(clock(), UTC)
            # The store is synchronous (SQLAlchemy): keep it off the event loop.
            await asyncio.to_thread(store.record, movements, now=at)
            recorded = clock()  # where the gateway notifies its sinks
            for movement in movements:
                result.recorded_at[movement.movement_id] = recorded
            if tracker is not None:
                tracker.observe(movements, datetime.fromtimestamp(recorded, UTC))
            to_record.task_done()

    async def beams(sim: LlrpReaderSimulator, edges: Sequence[tuple[float, str, bool]]) -> None:
        for t, side, broken in edges:
            while clock() < start + t:  # noqa: ASYNC110 - the paced scenario clock signals nothing
                await asyncio.sleep(max(0.001, (start + t - clock()) / speed))
            sim.set_gpi(GPI_OUTSIDE if side == "outside" else GPI_INSIDE, broken)

    async with contextlib.AsyncExitStack() as stack:
        sims = [
            await stack.enter_async_context(
                LlrpReaderSimulator(
                    port=0,
                    reader_id=d.reader,
                    antennas=d.antenna_ids,
                    source=sources[d.id],
                    clock=clock,
                    report_interval_s=min(0.05, report_every_s / speed / 4),
                )
            )
            for d in scenario.doors
        ]
        for d, sim in zip(scenario.doors, sims, strict=True):
            adapters[d.reader] = LlrpReaderAdapter(
                reader_id=d.reader,
                host=sim.host,
                port=sim.port,
                antennas=d.antenna_ids,
                out=batches,
                on_status=result.statuses.append,
                backoff=Backoff(BackoffPolicy(initial_s=0.05, max_s=0.5)),
                report_every_ms=max(5, round(report_every_s * 1000 / speed)),
                # The readers run on the (sped-up) scenario clock: skewed on purpose.
                max_clock_skew_s=math.inf,
                on_gpi=doors.gpi_changed,
            )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(a.run(), name=f"reader {a.reader_id}") for a in adapters.values()
            ]
            tasks.append(group.create_task(consume(), name="engine"))
            tasks.append(group.create_task(doors.run_clock(), name="engine clock"))
            recorder = group.create_task(store_movements(), name="store")
            try:
                await _until_online(list(adapters.values()))
                start = clock() + LEAD_S
                result.start = start
                for d in scenario.doors:
                    sources[d.id].inner = scenario.read_source(d.id, start)
                if photo_eyes:
                    tasks += [
                        group.create_task(beams(sim, scenario.photo_eye_edges(d.id)))
                        for d, sim in zip(scenario.doors, sims, strict=True)
                    ]
                end = start + scenario.duration_s
                while clock() < end:  # noqa: ASYNC110 - the paced scenario clock signals nothing
                    await asyncio.sleep(max(0.01, (end - clock()) / speed / 2))
                for source in sources.values():
                    source.inner = None
                # Let in-flight reports land, then stop the readers.
                await asyncio.sleep(3 * report_every_s / speed + 0.2)
                result.gpo = {
                    d.id: tuple(sim.gpo_writes) for d, sim in zip(scenario.doors, sims, strict=True)
                }
            finally:
                for task in tasks:
                    task.cancel()
            # Readers are stopped: the engine's clock runs on until everything settled.
            await doors.advance(now_us() + round(TAIL_S * 1_000_000))
            await to_record.join()
            recorder.cancel()
    result.stats = engine.stats
    result.passes = [(at, event) for at, event, _ in doors.pass_log]
    return result


async def _ignore_alert(_alert: Alert) -> None:
    """The harness raises no alerts (antenna health is not part of the accuracy run)."""


async def _until_online(adapters: Sequence[LlrpReaderAdapter]) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while any(a.state is not DeviceState.ONLINE for a in adapters):
        if time.monotonic() > deadline:
            states = {a.reader_id: a.state for a in adapters}
            raise TimeoutError(f"readers not inventorying after {CONNECT_TIMEOUT_S} s: {states}")
        await asyncio.sleep(0.02)


def _stored_movements(store: EdgeStore) -> list[MovementView]:
    out: list[MovementView] = []
    after = 0
    while page := store.movements_since(after):
        out.extend(r.movement for r in page)
        after = page[-1].seq
    return out


def _report(
    *,
    scenario: Scenario,
    speed: float,
    wall: float,
    truth: Sequence[dict[str, Any]],
    stored: Sequence[MovementView],
    catalog: Catalog,
    result: _RunResult,
    photo_eyes: bool,
) -> PortalAccuracyReport:
    door_of = {(d.outside_location, d.inside_location): d.id for d in scenario.doors}
    door_of |= {(d.inside_location, d.outside_location): d.id for d in scenario.doors}
    crossings = [e for e in truth if e["event"] == "crossing"]
    uri = {e["epc"]: decode_epc(e["epc"]).uri for e in crossings}
    item = {e["epc"]: catalog.classify(e["epc"]).item for e in crossings}
    truth_all = [(uri[e["epc"]], e["from"], e["to"]) for e in crossings]
    truth_cases = [(uri[e["epc"]], e["from"], e["to"]) for e in crossings if item[e["epc"]]]
    moved = [(epc, m.from_location, m.to_location) for m in stored for epc in m.epcs]
    crossed = [(c.uri, c.from_location, c.to_location) for c in result.crossings]
    truth_movements = {
        (e["load"], e["t"], case.sku) for e in crossings if (case := item[e["epc"]]) is not None
    }
    lags = result.lags_us or [0]
    assert result.stats is not None
    # Latency, in scenario seconds from the pallet's centre passing the door plane (the truth's
    # ``t``, on the run's clock: start + t): a truth movement (load crossing, SKU) is on its way
    # to the sinks when the store has committed the movements of all its found cases; a pass is
    # decided at the first pass event (STARTED) at its door, in its direction, naming one of
    # its EPCs.
    committed = _movement_latencies(crossings, item, uri, stored, result.recorded_at, result.start)
    handed = _movement_latencies(crossings, item, uri, stored, result.handed_at, result.start)
    loads: dict[tuple[str, float], tuple[str, str, set[str]]] = {}
    for e in crossings:
        entry = loads.setdefault((e["load"], e["t"]), (e["door"], e["direction"], set()))
        entry[2].add(e["epc"])
    pass_done = []
    for (_, t), (door, direction, epcs) in loads.items():
        plane = result.start + t
        firsts = [
            at
            for at, event in result.passes
            if event.portal_id == door
            and str(event.direction) == direction
            and at >= plane - 1
            and epcs.intersection(event.epcs)
        ]
        if firsts:
            pass_done.append(min(firsts) - plane)
    return PortalAccuracyReport(
        photo_eyes=photo_eyes,
        movement_latency=Latency.of(committed),
        handoff_latency=Latency.of(handed),
        pass_latency=Latency.of(pass_done),
        movement_latencies=tuple(committed),
        handoff_latencies=tuple(handed),
        pass_latencies=tuple(pass_done),
        gpo=result.gpo,
        start=result.start,
        pass_events=tuple(result.passes),
        beams=Counter(str(c.evidence.beams) for c in result.crossings),
        scenario=scenario.name,
        seed=scenario.seed,
        speed=speed,
        wall_s=wall,
        reads=result.reads,
        batches=result.batches,
        movements=score(moved, truth_cases, door_of),
        crossings=score(crossed, truth_all, door_of),
        stored_movements=len(stored),
        truth_movements=len(truth_movements),
        stats=result.stats,
        lag_p50_s=statistics.median(lags) / 1e6,
        lag_max_s=max(lags) / 1e6,
        statuses=tuple(result.statuses),
    )


def _movement_latencies(  # noqa: PLR0917 - one private helper, called twice just above
    crossings: Sequence[dict[str, Any]],
    item: Mapping[str, CatalogItem | None],
    uri: Mapping[str, str],
    stored: Sequence[MovementView],
    at: Mapping[str, float],
    start: float,
) -> list[float]:
    """Per truth movement (load crossing, SKU): seconds from the door plane to ``at`` of the
    last of the movements carrying its found cases (each case: its first such movement)."""
    times: dict[Triple, list[float]] = {}
    for m in stored:
        when = at.get(m.movement_id)
        if when is not None:
            for epc in m.epcs:
                times.setdefault((epc, m.from_location, m.to_location), []).append(when)
    done: dict[tuple[str, float, str], float] = {}
    for e in crossings:
        case = item[e["epc"]]
        if case is None:
            continue
        plane = start + e["t"]
        found = [t for t in times.get((uri[e["epc"]], e["from"], e["to"]), []) if t >= plane - 1]
        if found:
            key = (e["load"], e["t"], str(case.sku))
            done[key] = max(done.get(key, 0.0), min(found) - plane)
    return list(done.values())
