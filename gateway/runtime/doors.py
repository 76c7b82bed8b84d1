"""The door pipeline: tag reads and photo-eye edges in; movements, pass events, alerts and
stack lights out.

Theory of operation
-------------------
One :class:`DoorPipeline` serves every portal of the gateway. ``run_reads`` takes the LLRP
adapters' read batches from the hand-off queue, counts them per antenna, tells antenna health,
and feeds the :class:`~gateway.domain.portal.PortalEngine`; ``run_clock`` advances the engine
every ``tick_s`` (passes close and loads settle while no read arrives), steps the antenna health
and the stack lights. Whatever the engine decides goes out in this order, each step as soon as
it is known:

1. pass events (started, updated, decided; ``PortalEngine.take_pass_events``), each with the
   live-receiving progress of the expected receipt it would go to, published on
   ``{prefix}/doors/{portal}/passes`` and shown on the portal's stack lights (GPO writes go out
   at once, not on the next tick);
2. the settled crossings' movements, recorded (store, then sinks) through ``record``.

Photo eyes: a GPI edge of a port a portal names (``gpi_changed``) becomes a beam break or clear
in the engine (``PortalEngine.beam``), evidence for the next decisions.

The pipeline names no concrete adapter and not the Gateway: it is given small callables
(:class:`DoorPorts`), so the accuracy harness (``simulators/llrp/accuracy.py``) drives this same
object. Time: ``now_us`` (reader-clock UTC microseconds for the engine) and ``monotonic``
(antenna health, lights) are injected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.adapters.llrp import ReadBatch
from gateway.config import GatewayConfig
from gateway.domain.antenna import AntennaDown, AntennaEvent, AntennaHealth
from gateway.domain.catalog import Catalog, EpcKind
from gateway.domain.lights import LightRule, Outcome, PortalLights, StackLights, outcome_of
from gateway.domain.model import (
    Alert,
    AlertKind,
    DeviceId,
    LocationId,
    Movement,
    MovementKind,
    Severity,
    TagRead,
)
from gateway.domain.portal import (
    Direction,
    PassEvent,
    PassPhase,
    PortalEngine,
    PortalSpec,
    TagCrossed,
    us_to_datetime,
)
from gateway.domain.receiving import ReceiptProgress
from gateway.domain.views import AlertView

log = logging.getLogger(__name__)

TICK_S = 0.1
"""How often the portal engine's clock advances (closes idle passes, settles loads)."""

PASS_LOG = 10_000
"""Pass events kept in ``DoorPipeline.pass_log``."""

ReceiptProgressOf = Callable[[str, Sequence[tuple[str, str, int]]], ReceiptProgress | None]
"""(door, [(EPC URN, SKU, eaches)]) -> the progress of the expected receipt a pass would go to,
or None when nothing is expected at all (``ReceivingTracker.progress``)."""


@dataclass(frozen=True, slots=True)
class DoorPorts:
    """What the door pipeline needs from the rest of the gateway."""

    record: Callable[[Sequence[Movement]], Awaitable[object]]
    """Commit movements (store, then sinks)."""
    raise_alert: Callable[[Alert], Awaitable[None]]
    alert_active: Callable[[str], bool] = lambda _alert_id: False
    publish_pass: Callable[[str, bytes], None] | None = None
    """(portal id, JSON payload) -> publish on the portal's passes topic."""
    write_gpo: Callable[[DeviceId, Mapping[int, bool]], None] | None = None
    """(reader id, {port: level}) -> SET_READER_CONFIG with GPOWriteData, now."""
    set_antenna_down: Callable[[DeviceId, int, str | None], None] | None = None
    """Tell a reader's adapter an antenna is down (detail) or up again (None)."""
    receipt_progress: ReceiptProgressOf | None = None
    reads_seen: Callable[[Sequence[TagRead]], None] | None = None
    """Every batch as it reaches the pipeline (counters, the operator console)."""
    crossed: Callable[[Sequence[TagCrossed]], None] | None = None
    """The settled crossings, before their movements are recorded (traces, scoring)."""


@dataclass(frozen=True, slots=True)
class PhotoEye:
    """A light barrier on one side of a portal, wired to a GPI port of its reader."""

    portal_id: str
    side: str
    """``outside`` or ``inside``."""
    broken_high: bool = True
    """The GPI level while the beam is broken."""


@dataclass(slots=True)
class DoorCounters:
    """Read counts per configured antenna and per reader on unexpected antennas; the gateway
    may pass its own dicts (its metrics read them)."""

    reads_by_antenna: dict[tuple[str, int], int] = field(default_factory=dict)
    unexpected_antenna: dict[str, int] = field(default_factory=dict)
    pass_events: int = 0


class DoorPipeline:
    """Every portal's reads to movements, pass events, alerts and lights; see the module doc."""

    def __init__(
        self,
        *,
        engine: PortalEngine,
        ports: DoorPorts,
        site: str,
        now_us: Callable[[], int],
        antenna_health: AntennaHealth | None = None,
        lights: StackLights | None = None,
        photo_eyes: Mapping[tuple[DeviceId, int], PhotoEye] | None = None,
        counters: DoorCounters | None = None,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        tick_s: float = TICK_S,
    ) -> None:
        if not tick_s > 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.engine = engine
        self.antenna_health = antenna_health
        self.lights = lights
        self.counters = counters if counters is not None else DoorCounters()
        self._ports = ports
        self._site = site
        self._now_us = now_us
        self._utcnow = utcnow
        self._monotonic = monotonic
        self._tick_s = tick_s
        self._photo_eyes = dict(photo_eyes or {})
        self._specs = {spec.portal_id: spec for spec in engine.portals}
        self._antenna_reports: list[AntennaEvent] = []
        self.pass_log: deque[tuple[float, PassEvent, Outcome]] = deque(maxlen=PASS_LOG)
        """(monotonic time, event, outcome) of the last ``PASS_LOG`` pass events (traces,
        the accuracy benchmark's latencies)."""

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        *,
        catalog: Catalog,
        antenna_health: AntennaHealth,
        ports: DoorPorts,
        counters: DoorCounters,
        now_us: Callable[[], int],
        utcnow: Callable[[], datetime],
    ) -> DoorPipeline:
        """Every portal of ``config``: its engine, lights and photo eyes."""
        return cls(
            engine=PortalEngine(
                portals=portal_specs(config), catalog=catalog, params=config.debounce.portal
            ),
            antenna_health=antenna_health,
            lights=lights_of(config),
            photo_eyes=photo_eyes_of(config),
            counters=counters,
            ports=ports,
            site=config.site.id,
            now_us=now_us,
            utcnow=utcnow,
        )

    # -- input ----------------------------------------------------------------------------------

    async def run_reads(self, queue: asyncio.Queue[ReadBatch]) -> None:
        """Feed every batch from the hand-off queue, until cancelled."""
        while True:
            batch = await queue.get()
            await self.feed(batch.reads)

    async def run_clock(self) -> None:
        """Advance the engine, antenna health and lights every ``tick_s``, until cancelled."""
        while True:
            await asyncio.sleep(self._tick_s)
            await self.tick()

    async def feed(self, reads: Sequence[TagRead]) -> None:
        self._count(reads)
        if self.antenna_health is not None:
            recovered = self.antenna_health.feed(reads, self._monotonic())
            if recovered:
                await self._antenna_events(recovered)
        if self._ports.reads_seen is not None:
            self._ports.reads_seen(reads)
        await self._settled(self.engine.feed(reads, self._now_us()))

    async def tick(self) -> None:
        await self.advance(self._now_us())
        if self.antenna_health is not None:
            reported, self._antenna_reports = self._antenna_reports, []
            await self._antenna_events([*reported, *self.antenna_health.advance(self._monotonic())])
        if self.lights is not None:
            self._write(self.lights.advance(self._monotonic()))

    async def advance(self, now_us: int) -> None:
        """Let the engine's clock run to ``now_us`` (a tick; the harness's tail)."""
        await self._settled(self.engine.advance(now_us))

    def restore(self, active: Sequence[AlertView]) -> None:
        """The antennas a previous run left down (its active ``antenna_down`` alerts) stay down
        until they read again."""
        if self.antenna_health is None:
            return
        for alert in active:
            if alert.kind == AlertKind.ANTENNA_DOWN:
                reader, _, antenna = alert.subject.rpartition("/")
                self.antenna_health.restore_down(DeviceId(reader), int(antenna), self._monotonic())

    def antenna_reported(self, reader_id: DeviceId, antenna: int, connected: bool) -> None:
        """An LLRP adapter's AntennaEvent (on the loop); handled on the next tick."""
        if self.antenna_health is not None:
            self._antenna_reports += self.antenna_health.reported(
                reader_id, antenna, connected, self._monotonic()
            )

    def gpi_changed(self, reader_id: DeviceId, port: int, high: bool, at_us: int) -> None:
        """An LLRP adapter's GPIEvent (on the loop): a photo eye's beam broken or cleared."""
        eye = self._photo_eyes.get((reader_id, port))
        if eye is None:
            return
        self.engine.beam(eye.portal_id, eye.side, high == eye.broken_high, at_us)

    # -- output ---------------------------------------------------------------------------------

    async def _settled(self, crossings: list[TagCrossed]) -> None:
        for event in self.engine.take_pass_events():
            self._pass(event)
        if crossings:
            if self._ports.crossed is not None:
                self._ports.crossed(crossings)
            await self._ports.record(self.engine.movements(crossings))

    def _pass(self, event: PassEvent) -> None:
        spec = self._specs[event.portal_id]
        cases = self._cases(event)
        progress: ReceiptProgress | None = None
        inward = event.direction is Direction.IN
        kind = spec.kind_in if inward else spec.kind_out
        if self._ports.receipt_progress is not None and kind is MovementKind.RECEIPT and cases:
            progress = self._ports.receipt_progress(event.portal_id, cases)
        settled = event.phase is PassPhase.DECIDED
        low = 0.0
        if self.lights is not None and event.portal_id in self.lights.portals:
            low = self.lights.portals[event.portal_id].low_confidence
        outcome = outcome_of(
            settled=settled,
            confidence=event.confidence,
            low_confidence=low,
            matched=None if progress is None else progress.matches,
        )
        now = self._monotonic()
        self.counters.pass_events += 1
        self.pass_log.append((now, event, outcome))
        if self.lights is not None:
            self._write(self.lights.show(event.portal_id, outcome, now))
        if self._ports.publish_pass is not None:
            payload = self._payload(event, spec, cases, progress, outcome)
            self._ports.publish_pass(event.portal_id, json.dumps(payload).encode())

    def _cases(self, event: PassEvent) -> list[tuple[str, str, int]]:
        catalog = self.engine.catalog
        out = []
        for epc in event.epcs:
            info = catalog.classify(epc)
            if info.kind is EpcKind.CASE and info.item is not None:
                out.append((info.uri, str(info.item.sku), info.item.pack_size))
        return out

    def _payload(
        self,
        event: PassEvent,
        spec: PortalSpec,
        cases: Sequence[tuple[str, str, int]],
        progress: ReceiptProgress | None,
        outcome: Outcome,
    ) -> dict[str, object]:
        inward = event.direction is Direction.IN
        skus: dict[str, int] = {}
        for _, sku, eaches in cases:
            skus[sku] = skus.get(sku, 0) + eaches
        receipt: dict[str, object] | None = None
        if progress is not None:
            receipt = {
                "receipt_id": progress.receipt_id,
                "matches": progress.matches,
                "expected": dict(sorted(progress.expected.items())),
                "seen": dict(sorted(progress.seen.items())),
                "over": dict(sorted(progress.over.items())),
                "unexpected": dict(sorted(progress.unexpected.items())),
                "unexpected_epcs": progress.unexpected_epcs,
            }
        return {
            "site": self._site,
            "portal": event.portal_id,
            "pass_key": event.pass_key,
            "phase": str(event.phase),
            "direction": str(event.direction),
            "kind": str(spec.kind_in if inward else spec.kind_out),
            "from_location": spec.outside_location if inward else spec.inside_location,
            "to_location": spec.inside_location if inward else spec.outside_location,
            "at": _iso(us_to_datetime(event.at_us)),
            "observed_at": _iso(us_to_datetime(event.moment_us)),
            "tags": len(event.epcs),
            "cases": len(cases),
            "skus": dict(sorted(skus.items())),
            "confidence": event.confidence,
            "outcome": str(outcome),
            "pass_id": event.pass_id,
            "receipt": receipt,
        }

    def _write(self, changes: Mapping[DeviceId, Mapping[int, bool]]) -> None:
        write = self._ports.write_gpo
        if write is None:
            return
        for reader_id, levels in changes.items():
            write(reader_id, levels)

    def _count(self, reads: Sequence[TagRead]) -> None:
        by_antenna = self.counters.reads_by_antenna
        for read in reads:
            key = (read.reader_id, read.antenna)
            if key in by_antenna:
                by_antenna[key] += 1
            else:
                self._unexpected_antenna(read.reader_id, read.antenna)

    def _unexpected_antenna(self, reader_id: str, antenna: int) -> None:
        """A read on an antenna the reader is not configured with: counted per reader (the
        portal engine ignores it), logged once per reader."""
        unexpected = self.counters.unexpected_antenna
        count = unexpected.get(reader_id)
        if count is None:
            return  # not a configured reader: the adapter never reports one
        unexpected[reader_id] = count + 1
        if count == 0:
            configured = sorted(a for r, a in self.counters.reads_by_antenna if r == reader_id)
            log.warning(
                "reader %s reports reads on antenna %s, which is not configured (antennas %s): "
                "such reads are counted in dockwatch_reader_unexpected_antenna_reads_total and "
                "otherwise ignored (logged once per reader)",
                reader_id,
                antenna,
                ", ".join(map(str, configured)),
                extra={"reader_id": reader_id},
            )

    async def _antenna_events(self, events: Sequence[AntennaEvent]) -> None:
        """``antenna_down`` raised or cleared, and the reader marked degraded meanwhile."""
        for event in events:
            down = isinstance(event, AntennaDown)
            if self._ports.set_antenna_down is not None:
                detail = event.detail if isinstance(event, AntennaDown) else None
                self._ports.set_antenna_down(event.reader_id, event.antenna, detail)
            alert_id = f"{AlertKind.ANTENNA_DOWN}:{event.reader_id}:{event.antenna}"
            if down == self._ports.alert_active(alert_id):
                continue
            await self._ports.raise_alert(
                Alert(
                    alert_id=alert_id,
                    kind=AlertKind.ANTENNA_DOWN,
                    severity=Severity.WARNING if down else Severity.INFO,
                    subject=f"{event.reader_id}/{event.antenna}",
                    message=(
                        f"{event.reader_id}: {event.detail}"
                        if isinstance(event, AntennaDown)
                        else f"{event.reader_id}: antenna {event.antenna} reads again"
                    ),
                    raised_at=self._utcnow(),
                    active=down,
                    details={"portal": event.portal_id, "antenna": event.antenna},
                )
            )


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lights_of(config: GatewayConfig) -> StackLights | None:
    """The stack lights of the portals that have ``lights`` rules (None: no portal has)."""
    portals = [
        PortalLights(
            portal_id=p.id,
            reader_id=DeviceId(p.reader),
            rules=tuple(
                LightRule(Outcome(r.on), r.gpo, for_s=r.for_s, blink=r.blink)
                for r in p.lights.rules
            ),
            low_confidence=p.lights.low_confidence,
        )
        for p in config.portals
        if p.lights is not None
    ]
    return StackLights(portals) if portals else None


def photo_eyes_of(config: GatewayConfig) -> dict[tuple[DeviceId, int], PhotoEye]:
    """(reader, GPI port) -> the photo eye wired to it, from ``portals[].photo_eyes``."""
    eyes: dict[tuple[DeviceId, int], PhotoEye] = {}
    for p in config.portals:
        if p.photo_eyes is None:
            continue
        reader = DeviceId(p.reader)
        for side, port in (
            ("outside", p.photo_eyes.outside_gpi),
            ("inside", p.photo_eyes.inside_gpi),
        ):
            eyes[reader, port] = PhotoEye(p.id, side, p.photo_eyes.broken_high)
    return eyes


def portal_specs(config: GatewayConfig) -> list[PortalSpec]:
    return [
        PortalSpec(
            portal_id=p.id,
            reader_id=DeviceId(p.reader),
            outside_antennas=frozenset(p.outside_antennas),
            inside_antennas=frozenset(p.inside_antennas),
            outside_location=LocationId(p.outside_location),
            inside_location=LocationId(p.inside_location),
            kind_in=p.kinds.in_,
            kind_out=p.kinds.out,
            photo_eyes=p.photo_eyes is not None,
        )
        for p in config.portals
    ]
