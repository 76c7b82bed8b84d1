"""Telemetry: the Prometheus metrics (docs/metrics.md lists them) and the periodic summary line.

:meth:`Telemetry.collect` reads live state at scrape time, from memory only (never the store):
the counters, the queues, the engines, each sink's connection and lag, the devices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from gateway.adapters.llrp import LlrpReaderAdapter, ReadBatch
from gateway.adapters.metrics import Sample, labelled
from gateway.adapters.modbus import ModbusShelfPoller, SampleQueue
from gateway.domain.antenna import AntennaHealth
from gateway.domain.model import DeviceState
from gateway.domain.portal import PortalEngine
from gateway.runtime.counters import Counters
from gateway.runtime.devices import DeviceBoard
from gateway.runtime.health import Health
from gateway.runtime.recorder import Recorder

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger(__name__)

SUMMARY_EVERY_S = 30.0


class Telemetry:
    """What the gateway tells about itself: metrics at scrape time, a summary every 30 s."""

    def __init__(
        self,
        *,
        counters: Counters,
        recorder: Recorder,
        health: Health,
        devices: DeviceBoard,
        portal: PortalEngine,
        antenna_health: AntennaHealth,
        reads: asyncio.Queue[ReadBatch],
        readers: Mapping[str, LlrpReaderAdapter],
        samples: SampleQueue,
        poller: ModbusShelfPoller | None,
        summary_every_s: float = SUMMARY_EVERY_S,
    ) -> None:
        self._counters = counters
        self._recorder = recorder
        self._health = health
        self._devices = devices
        self._portal = portal
        self._antenna_health = antenna_health
        self._reads = reads
        self._readers = readers
        self._samples = samples
        self._poller = poller
        self._summary_every_s = summary_every_s

    def collect(self) -> dict[str, Sample]:
        """Every metric (docs/metrics.md lists them); reads memory only, never the store."""
        c = self._counters
        out: dict[str, Sample] = {}

        def put(name: str, kind: str, help_text: str, value: float, /, **labels: str) -> None:
            out[labelled(name, **labels)] = (kind, help_text, value)

        for (reader, antenna), n in c.reads_by_antenna.items():
            put(
                "dockwatch_reads_total",
                "counter",
                "Tag reads received, by reader and antenna",
                n,
                reader=reader,
                antenna=str(antenna),
            )
        health = self._antenna_health
        down = health.down()
        since_read = health.seconds_since_read(time.monotonic())
        for (reader, antenna), rate in health.rates().items():
            labels = {"reader": reader, "antenna": str(antenna)}
            put(
                "dockwatch_antenna_read_rate",
                "gauge",
                "Reads per second of a portal antenna over the last debounce.antenna window",
                rate,
                **labels,
            )
            put(
                "dockwatch_antenna_up",
                "gauge",
                "0 while a portal antenna is down (antenna_down alert), else 1",
                float((reader, antenna) not in down),
                **labels,
            )
            put(
                "dockwatch_antenna_seconds_since_read",
                "gauge",
                "Seconds since a portal antenna last read a tag (or since start)",
                since_read[reader, antenna],
                **labels,
            )
        put(
            "dockwatch_read_queue_batches",
            "gauge",
            "Read batches waiting in the hand-off queue from the LLRP readers to the portal engine",
            self._reads.qsize(),
        )
        put(
            "dockwatch_read_queue_capacity_batches",
            "gauge",
            "Capacity of the read hand-off queue (when full, a reader drops the oldest batch)",
            self._reads.maxsize,
        )
        for reader_id, n in c.unexpected_antenna.items():
            put(
                "dockwatch_reader_unexpected_antenna_reads_total",
                "counter",
                "Tag reads on antennas the reader is not configured with (ignored)",
                n,
                reader=reader_id,
            )
        for reader_id, adapter in self._readers.items():
            stats = adapter.stats
            if stats.clock_skew_s is not None:
                put(
                    "dockwatch_reader_clock_skew_seconds",
                    "gauge",
                    "The reader's UTC clock minus the gateway's, at its last connection",
                    stats.clock_skew_s,
                    reader=reader_id,
                )
            put(
                "dockwatch_reader_dropped_batches_total",
                "counter",
                "Read batches dropped because the hand-off queue was full",
                stats.dropped_batches,
                reader=reader_id,
            )
            put(
                "dockwatch_reader_dropped_reads_total",
                "counter",
                "Tag reads in the batches dropped because the hand-off queue was full",
                stats.dropped_reads,
                reader=reader_id,
            )
            put(
                "dockwatch_reader_malformed_reads_total",
                "counter",
                "Tag report entries dropped as malformed (no antenna, EPC or timestamp)",
                stats.malformed_reads,
                reader=reader_id,
            )
            put(
                "dockwatch_reader_reconnects_total",
                "counter",
                "LLRP connection attempts after the first one (reconnects, failed or not)",
                stats.reconnects,
                reader=reader_id,
            )
        put(
            "dockwatch_shelf_queue_samples",
            "gauge",
            "Weight samples waiting for the shelf engine",
            len(self._samples),
        )
        put(
            "dockwatch_shelf_queue_capacity_samples",
            "gauge",
            "Capacity of the weight sample queue (when full, the oldest sample is dropped)",
            self._samples.maxsize,
        )
        put(
            "dockwatch_shelf_samples_dropped_total",
            "counter",
            "Weight samples dropped because their queue was full",
            self._samples.dropped,
        )
        for kind, n in c.movements_by_kind.items():
            put("dockwatch_movements_total", "counter", "Movements recorded, by kind", n, kind=kind)
        put(
            "dockwatch_duplicates_total",
            "counter",
            "Movements already recorded (same movement_id)",
            c.duplicates,
        )
        put("dockwatch_alerts_total", "counter", "Alerts raised or cleared", c.alerts)
        put("dockwatch_alerts_active", "gauge", "Alerts active now", len(self._recorder.active))
        put(
            "dockwatch_last_seq",
            "gauge",
            "Highest movement seq in the store",
            self._recorder.last_seq,
        )
        put(
            "dockwatch_tracked_tags",
            "gauge",
            "Tags the portal engine tracks",
            self._portal.tracked_tags,
        )
        portal = self._portal.stats
        for outcome in ("crossings", "repeats_suppressed", "one_sided", "low_confidence"):
            put(
                "dockwatch_portal_passes_total",
                "counter",
                "Door passes decided since start, by outcome (crossings, repeats_suppressed: "
                "a crossing to where the tag already was, one_sided, low_confidence)",
                getattr(portal, outcome),
                outcome=outcome,
            )
        now = time.monotonic()
        for sink, connected in self._health.connected().items():
            put(
                "dockwatch_sink_connected",
                "gauge",
                "1 while the sink is connected",
                float(connected),
                sink=sink,
            )
            lag, lag_s, _ = self._health.lag(sink, now)
            put(
                "dockwatch_sink_lag",
                "gauge",
                "Movements recorded but not yet acknowledged by the sink",
                lag,
                sink=sink,
            )
            put(
                "dockwatch_sink_lag_seconds",
                "gauge",
                "Age of the oldest movement the sink has not acknowledged (0 when caught up)",
                lag_s,
                sink=sink,
            )
        for device, status in self._devices.devices.items():
            put(
                "dockwatch_device_up",
                "gauge",
                "1 online, 0.5 degraded, 0 offline",
                {DeviceState.ONLINE: 1.0, DeviceState.DEGRADED: 0.5}.get(status.state, 0.0),
                device=device,
            )
            for state in DeviceState:
                put(
                    "dockwatch_device_state",
                    "gauge",
                    "1 for the state the device is in, 0 for the others",
                    float(status.state is state),
                    device=device,
                    type=status.device_type,
                    state=state,
                )
        if self._poller is not None:
            for endpoint, trips in self._poller.round_trips().items():
                help_text = "Round-trip time of successful Modbus read requests, by device"
                put(
                    "dockwatch_modbus_rtt_seconds_sum",
                    "summary",
                    help_text,
                    trips.total_s,
                    endpoint=endpoint,
                )
                put(
                    "dockwatch_modbus_rtt_seconds_count",
                    "summary",
                    help_text,
                    trips.count,
                    endpoint=endpoint,
                )
                put(
                    "dockwatch_modbus_rtt_last_seconds",
                    "gauge",
                    "Round-trip time of the last successful Modbus read request, by device",
                    trips.last_s,
                    endpoint=endpoint,
                )
        help_text = "Time the edge store took to commit one batch of movements (record)"
        put("dockwatch_store_record_seconds_sum", "summary", help_text, c.store_record.total_s)
        put("dockwatch_store_record_seconds_count", "summary", help_text, c.store_record.count)
        put(
            "dockwatch_store_errors_total",
            "counter",
            "Calls of the gateway to the edge store that failed",
            self._recorder.worker.errors,
        )
        put(
            "dockwatch_ready",
            "gauge",
            "1 when /readyz answers 200 (ready), else 0",
            float(self._health.not_ready() is None),
        )
        return out

    def starting(self, cfg: GatewayConfig, sinks: Sequence[str]) -> None:
        """The one line that says what this gateway is about to run."""
        log.info(
            "gateway %s starting: %s reader(s), %s portal(s), %s shelf(ves), sinks: %s",
            cfg.site.id,
            len(cfg.readers),
            len(cfg.portals),
            len(cfg.shelves),
            ", ".join(sinks) or "none",
        )

    async def summary(self) -> None:
        while True:
            await asyncio.sleep(self._summary_every_s)
            c = self._counters
            worker = self._recorder.worker
            last = self._recorder.last_seq = await worker.call(worker.store.last_seq)
            cursors = await worker.call(worker.store.cursors)
            self._health.cursors_seen(cursors)
            backlog = " ".join(f"{k}_backlog={last - v}" for k, v in sorted(cursors.items()))
            antennas: dict[str, list[str]] = {}
            for (reader, antenna), n in sorted(c.reads_by_antenna.items()):
                antennas.setdefault(reader, []).append(f"{antenna}:{n}")
            for reader, n in c.unexpected_antenna.items():
                if n:
                    antennas.setdefault(reader, []).append(f"unexpected:{n}")
            log.info(
                "summary: reads=%s movements=%s duplicates=%s alerts=%s tracked_tags=%s %s%s",
                c.reads,
                c.movements,
                c.duplicates,
                c.alerts,
                self._portal.tracked_tags,
                backlog,
                "".join(f" reads[{r}]={' '.join(a)}" for r, a in antennas.items()),
            )
