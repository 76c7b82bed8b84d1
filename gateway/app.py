"""The composition root: the one place that builds the running gateway's parts and runs them.

Data flows one way (docs/architecture.md): devices -> pipelines (pure engines) -> the recorder
(the edge store, then every sink's outbox cursor). Each part of ``gateway/runtime`` is built
here with its own slice of the config and runs under one
:class:`~gateway.runtime.supervision.Supervisor` in one TaskGroup. ``Gateway.run`` returns only
when cancelled (SIGINT/SIGTERM in ``dockwatch run``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

from edge_store.records import RecordResult
from gateway.adapters.epcis import EpcisRelay
from gateway.adapters.grpc_api import EdgeApiServer, RuntimeStatus
from gateway.adapters.metrics import MetricsServer
from gateway.adapters.modbus import ModbusShelfPoller
from gateway.adapters.sink import Sink
from gateway.config import GatewayConfig, resolve_secret
from gateway.console.feed import ConsoleFeed
from gateway.console.wiring import build_console
from gateway.domain.antenna import AntennaHealth
from gateway.domain.epcis import ReceiptClosed
from gateway.domain.model import Alert, Movement, TagRead
from gateway.runtime.counters import Counters
from gateway.runtime.devices import DeviceBoard
from gateway.runtime.doors import DoorCounters, DoorPipeline, DoorPorts, portal_specs
from gateway.runtime.health import CHECK_EVERY_S, STORE_CHECK_TIMEOUT_S, Health
from gateway.runtime.listeners import Listeners, build_listeners, preflight
from gateway.runtime.readers import ReaderSet
from gateway.runtime.receiving import ReceivingWatcher, load_expected
from gateway.runtime.recorder import Recorder, StoreWorker, open_store
from gateway.runtime.shelves import ShelfPipeline, shelf_poller
from gateway.runtime.sinks import build_sinks, lag_thresholds, publish_pass
from gateway.runtime.site import catalog_of, catalog_records, device_tls, epcis_site
from gateway.runtime.supervision import Supervisor
from gateway.runtime.telemetry import Telemetry

__all__ = ["Gateway", "catalog_of", "device_tls", "epcis_site", "load_expected", "preflight"]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Gateway:
    """The running gateway. ``await Gateway(config).run()``; cancel it to stop."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        utcnow: Callable[[], datetime] = utc_now,
        environ: dict[str, str] | None = None,
        check_every_s: float = CHECK_EVERY_S,
        check_timeout_s: float = STORE_CHECK_TIMEOUT_S,
    ) -> None:
        if not check_every_s > 0:
            raise ValueError(f"check_every_s must be > 0, got {check_every_s}")
        self.config, self._utcnow, self._environ = config, utcnow, environ
        self._checks = {"check_every_s": check_every_s, "check_timeout_s": check_timeout_s}
        self.started_at = utcnow()
        self.ready = asyncio.Event()
        self.counters = Counters()
        self.counters.watch_antennas({r.id: tuple(r.antennas) for r in config.readers})
        self.catalog = catalog_of(config)
        specs = portal_specs(config)
        self.antenna_health = AntennaHealth(specs, config.debounce.antenna, now=time.monotonic())
        store = config.store
        self.reader_set = ReaderSet(
            config.readers,
            journal_path=store.journal_path,
            journal_segment_s=store.journal_segment_s,
        )
        self.reads, self.readers = self.reader_set.reads, self.reader_set.adapters
        self.console_feed = ConsoleFeed(utcnow=utcnow)
        """What the operator console shows live: told what MQTT is told (docs/console.md)."""
        self.shelves = ShelfPipeline.from_config(
            config.shelves,
            config.catalog.items,
            config.debounce.shelf,
            record=self.record,
            raise_alert=self.raise_alert,
            taken=self._taken,
            on_sample=self.console_feed.sample,
            on_implausible=self._implausible,
        )
        self.shelf_poller: ModbusShelfPoller | None = None
        self._receiving = ReceivingWatcher.from_config(
            config.receiving.expected_file,
            catalog=self.catalog,
            idle_close_s=config.receiving.idle_close_s,
            raise_alert=self.raise_alert,
            utcnow=utcnow,
            on_closed=self._receipt_closed,
        )
        self.receiving = None if self._receiving is None else self._receiving.tracker
        self.doors = DoorPipeline.from_config(
            config,
            catalog=self.catalog,
            antenna_health=self.antenna_health,
            counters=DoorCounters(self.counters.reads_by_antenna, self.counters.unexpected_antenna),
            ports=DoorPorts(
                record=self.record,
                raise_alert=self.raise_alert,
                alert_active=lambda alert_id: alert_id in self._active_alerts,
                publish_pass=lambda portal, news: publish_pass(self.sinks, portal, news),
                write_gpo=self.reader_set.write_gpo,
                set_antenna_down=self.reader_set.set_antenna_down,
                receipt_progress=self.receiving.progress if self.receiving else None,
                reads_seen=self._reads_seen,
            ),
            now_us=self._now_us,
            utcnow=utcnow,
        )
        self.portal_engine = self.doors.engine
        self.supervisor = Supervisor()
        self.sinks: dict[str, Sink] = {}
        self.recorder: Recorder | None = None
        self.devices: DeviceBoard | None = None
        self.health: Health | None = None
        self.listeners: Listeners | None = None

    # -- what the parts, the console and the tests call (nothing happens before ``run``) -------

    @property
    def worker(self) -> StoreWorker | None:
        return None if self.recorder is None else self.recorder.worker

    @property
    def _active_alerts(self) -> set[str]:
        return set() if self.recorder is None else self.recorder.active

    @property
    def api(self) -> EdgeApiServer | None:
        return None if self.listeners is None else self.listeners.api

    @property
    def metrics(self) -> MetricsServer | None:
        return None if self.listeners is None else self.listeners.http

    async def record(self, movements: Sequence[Movement]) -> RecordResult[Movement] | None:
        return None if self.recorder is None else await self.recorder.record(movements)

    async def raise_alert(self, alert: Alert) -> None:
        if self.recorder is not None:
            await self.recorder.raise_alert(alert)

    def sync_status(self) -> dict[str, int]:
        return {"last_seq": 0} if self.health is None else self.health.sync_status()

    def _implausible(self, alert: Alert) -> None:
        if self.devices is not None:
            self.devices.implausible_weight(alert)

    def _taken(self, at: float) -> datetime:
        """A weight sample's monotonic time on the UTC clock (when it was taken)."""
        return self._utcnow() - timedelta(seconds=max(0.0, time.monotonic() - at))

    def _receipt_closed(self, closed: ReceiptClosed) -> None:
        """A completed expected receipt: its EPCIS closure event follows its movements'."""
        for sink in self.sinks.values():
            if isinstance(sink, EpcisRelay) and self.recorder is not None:
                sink.receipt_closed(closed, after_seq=self.recorder.last_seq)

    def _reads_seen(self, reads: Sequence[TagRead]) -> None:
        """Every batch of tag reads the door pipeline takes: counted, and shown live."""
        self.counters.reads += len(reads)
        self.console_feed.reads(reads)

    def _now_us(self) -> int:
        return int(self._utcnow().timestamp() * 1_000_000)

    # -- start, run, stop -----------------------------------------------------------------------

    def _build(self, worker: StoreWorker) -> tuple[Recorder, Health, DeviceBoard, Listeners]:
        """Every part that needs the open store, each from its slice of the config."""
        cfg, store, feed, utcnow = self.config, worker.store, self.console_feed, self._utcnow
        sinks = build_sinks(cfg, store, environ=self._environ, on_alert=self.raise_alert)
        self.sinks = {sink.name: sink for sink in sinks}
        recorder = Recorder(worker, counters=self.counters, sinks=sinks, feed=feed, utcnow=utcnow)
        health = Health(
            recorder,
            sinks=sinks,
            lag_alert_s=lag_thresholds(cfg, list(self.sinks)),
            restarting=self.supervisor.restarting,
            ready=self.ready,
            utcnow=utcnow,
            started=self.counters.started,
            **self._checks,
        )
        devices = DeviceBoard(recorder, sinks=sinks, feed=feed)
        self.recorder, self.devices, self.health = recorder, devices, health
        recorder.on_committed(health.committed)
        recorder.on_committed(lambda result: self.shelves.stock_changed(result.stock))
        if self._receiving is not None:
            recorder.on_committed(self._receiving.committed)
        self.reader_set.build(
            on_status=devices.report,
            on_antenna=self.doors.antenna_reported,
            on_gpi=self.doors.gpi_changed,
        )
        self.shelf_poller = shelf_poller(
            cfg.shelves,
            cfg.debounce.shelf,
            on_sample=self.shelves.samples.put,
            on_status=devices.report,
        )
        self.telemetry = Telemetry(
            counters=self.counters,
            recorder=recorder,
            health=health,
            devices=devices,
            portal=self.portal_engine,
            antenna_health=self.antenna_health,
            reads=self.reads,
            readers=self.readers,
            samples=self.shelves.samples,
            poller=self.shelf_poller,
        )
        listeners = self.listeners = Listeners(
            *build_listeners(
                cfg,
                store,
                environ=self._environ,
                collect=self.telemetry.collect,
                ready=health.not_ready,
                status=lambda: RuntimeStatus(self.started_at, health.connected()),
                console=build_console(self, utcnow=utcnow, environ=self._environ),
            )
        )
        recorder.on_notify(listeners.api.notify)
        health.on_serving(listeners.api.set_serving)
        return recorder, health, devices, listeners

    async def run(self) -> None:
        cfg = self.config
        password = resolve_secret(cfg.store.password, environ=self._environ)
        worker = await open_store(cfg.store.url, password, cfg.site.id, catalog_records(cfg))
        try:
            self.shelves.opened(await worker.call(worker.store.stock))
            active = await worker.call(worker.store.alerts, active_only=True)
            self.doors.restore(active)  # outages, low stock... clear when resolved
            recorder, health, devices, listeners = self._build(worker)
            recorder.active.update(alert.alert_id for alert in active)
            for cleared in self.shelves.cleared_at_start(active, self._utcnow()):
                await recorder.raise_alert(cleared)
            recorder.last_seq = await worker.call(worker.store.last_seq)
            health.started_after(recorder.last_seq, await worker.call(worker.store.cursors))
            await listeners.start()
            self.telemetry.starting(cfg, list(self.sinks))
            await self.reader_set.replay(
                self.portal_engine,
                worker=worker,
                last_seq=recorder.last_seq,
                horizon_s=cfg.debounce.portal.horizon_s,
                record=self.record,
            )
            await self._run(devices, health, listeners)
        finally:
            if self.health is not None:
                self.health.stopping = True
            if self.devices is not None:
                await self.devices.drain()  # the adapters' last word: record it
            if self.listeners is not None:
                await self.listeners.stop()
            self.reader_set.close()  # the readers' threads have been joined
            await asyncio.to_thread(worker.close)
            log.info("gateway %s stopped", self.config.site.id)

    async def _run(self, devices: DeviceBoard, health: Health, listeners: Listeners) -> None:
        cfg, sv = self.config, self.supervisor
        async with asyncio.TaskGroup() as tg:
            sv.start(tg, "device status", devices.run)
            for reader_id, adapter in self.readers.items():
                sv.start(tg, f"reader {reader_id}", adapter.run)
            if cfg.readers:
                sv.start(tg, "portal engine", partial(self.doors.run_reads, self.reads))
                sv.start(tg, "portal clock", self.doors.run_clock)
            if self.shelf_poller is not None:
                sv.start(tg, "shelf poller", self.shelf_poller.run)
                sv.start(tg, "shelf engine", self.shelves.run)
            if self._receiving is not None:
                sv.start(tg, "receiving", self._receiving.run)
            for name, sink in self.sinks.items():
                sv.start(tg, f"{name} sink", sink.run)
            for name, serve in listeners.parts():
                sv.start(tg, name, serve)
            sv.start(tg, "summary", self.telemetry.summary)
            sv.start(tg, "store and sync check", health.run)
            self.ready.set()
