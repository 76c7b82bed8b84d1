"""What the simulated reader sends a client on its own: RO_ACCESS_REPORTs (:class:`Reports`),
READER_EVENT_NOTIFICATIONs (:class:`ReaderEvents`) and KEEPALIVEs (:class:`Keepalives`).

Reports follow the ROReportSpec (the ROSpec's, or the reader's default set by
SET_READER_CONFIG): N > 0 sends a report every N entries; trigger 1 also at the end of each
AISpec, trigger 2 at the end of the ROSpec (duration, STOP, DISABLE, DELETE); trigger 0 holds
entries until GET_REPORT (at most ``max_held_tags``, oldest dropped first). Each entry carries the
EPC (EPC-96 for 96-bit EPCs, EPCData otherwise) and only the fields the TagReportContentSelector
enables; one report holds at most ``MAX_TAGS_PER_REPORT`` entries.

An event goes out only when the client enabled its kind (ReaderEventNotificationSpec);
connection events always do. Keepalives go out at the KeepaliveSpec period; KEEPALIVE_ACKs are
counted, and ``keepalive_ack_misses`` (if set) closes a connection that leaves that many
unanswered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.llrp import codec as c

if TYPE_CHECKING:
    from simulators.llrp.link import Link
    from simulators.llrp.rospecs import RoSpecRun
    from simulators.llrp.server import LlrpReaderSimulator
    from simulators.llrp.settings import ReaderSettings

logger = logging.getLogger(__name__)

# keeps one report well under the 1 MiB message cap (a TagReportData is at most ~60 bytes)
MAX_TAGS_PER_REPORT = 5000


@dataclass(slots=True)
class TagAccum:
    """One report entry being merged from reads: first seen = min, last seen = max,
    TagSeenCount = sum, PeakRSSI = max."""

    epc: bytes
    antenna: int
    channel: int
    spec_index: int
    ips_id: int
    first_us: int
    last_us: int
    count: int
    rssi: float


def tag_report(
    acc: TagAccum, rospec_id: int, sel: c.TagReportContentSelector, *, pc_bits: bool, crc: bool
) -> c.TagReportData:
    """The TagReportData of ``acc`` with only the fields ``sel`` enables."""
    pc = c.gen2_pc_word(8 * len(acc.epc))
    return c.TagReportData(
        epc=acc.epc,
        rospec_id=rospec_id if sel.rospec_id else None,
        spec_index=acc.spec_index if sel.spec_index else None,
        inventory_parameter_spec_id=acc.ips_id if sel.inventory_parameter_spec_id else None,
        antenna_id=acc.antenna if sel.antenna_id else None,
        peak_rssi=max(-128, min(127, round(acc.rssi))) if sel.peak_rssi else None,
        channel_index=acc.channel if sel.channel_index else None,
        first_seen_utc_us=acc.first_us if sel.first_seen_timestamp else None,
        last_seen_utc_us=acc.last_us if sel.last_seen_timestamp else None,
        tag_seen_count=min(acc.count, 0xFFFF) if sel.tag_seen_count else None,
        c1g2_pc=pc if pc_bits else None,
        c1g2_crc=c.gen2_crc16(pc.to_bytes(2, "big") + acc.epc) if crc else None,
        access_spec_id=0 if sel.access_spec_id else None,
    )


class Reports:
    """RO_ACCESS_REPORTs of one session: a ROSpec's pending entries sent (:meth:`flush`) or
    held for GET_REPORT (:meth:`hold`, :meth:`send_held`)."""

    def __init__(self, sim: LlrpReaderSimulator, link: Link, settings: ReaderSettings) -> None:
        self._sim = sim
        self._link = link
        self._settings = settings
        self._held: list[c.TagReportData] = []

    def spec(self, run: RoSpecRun) -> c.ROReportSpec:
        """The ROReportSpec that applies to ``run``: its own, else the reader's."""
        return run.rospec.report_spec or self._settings.config.report_spec

    def _entries(
        self, run: RoSpecRun, spec: c.ROReportSpec, limit: int | None
    ) -> list[c.TagReportData]:
        keys = list(run.pending)[: limit if limit else None]
        sel = spec.selector
        pc_bits, crc = sel.pc_bits, sel.crc  # properties scan the memory selectors: once per flush
        return [
            tag_report(run.pending.pop(key), run.rospec.rospec_id, sel, pc_bits=pc_bits, crc=crc)
            for key in keys
        ]

    def flush(self, run: RoSpecRun, spec: c.ROReportSpec, limit: int | None = None) -> None:
        """Report ``run``'s pending entries; with ``limit``, in reports of that many, leaving
        fewer than ``limit`` for later."""
        while run.pending:
            tags = self._entries(run, spec, limit or MAX_TAGS_PER_REPORT)
            self._link.send(c.ROAccessReport(msg_id=self._link.next_id(), tags=tuple(tags)))
            if limit and len(run.pending) < limit:
                break  # the rest waits for the next N or the end of the spec

    def hold(self, run: RoSpecRun) -> None:
        """Move ``run``'s pending entries to the held reports (trigger 0)."""
        self._held.extend(self._entries(run, self.spec(run), None))
        overflow = len(self._held) - self._sim.max_held_tags
        if overflow > 0:
            del self._held[:overflow]  # a real reader's buffer overflows too; oldest go first

    def end_of_rospec(self, run: RoSpecRun) -> None:
        """A ROSpec ended: its pending entries are reported, or held under trigger 0."""
        spec = self.spec(run)
        if spec.trigger == c.ROReportTriggerType.NONE:
            self.hold(run)
        else:
            self.flush(run, spec)

    def send_held(self, runs: Iterable[RoSpecRun]) -> None:
        """GET_REPORT: everything held so far (with what trigger-0 ``runs`` have pending)."""
        for run in runs:
            if self.spec(run).trigger == c.ROReportTriggerType.NONE:
                self.hold(run)
        held, self._held = self._held, []
        # GET_REPORT always answers with a report, even an empty one
        self._link.send(c.ROAccessReport(msg_id=self._link.next_id(), tags=tuple(held)))


class ReaderEvents:
    """READER_EVENT_NOTIFICATIONs of one session, stamped with the reader's clock; each kind
    is sent only if the client enabled it, connection events always."""

    def __init__(self, link: Link, settings: ReaderSettings, clock: Callable[[], float]) -> None:
        self._link = link
        self._settings = settings
        self._clock = clock

    def _notification(
        self,
        *,
        connection_attempt: c.ConnectionAttemptEvent | None = None,
        connection_close: c.ConnectionCloseEvent | None = None,
        rospec_event: c.ROSpecEvent | None = None,
        aispec_event: c.AISpecEvent | None = None,
        antenna_event: c.AntennaEvent | None = None,
        gpi_event: c.GPIEvent | None = None,
    ) -> c.ReaderEventNotification:
        data = c.ReaderEventNotificationData(
            timestamp_us=int(self._clock() * 1_000_000),
            connection_attempt=connection_attempt,
            connection_close=connection_close,
            rospec_event=rospec_event,
            aispec_event=aispec_event,
            antenna_event=antenna_event,
            gpi_event=gpi_event,
        )
        return c.ReaderEventNotification(msg_id=self._link.next_id(), data=data)

    def _enabled(self, kind: int) -> bool:
        return bool(self._settings.config.events.get(kind, False))

    def connection_attempt(self, event: c.ConnectionAttemptEvent) -> None:
        self._link.send(self._notification(connection_attempt=event))

    def connection_close(self) -> None:
        self._link.send(self._notification(connection_close=c.ConnectionCloseEvent()))

    def rospec(self, event: int, rospec_id: int) -> None:
        """ROSpecEvent ``event``: 0 started, 1 ended."""
        if self._enabled(c.EventType.ROSPEC):
            self._link.send(self._notification(rospec_event=c.ROSpecEvent(event, rospec_id)))

    def aispec(self, rospec_id: int, index: int) -> None:
        """AISpecEvent: the AISpec at ``index`` (1-based) of the ROSpec ended."""
        if self._enabled(c.EventType.AISPEC):
            self._link.send(self._notification(aispec_event=c.AISpecEvent(rospec_id, index)))

    def antenna(self, event: c.AntennaEvent) -> None:
        if self._enabled(c.EventType.ANTENNA):
            self._link.send(self._notification(antenna_event=event))

    def gpi(self, port: int, high: bool) -> None:
        if self._enabled(c.EventType.GPI):
            self._link.send(self._notification(gpi_event=c.GPIEvent(port, high)))


class Keepalives:
    """KEEPALIVEs at the configured period, and the close of a client that stops answering
    (``on_silent``) after ``keepalive_ack_misses`` of them."""

    def __init__(
        self,
        sim: LlrpReaderSimulator,
        link: Link,
        settings: ReaderSettings,
        *,
        task_group: Callable[[], asyncio.TaskGroup | None],
        on_silent: Callable[[], None],
    ) -> None:
        self._sim = sim
        self._link = link
        self._settings = settings
        self._task_group = task_group
        self._on_silent = on_silent
        self._task: asyncio.Task[None] | None = None
        self._unacked = 0

    def restart(self) -> None:
        """Follow the KeepaliveSpec now configured (a new period starts now)."""
        self.cancel()
        self._task = None
        spec = self._settings.config.keepalive
        tg = self._task_group()
        if spec.periodic and spec.interval_ms > 0 and tg is not None:
            self._task = tg.create_task(self._loop(spec.interval_ms))

    def acked(self) -> None:
        self._unacked = 0
        self._sim._acks += 1

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self, interval_ms: int) -> None:
        misses = self._sim.keepalive_ack_misses
        while True:
            await asyncio.sleep(interval_ms / 1000)
            if self._sim.frozen:
                continue
            if misses is not None and self._unacked >= misses:
                logger.warning(
                    "LLRP reader %s: %s left %d keepalives unanswered, closing",
                    self._sim.reader_id,
                    self._link.peer,
                    self._unacked,
                )
                self._on_silent()
                return
            self._unacked += 1
            self._link.send(c.Keepalive(msg_id=self._link.next_id()))
            await self._link.drain()
