"""An active ROSpec's inventory: AISpecs in rounds, reads merged into report entries.

An active ROSpec runs its AISpecs in turn, forever unless its ROSpecStopTrigger has a duration
(or a GPI_With_Timeout timeout). Each AISpec runs in inventory rounds of ``report_interval_s``
(0 = as fast as the client drains the socket): each round asks the
:class:`~simulators.llrp.source.ReadSource` for the window since the last round, drops what cut
antennas heard and what the select filters (:mod:`simulators.llrp.filters`) deselect, keeps the
reads of the AISpec's antennas (0 = all), and merges them per (EPC, antenna when AntennaID is
selected, channel when ChannelIndex is selected, AISpec when SpecIndex is selected): first seen =
min, last seen = max, TagSeenCount = sum, PeakRSSI = max. An AISpec ends by its
AISpecStopTrigger: Duration, Tag_Observation (N unique tags, no new tag for T ms, or N attempts,
each with its timeout) or Null (never: the AISpec lasts as long as the ROSpec). When and how the
merged entries are reported is :mod:`simulators.llrp.reports`' job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from gateway.llrp import codec as c
from simulators.llrp.filters import select_filters, selected
from simulators.llrp.reports import TagAccum

if TYPE_CHECKING:
    from simulators.llrp.link import Link
    from simulators.llrp.reports import ReaderEvents, Reports
    from simulators.llrp.rospecs import RoSpecRun
    from simulators.llrp.server import LlrpReaderSimulator
    from simulators.llrp.settings import ReaderSettings
    from simulators.llrp.source import SimRead


class Inventory:
    """Runs one session's active ROSpecs (:meth:`run`), one task per ROSpec."""

    def __init__(
        self,
        sim: LlrpReaderSimulator,
        link: Link,
        settings: ReaderSettings,
        reports: Reports,
        events: ReaderEvents,
    ) -> None:
        self._sim = sim
        self._link = link
        self._settings = settings
        self._reports = reports
        self._events = events

    async def run(self, run: RoSpecRun) -> None:
        """Inventory until the ROSpec's own stop trigger (duration or GPI timeout) ends it;
        never returns without one (STOP, DISABLE, DELETE or a GPI edge cancel it)."""
        loop = asyncio.get_running_loop()
        boundary = run.rospec.boundary
        deadline = None
        if boundary.stop.trigger == c.ROSpecStopTriggerType.DURATION:
            deadline = loop.time() + boundary.stop.duration_ms / 1000
        elif (
            boundary.stop.trigger == c.ROSpecStopTriggerType.GPI_WITH_TIMEOUT
            and boundary.stop.gpi is not None
            and boundary.stop.gpi.timeout_ms
        ):  # stopped by its GPI edge (gpi_edge), or by this timeout if none comes
            deadline = loop.time() + boundary.stop.gpi.timeout_ms / 1000
        spec = self._reports.spec(run)
        t_prev = self._sim.clock()
        while deadline is None or loop.time() < deadline:
            for index, ai in enumerate(run.rospec.ai_specs, start=1):
                t_prev = await self._run_aispec(
                    run=run, spec=spec, index=index, ai=ai, t_prev=t_prev, rospec_deadline=deadline
                )
                if spec.trigger == c.ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC:
                    self._reports.flush(run, spec)
                    await self._link.drain()
                self._events.aispec(run.rospec.rospec_id, index)
                if deadline is not None and loop.time() >= deadline:
                    break

    async def _run_aispec(
        self,
        *,
        run: RoSpecRun,
        spec: c.ROReportSpec,
        index: int,
        ai: c.AISpec,
        t_prev: float,
        rospec_deadline: float | None,
    ) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop = ai.stop
        deadline = rospec_deadline
        obs = stop.tag_observation
        if stop.trigger == c.AISpecStopTriggerType.DURATION:
            deadline = _earliest(deadline, started + stop.duration_ms / 1000)
        elif stop.trigger == c.AISpecStopTriggerType.TAG_OBSERVATION and obs and obs.timeout_ms:
            deadline = _earliest(deadline, started + obs.timeout_ms / 1000)
        antennas = self._antennas(ai)
        ips_id = ai.inventory_parameter_specs[0].spec_id if ai.inventory_parameter_specs else 0
        selects = select_filters(ai)
        channels = {a: self._channel(ai, a) for a in antennas}
        unique: set[bytes] = set()
        last_new = started
        attempts = 0
        sim = self._sim
        interval = sim.report_interval_s
        while True:
            if interval > 0:
                wake = loop.time() + interval
                await asyncio.sleep(max(0.0, _earliest(deadline, wake) - loop.time()))
            else:
                await asyncio.sleep(0)
            t_now = sim.clock()
            reads = sim.source.reads(t_prev, t_now) if sim.source else ()
            if sim.cut_antennas:
                reads = [r for r in reads if r.antenna not in sim.cut_antennas]
            if selects:
                reads = [r for r in reads if selected(r, selects)]
            t_prev = t_now
            attempts += 1
            new = self._accumulate(
                run=run,
                spec=spec,
                index=index,
                ips_id=ips_id,
                reads=reads,
                channels=channels,
                unique=unique,
            )
            if new:
                last_new = loop.time()
            if spec.n and len(run.pending) >= spec.n and spec.trigger != c.ROReportTriggerType.NONE:
                self._reports.flush(run, spec, limit=spec.n)
                await self._link.drain()
            elif spec.trigger == c.ROReportTriggerType.NONE:
                self._reports.hold(run)
            now = loop.time()
            if deadline is not None and now >= deadline:
                return t_prev
            if stop.trigger == c.AISpecStopTriggerType.TAG_OBSERVATION and obs is not None:
                kind = obs.trigger
                if kind == 0 and obs.number_of_tags and len(unique) >= obs.number_of_tags:
                    return t_prev
                if kind == 1 and obs.t_ms and now - last_new >= obs.t_ms / 1000:
                    return t_prev
                if kind == 2 and obs.number_of_attempts and attempts >= obs.number_of_attempts:
                    return t_prev

    def _antennas(self, ai: c.AISpec) -> tuple[int, ...]:
        if 0 in ai.antenna_ids:
            return self._sim.antennas
        return tuple(a for a in ai.antenna_ids if a in self._sim.antennas)

    def _channel(self, ai: c.AISpec, antenna: int) -> int:
        for ips in ai.inventory_parameter_specs:
            for ac in ips.antenna_configurations:
                if ac.antenna_id in (0, antenna) and ac.rf_transmitter is not None:
                    return ac.rf_transmitter.channel_index
        configured = self._settings.config.antenna_configs.get(antenna)
        if configured is not None and configured.rf_transmitter is not None:
            return configured.rf_transmitter.channel_index
        return 1

    def _accumulate(
        self,
        *,
        run: RoSpecRun,
        spec: c.ROReportSpec,
        index: int,
        ips_id: int,
        reads: Sequence[SimRead],
        channels: Mapping[int, int],
        unique: set[bytes],
    ) -> bool:
        sel = spec.selector
        new = False
        for r in reads:
            channel = channels.get(r.antenna)
            if channel is None:
                continue  # not an antenna of this AISpec
            epc = r.epc_bytes
            if epc not in unique:
                unique.add(epc)
                new = True
            key = (
                epc,
                r.antenna if sel.antenna_id else 0,
                channel if sel.channel_index else 0,
                index if sel.spec_index else 0,
            )
            acc = run.pending.get(key)
            if acc is None:
                run.pending[key] = TagAccum(
                    epc,
                    r.antenna,
                    channel,
                    index,
                    ips_id,
                    r.first_seen_us,
                    r.last_seen_us,
                    r.seen_count,
                    r.rssi_dbm,
                )
            else:
                acc.first_us = min(acc.first_us, r.first_seen_us)
                acc.last_us = max(acc.last_us, r.last_seen_us)
                acc.count += r.seen_count
                acc.rssi = max(acc.rssi, r.rssi_dbm)
        return new


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
