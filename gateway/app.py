"""The composition root: the one place that names concrete adapters and wires them together.

Data flows one way (see DESIGN.md)::

    LlrpReaderAdapter --ReadBatch--> PortalEngine --Movement--\
                                                               >-- record() --> EdgeStore
    ModbusShelfPoller --WeightSample--> ShelfEngine ----------/        |
                                                                       v
                                         MqttSink (relay + retained state), CentralRelay

Every movement is committed to the store (movement, stock level and outbox position in one
transaction) before any sink sees it; sinks read the outbox with their own cursors. The gateway's
own store calls run on ONE worker thread, so its writes keep their order and the event loop never
blocks on I/O (the sinks and the API read through the default executor).

A store that fails (disk full, PostgreSQL restarting) does not lose movements: ``record`` keeps
retrying the same batch with capped backoff while the engines wait, and a replay is harmless
because ``movement_id`` makes recording idempotent.

Each long-running part runs under :func:`_supervised`: a bug that escapes a part is logged with its
traceback and the part restarts after a short pause, so one broken device or sink never takes the
gateway down. ``Gateway.run`` returns only when cancelled (SIGINT/SIGTERM in ``dockwatch run``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import ParamSpec, TypeVar

import yaml

from edge_store.engine import with_password
from edge_store.records import ItemRecord, LocationRecord, RecordResult
from edge_store.repository import EdgeStore
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.central import CentralRelay
from gateway.adapters.grpc_api import EdgeApiServer, RuntimeStatus
from gateway.adapters.llrp import LlrpReaderAdapter, ReadBatch
from gateway.adapters.metrics import MetricsServer, labelled
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
)
from gateway.adapters.mqtt import MqttSink
from gateway.config import GatewayConfig, ShelfConfig, load_config, resolve_secret
from gateway.domain.catalog import Catalog, CatalogItem
from gateway.domain.model import (
    Alert,
    AlertKind,
    DeviceId,
    DeviceState,
    DeviceStatus,
    LocationId,
    Movement,
    Severity,
    Sku,
    StockLevel,
)
from gateway.domain.portal import PortalEngine, PortalSpec
from gateway.domain.receiving import ExpectedReceipt, ReceivingTracker, parse_expected
from gateway.domain.shelf import ShelfEngine
from gateway.domain.stock import LowStockMonitor
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.logs import configure_logging, redact

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

READ_QUEUE_BATCHES = 1024
"""Hand-off queue between the LLRP adapters and the portal engine (adapters drop the OLDEST
batch when it is full and count it: see docs/llrp.md)."""
TICK_S = 0.25
"""How often the portal engine's clock advances (closes idle passes)."""
RESTART_PAUSE_S = 1.0
SUMMARY_EVERY_S = 30.0


EXPECTED_POLL_S = 5.0
"""How often the expected-receipts file is checked for changes and idle receipts completed."""


def load_expected(path: Path) -> list[ExpectedReceipt]:
    """Expected receipts from a YAML or JSON file; ValueError names the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    return [] if data is None else parse_expected(data)  # an empty file expects nothing


def _warn_cleartext(key: str, host: str, what: str) -> None:
    """A secret sent without TLS: fine on loopback, worth one warning anywhere else."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    if host == "localhost":
        return
    log.warning("%s: %s goes to %s without TLS; configure tls to protect it", key, what, host)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _path(value: object | None) -> str | None:
    return None if value is None else str(value)


@dataclass(slots=True)
class Counters:
    """What the gateway did since it started, for the periodic summary line."""

    reads: int = 0
    reads_by_antenna: dict[tuple[str, int], int] = field(default_factory=dict)
    movements: int = 0
    duplicates: int = 0
    alerts: int = 0
    started: float = field(default_factory=time.monotonic)


class StoreWorker:
    """Runs EdgeStore calls on one thread: writes are serialised and the loop never blocks."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-store")

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()


async def _supervised(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Run ``factory()`` for ever: a crash is logged with its traceback and the part restarts."""
    while True:
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:  # the top of a task: log, pause, restart (STYLE.md rule 3)
            log.exception("%s crashed; restarting in %.0f s", name, RESTART_PAUSE_S)
        else:
            log.warning("%s stopped unexpectedly; restarting in %.0f s", name, RESTART_PAUSE_S)
        await asyncio.sleep(RESTART_PAUSE_S)


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
        )
        for p in config.portals
    ]


def catalog_of(config: GatewayConfig) -> Catalog:
    return Catalog(
        CatalogItem(
            sku=Sku(i.sku),
            gtin=i.gtin,
            name=i.name,
            pack_size=i.pack_size,
            unit_weight_g=i.unit_weight_g,
            weight_tolerance_g=i.weight_tolerance_g,
            reorder_point=i.reorder_point,
        )
        for i in config.catalog.items
    )


def shelf_point(shelf: ShelfConfig) -> ShelfPoint:
    weight = RegisterField(
        table=RegisterTable(shelf.weight.table),
        address=shelf.weight.address,
        type=ValueType(shelf.weight.type),
        word_order=WordOrder(shelf.weight.word_order),
        scale=shelf.weight.grams_per_count,
    )
    status = None
    if shelf.status is not None:
        status = StatusWord(
            table=RegisterTable(shelf.status.table),
            address=shelf.status.address,
            stable_bit=shelf.status.stable_bit,
            overload_bit=shelf.status.overload_bit,
            error_bit=shelf.status.error_bit,
        )
    return ShelfPoint(
        shelf_id=DeviceId(shelf.id),
        host=shelf.modbus.host,
        port=shelf.modbus.port,
        unit=shelf.modbus.unit,
        weight=weight,
        status=status,
    )


class Gateway:
    """The running gateway. ``await Gateway(config).run()``; cancel it to stop."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        utcnow: Callable[[], datetime] = utc_now,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self._utcnow = utcnow
        self._environ = environ
        self.counters = Counters()
        self.catalog = catalog_of(config)
        self.portal_engine = PortalEngine(
            portals=portal_specs(config), catalog=self.catalog, params=config.debounce.portal
        )
        self.shelf_engines: dict[str, ShelfEngine] = {}
        for shelf in config.shelves:
            item = config.item(shelf.sku)
            if item.unit_weight_g is None:  # config validation refuses this; keep mypy honest
                raise ConfigError(f"shelves[{shelf.id}]: item {shelf.sku} has no unit_weight_g")
            self.shelf_engines[shelf.id] = ShelfEngine(
                shelf.id,
                location=LocationId(shelf.location),
                sku=Sku(shelf.sku),
                unit_weight_g=item.unit_weight_g,
                tolerance_g=(
                    0.1 * item.unit_weight_g
                    if item.weight_tolerance_g is None
                    else item.weight_tolerance_g
                ),
                pick_to=LocationId(shelf.pick_to),
                restock_from=LocationId(shelf.restock_from),
                params=config.debounce.shelf,
            )
        self._shelf_at = {(s.location, s.sku): s.id for s in config.shelves}
        self.low_stock = LowStockMonitor(
            {
                Sku(i.sku): i.reorder_point
                for i in config.catalog.items
                if i.reorder_point is not None
            },
            hysteresis=config.debounce.shelf.low_stock_hysteresis,
        )
        self.receiving: ReceivingTracker | None = None
        if config.receiving.expected_file is not None:
            self.receiving = ReceivingTracker(
                catalog=self.catalog, idle_close_s=config.receiving.idle_close_s
            )
        self._expected_mtime: float | None = None
        self.reads: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=READ_QUEUE_BATCHES)
        self.samples = SampleQueue()
        self.mqtt: MqttSink | None = None
        self.central: CentralRelay | None = None
        self.api: EdgeApiServer | None = None
        self.metrics: MetricsServer | None = None
        self.started_at = utcnow()
        self._devices: dict[str, DeviceState] = {}
        self._last_seq = 0
        self._cursors: dict[str, int] = {}
        self.worker: StoreWorker | None = None
        self.ready = asyncio.Event()
        self._record_lock = asyncio.Lock()
        self._active_alerts: set[str] = set()
        self._statuses: asyncio.Queue[DeviceStatus] = asyncio.Queue()
        self._stopping = False

    # -- start-up -----------------------------------------------------------------------------

    async def _open_store(self) -> StoreWorker:
        url = self.config.store.url
        log.info("opening edge store %s (upgrading its schema)", redact(url))
        secret = self.config.store.password
        password = resolve_secret(secret, environ=self._environ) if secret else None
        store = await asyncio.to_thread(
            EdgeStore.open, with_password(url, password), site=self.config.site.id
        )
        worker = StoreWorker(store)
        items = [
            ItemRecord(
                sku=i.sku,
                name=i.name,
                pack_size=i.pack_size,
                gtin=i.gtin,
                unit_weight_g=i.unit_weight_g,
                reorder_point=i.reorder_point,
            )
            for i in self.config.catalog.items
        ]
        locations = [LocationRecord(id=loc.id, kind=loc.kind) for loc in self.config.locations]
        await worker.call(store.sync_catalog, items, locations)
        levels = await worker.call(store.stock)
        # A shelf the store has no level for holds nothing as far as the store knows; the
        # engine's reconciliation then sets the level from the weight (an adjustment).
        for shelf in self.config.shelves:
            self.shelf_engines[shelf.id].set_on_hand(0)
        for level in levels:
            shelf_id = self._shelf_at.get((level.location, level.sku))
            if shelf_id is not None:
                self.shelf_engines[shelf_id].set_on_hand(level.on_hand)
            self.low_stock.observe(level)
        # Alerts still open from a previous run (outages, low stock) clear when resolved.
        for alert in await worker.call(store.alerts, active_only=True):
            self._active_alerts.add(alert.alert_id)
        return worker

    def _build_sinks(self, store: EdgeStore) -> None:
        mqtt = self.config.sinks.mqtt
        if mqtt is not None:
            password = None
            if mqtt.password is not None:
                password = resolve_secret(mqtt.password, environ=self._environ)
            tls = mqtt.tls
            self.mqtt = MqttSink(
                store=store,
                site=self.config.site.id,
                url=mqtt.url,
                topic_prefix=mqtt.topic_prefix,
                qos=mqtt.qos,
                client_id=mqtt.client_id,
                protocol=mqtt.protocol,
                keepalive_s=mqtt.keepalive_s,
                inflight_max=mqtt.inflight_max,
                username=mqtt.username,
                password=password,
                tls_ca_file=_path(tls.ca_file) if tls else None,
                tls_cert_file=_path(tls.cert_file) if tls else None,
                tls_key_file=_path(tls.key_file) if tls else None,
                tls_insecure=tls.insecure if tls else False,
                reconnect_initial_s=mqtt.reconnect.initial_s,
                reconnect_max_s=mqtt.reconnect.max_s,
            )
        if mqtt is not None and mqtt.password is not None and not mqtt.use_tls:
            _warn_cleartext("sinks.mqtt", mqtt.host, "the MQTT password")
        central = self.config.sinks.central
        if central is not None and central.token is not None and central.tls is None:
            _warn_cleartext("sinks.central", central.host, "the central API token")
        if central is not None:
            try:
                self.central = CentralRelay.from_config(central, store, site=self.config.site.id)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"sinks.central: {exc}") from exc

    def _build_api(self, store: EdgeStore) -> None:
        api = self.config.api
        token = resolve_secret(api.token, environ=self._environ) if api.token else None
        self.api = EdgeApiServer.from_config(
            api, store, site=self.config.site.id, token=token, status=self._runtime_status
        )
        if api.metrics_listen is not None:
            # /healthz answers 503 until every part has started (container health checks).
            self.metrics = MetricsServer(
                api.metrics_listen, self._collect_metrics, token, health=self.ready.is_set
            )

    def _sinks_connected(self) -> dict[str, bool]:
        return {
            name: sink.connected
            for name, sink in (("mqtt", self.mqtt), ("central", self.central))
            if sink is not None
        }

    def _acked(self, sink: str) -> int:
        """The sink's acknowledged position: live from the relay, else its stored cursor."""
        if sink == "mqtt" and self.mqtt is not None:
            return self.mqtt.relay.acked_seq
        if sink == "central" and self.central is not None:
            return self.central.acked_seq
        return self._cursors.get(sink, 0)

    def _runtime_status(self) -> RuntimeStatus:
        return RuntimeStatus(self.started_at, self._sinks_connected())

    def _collect_metrics(self) -> dict[str, tuple[str, str, float]]:
        c = self.counters
        out: dict[str, tuple[str, str, float]] = {
            "dockwatch_reads_total": ("counter", "Tag reads received from readers", c.reads),
            "dockwatch_movements_total": ("counter", "Movements recorded", c.movements),
            "dockwatch_duplicates_total": (
                "counter",
                "Movements already recorded (same movement_id)",
                c.duplicates,
            ),
            "dockwatch_alerts_total": ("counter", "Alerts raised or cleared", c.alerts),
            "dockwatch_last_seq": ("gauge", "Highest movement seq in the store", self._last_seq),
            "dockwatch_tracked_tags": (
                "gauge",
                "Tags the portal engine tracks",
                self.portal_engine.tracked_tags,
            ),
        }
        for sink, connected in self._sinks_connected().items():
            out[labelled("dockwatch_sink_connected", sink=sink)] = (
                "gauge",
                "1 while the sink is connected",
                float(connected),
            )
            lag = self._last_seq - self._acked(sink)
            out[labelled("dockwatch_sink_lag", sink=sink)] = (
                "gauge",
                "Movements recorded but not yet acknowledged by the sink",
                lag,
            )
        for device, state in self._devices.items():
            out[labelled("dockwatch_device_up", device=device)] = (
                "gauge",
                "1 online, 0.5 degraded, 0 offline",
                {DeviceState.ONLINE: 1.0, DeviceState.DEGRADED: 0.5}.get(state, 0.0),
            )
        return out

    # -- recording ----------------------------------------------------------------------------

    async def record(self, movements: Sequence[Movement]) -> RecordResult | None:
        """Commit movements, then tell the sinks and the engines what changed."""
        if not movements or self.worker is None:
            return None
        worker = self.worker
        async with self._record_lock:
            result = await self._record_until_stored(worker, movements)
        self.counters.movements += len(result.recorded)
        if result.recorded:
            self._last_seq = result.recorded[-1].seq
        self.counters.duplicates += len(result.duplicates)
        for recorded in result.recorded:
            m = recorded.movement
            log.info(
                "movement seq=%s %s %s x%s %s -> %s (%s %s, confidence %.2f)",
                recorded.seq,
                m.kind,
                m.sku,
                m.quantity,
                m.from_location,
                m.to_location,
                m.source_type,
                m.source_id,
                m.confidence,
                extra={"movement_id": m.movement_id},
            )
        if self.mqtt is not None:
            self.mqtt.notify()
            self.mqtt.publish_stock(result.stock)
        if self.central is not None:
            self.central.notify()
        if self.api is not None:
            self.api.notify()
        await self._stock_changed(result.stock)
        if self.receiving is not None and result.recorded:
            moved = [r.movement for r in result.recorded]
            for alert in self.receiving.observe(moved, self._utcnow()):
                await self.raise_alert(alert)
        return result

    async def _record_until_stored(
        self, worker: StoreWorker, movements: Sequence[Movement]
    ) -> RecordResult:
        """Record, retrying with capped backoff for as long as the store refuses: the engines
        cannot derive these movements again, so giving up would lose them."""
        backoff = Backoff(BackoffPolicy(initial_s=0.2, max_s=10.0))
        failing_since: float | None = None
        while True:
            try:
                result = await worker.call(worker.store.record, movements, now=self._utcnow())
            except StoreError as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.error(  # noqa: TRY400 - the StoreError names operation and cause
                        "cannot record %s movement(s); retrying until the store takes them: %s",
                        len(movements),
                        exc,
                    )
                await asyncio.sleep(backoff.next_delay(time.monotonic()))
                continue
            if failing_since is not None:
                log.info(
                    "edge store recording again after %.1f s", time.monotonic() - failing_since
                )
            return result

    async def _stock_changed(self, levels: Iterable[StockLevel]) -> None:
        for level in levels:
            shelf_id = self._shelf_at.get((level.location, level.sku))
            if shelf_id is None:
                continue  # low stock is a shelf concept: docks and yards are not replenished
            self.shelf_engines[shelf_id].set_on_hand(level.on_hand)
            alert = self.low_stock.observe(level)
            if alert is not None:
                await self.raise_alert(alert)

    async def raise_alert(self, alert: Alert) -> None:
        if alert.active:
            self._active_alerts.add(alert.alert_id)
        elif alert.alert_id in self._active_alerts:
            self._active_alerts.discard(alert.alert_id)
        else:
            return  # clearing what was never raised: nothing to store, publish or say
        self.counters.alerts += 1
        log.log(
            logging.WARNING if alert.active else logging.INFO,
            "alert %s %s: %s",
            alert.kind,
            "raised" if alert.active else "cleared",
            alert.message,
        )
        if self.worker is not None:
            await self.worker.call(self.worker.store.upsert_alert, alert)
        if self.mqtt is not None:
            self.mqtt.publish_alert(alert)

    def device_status(self, status: DeviceStatus) -> None:
        """Adapters call this (on the loop thread) when a device changes state.

        Statuses are handled in arrival order by one task (``_status_loop``); the queue is
        unbounded because it holds state *changes* only, a handful per device at most."""
        self._statuses.put_nowait(status)

    async def _status_loop(self) -> None:
        while True:
            await self._device_status(await self._statuses.get())

    async def _device_status(self, status: DeviceStatus) -> None:
        self._devices[status.device_id] = status.state
        if self.worker is not None:
            await self.worker.call(self.worker.store.set_device_status, status)
        if self._stopping:
            return  # devices go offline because WE stop: a status, not an outage to alert on
        if self.mqtt is not None:
            self.mqtt.publish_device_status(status)
        down = status.state is DeviceState.OFFLINE
        alert_id = f"{AlertKind.DEVICE_DOWN}:{status.device_id}"
        if down == (alert_id in self._active_alerts):
            return  # only a change of up/down is an alert (degraded is a status, not an outage)
        await self.raise_alert(
            Alert(
                alert_id=alert_id,
                kind=AlertKind.DEVICE_DOWN,
                severity=Severity.CRITICAL if down else Severity.INFO,
                subject=status.device_id,
                message=f"{status.device_type} {status.device_id} is {status.state}"
                + (f": {status.detail}" if status.detail else ""),
                raised_at=status.since,
                active=down,
            )
        )

    # -- the parts ------------------------------------------------------------------------------

    async def _portal_loop(self) -> None:
        engine = self.portal_engine
        while True:
            batch = await self.reads.get()
            self.counters.reads += len(batch.reads)
            by_antenna = self.counters.reads_by_antenna
            for read in batch.reads:
                key = (read.reader_id, read.antenna)
                by_antenna[key] = by_antenna.get(key, 0) + 1
            crossings = engine.feed(batch.reads, self._now_us())
            if crossings:
                await self.record(engine.movements(crossings))

    async def _portal_ticker(self) -> None:
        engine = self.portal_engine
        while True:
            await asyncio.sleep(TICK_S)
            crossings = engine.advance(self._now_us())
            if crossings:
                await self.record(engine.movements(crossings))

    async def _shelf_loop(self) -> None:
        while True:
            sample = await self.samples.get()
            engine = self.shelf_engines.get(sample.shelf_id)
            if engine is None:
                continue
            movements: list[Movement] = []
            for event in engine.feed(sample, self._utcnow()):
                if isinstance(event, Movement):
                    movements.append(event)
                else:
                    await self.raise_alert(event)
            if movements:
                await self.record(movements)

    async def _receiving_loop(self) -> None:
        """Loads new expected receipts when the file changes; completes idle receipts."""
        tracker = self.receiving
        path = self.config.receiving.expected_file
        assert tracker is not None
        assert path is not None
        while True:
            await self._load_expected(tracker, path)
            for alert in tracker.advance(self._utcnow()):
                await self.raise_alert(alert)
            await asyncio.sleep(EXPECTED_POLL_S)

    async def _load_expected(self, tracker: ReceivingTracker, path: Path) -> None:
        try:
            mtime = (await asyncio.to_thread(path.stat)).st_mtime
        except OSError as exc:
            if self._expected_mtime is not None:
                log.warning("expected receipts file %s unreadable: %s", path, exc)
                self._expected_mtime = None
            return
        if mtime == self._expected_mtime:
            return
        self._expected_mtime = mtime
        try:
            receipts = await asyncio.to_thread(load_expected, path)
        except ValueError as exc:
            log.error("expected receipts file %s ignored: %s", path, exc)  # noqa: TRY400
            return
        known = {status.receipt_id for status in tracker.receipts}
        new = [r for r in receipts if r.receipt_id not in known]
        try:
            tracker.add_expected(new)
        except ValueError as exc:
            log.error("expected receipts file %s ignored: %s", path, exc)  # noqa: TRY400
            return
        if new:
            log.info("loaded %s expected receipt(s) from %s", len(new), path)

    async def _summary(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_EVERY_S)
            c = self.counters
            backlog = ""
            if self.worker is not None:
                store = self.worker.store
                last = self._last_seq = await self.worker.call(store.last_seq)
                cursors = self._cursors = await self.worker.call(store.cursors)
                backlog = " ".join(f"{k}_backlog={last - v}" for k, v in sorted(cursors.items()))
            antennas: dict[str, list[str]] = {}
            for (reader, antenna), n in sorted(c.reads_by_antenna.items()):
                antennas.setdefault(reader, []).append(f"{antenna}:{n}")
            log.info(
                "summary: reads=%s movements=%s duplicates=%s alerts=%s tracked_tags=%s %s%s",
                c.reads,
                c.movements,
                c.duplicates,
                c.alerts,
                self.portal_engine.tracked_tags,
                backlog,
                "".join(f" reads[{r}]={' '.join(a)}" for r, a in antennas.items()),
            )

    def _now_us(self) -> int:
        return int(self._utcnow().timestamp() * 1_000_000)

    async def run(self) -> None:
        self.worker = await self._open_store()
        try:
            await self._run(self.worker)
        finally:
            self._stopping = True
            while not self._statuses.empty():  # the adapters' last word: record it
                await self._device_status(self._statuses.get_nowait())
            if self.metrics is not None:
                await self.metrics.stop()
            if self.api is not None:
                await self.api.stop()
            await asyncio.to_thread(self.worker.close)
            log.info("gateway %s stopped", self.config.site.id)

    async def _run(self, worker: StoreWorker) -> None:
        store = worker.store
        self._build_sinks(store)
        self._build_api(store)
        cfg = self.config
        self._last_seq = await worker.call(store.last_seq)
        self._cursors = await worker.call(store.cursors)
        # Listening sockets first: a port already taken fails start-up, not a task later on.
        assert self.api is not None
        await self.api.start()
        if self.metrics is not None:
            await self.metrics.start()
        log.info(
            "gateway %s starting: %s reader(s), %s portal(s), %s shelf(ves), sinks: %s",
            cfg.site.id,
            len(cfg.readers),
            len(cfg.portals),
            len(cfg.shelves),
            ", ".join(
                n for n, s in (("mqtt", self.mqtt), ("central", self.central)) if s is not None
            )
            or "none",
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_supervised("device status", self._status_loop))
            for reader in cfg.readers:
                adapter = LlrpReaderAdapter(
                    reader_id=reader.id,
                    host=reader.host,
                    port=reader.port,
                    antennas=reader.antennas,
                    out=self.reads,
                    on_status=self.device_status,
                    backoff=Backoff(
                        BackoffPolicy(
                            initial_s=reader.reconnect.initial_s,
                            max_s=reader.reconnect.max_s,
                        )
                    ),
                    keepalive_s=reader.keepalive_s,
                    connect_timeout_s=reader.connect_timeout_s,
                    report_every_ms=reader.report_every_ms,
                    tx_power_dbm=reader.tx_power_dbm,
                )
                tg.create_task(_supervised(f"reader {reader.id}", adapter.run))
            if cfg.readers:
                tg.create_task(_supervised("portal engine", self._portal_loop))
                tg.create_task(_supervised("portal clock", self._portal_ticker))
            if cfg.shelves:
                timeouts = {s.modbus.timeout_s for s in cfg.shelves}
                poller = ModbusShelfPoller(
                    [shelf_point(s) for s in cfg.shelves],
                    on_sample=self.samples.put,
                    on_status=self.device_status,
                    settings=PollerSettings(
                        poll_interval_s=cfg.debounce.shelf.poll_interval_s,
                        timeout_s=max(timeouts),
                    ),
                )
                tg.create_task(_supervised("shelf poller", poller.run))
                tg.create_task(_supervised("shelf engine", self._shelf_loop))
            if self.receiving is not None:
                tg.create_task(_supervised("receiving", self._receiving_loop))
            if self.mqtt is not None:
                tg.create_task(_supervised("mqtt sink", self.mqtt.run))
            if self.central is not None:
                tg.create_task(_supervised("central relay", self.central.run))
            tg.create_task(_supervised("grpc api", self.api.run))
            if self.metrics is not None:
                tg.create_task(_supervised("metrics", self.metrics.run))
            tg.create_task(_supervised("summary", self._summary))
            self.ready.set()


# -- CLI ------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        help="config file (default: $DOCKWATCH_CONFIG)",
    )
    parser.add_argument("--log-level", help="override logging.level (DEBUG, INFO, ...)")


async def _run_until_signalled(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await gateway.run()


def main(args: argparse.Namespace) -> int:
    from gateway.config import config_path_from_env

    try:
        path = args.config or config_path_from_env()
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config or 'config'}: {problem}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or config.logging.level, config.logging.format)
    try:
        import uvloop

        uvloop.run(_run_until_signalled(Gateway(config)))
    except GatewayError as exc:
        log.error("gateway stopped: %s", exc)  # noqa: TRY400 - the message is the whole story
        return 1
    return 0
