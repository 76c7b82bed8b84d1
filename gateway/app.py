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

Health and sync (docs/metrics.md): ``/healthz`` is liveness (200 while the process serves);
``/readyz`` is 503 with the reason while starting, stopping, restarting a crashed part, or while
the edge store fails (a failing ``record`` until it succeeds again, or the store check below).
Every ``check_every_s`` (5 s) one task pings the store (``last_seq``) and compares each sink's
lag with its ``lag_alert_s``: the lag in seconds is the age of the oldest movement the sink has not
acknowledged. Record times are kept in memory (one ``(last seq, monotonic time)`` entry per
``record`` call, dropped once every sink acknowledged it, at most ``RECORD_TIMES_MAX``); a movement
older than that (recorded before this process started, or dropped from the bounded memory) is
dated by the store's ``recorded_at``. A sink behind by more than ``lag_alert_s`` raises a
``sync_behind`` alert (stored, published, listed like every alert) that clears once the lag is
below half the threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import ipaddress
import logging
import signal
import ssl
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from edge_store.engine import with_password
from edge_store.records import ItemRecord, LocationRecord, RecordResult
from edge_store.repository import EdgeStore
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.central import CentralRelay
from gateway.adapters.epcis import EpcisRelay
from gateway.adapters.grpc_api import EdgeApiServer, RuntimeStatus
from gateway.adapters.journal import JournalWriter, replay_journal
from gateway.adapters.llrp import LlrpReaderAdapter, ReadBatch
from gateway.adapters.metrics import MetricsServer, Sample, labelled, server_tls_context
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
from gateway.adapters.tls import client_context
from gateway.config import (
    GatewayConfig,
    ShelfConfig,
    TlsClientConfig,
    load_config,
    resolve_secret,
)
from gateway.console.feed import ConsoleFeed
from gateway.console.web import Console
from gateway.console.wiring import build_console
from gateway.documents import RECEIPTS_LIMITS, DocumentError, gc_paused, read_yaml
from gateway.domain.antenna import AntennaHealth
from gateway.domain.catalog import Catalog, CatalogItem
from gateway.domain.epcis import DEFAULT_BASE_URI, EpcisSite, ReceiptClosed
from gateway.domain.model import (
    Alert,
    AlertKind,
    DeviceId,
    DeviceState,
    DeviceStatus,
    LocationId,
    Movement,
    MovementKind,
    Severity,
    Sku,
    SourceType,
    StockLevel,
    TagRead,
)
from gateway.domain.portal import PortalEngine, PortalSpec
from gateway.domain.receiving import (
    ExpectedReceipt,
    PreparedReceipts,
    ReceivingTracker,
    parse_expected,
)
from gateway.domain.shelf import ShelfEngine
from gateway.domain.stock import LowStockMonitor
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.logs import configure_logging, redact
from gateway.runtime.doors import DoorCounters, DoorPipeline, DoorPorts, lights_of, photo_eyes_of

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

READ_QUEUE_BATCHES = 1024
"""Hand-off queue between the LLRP adapters and the portal engine (adapters drop the OLDEST
batch when it is full and count it: see docs/llrp.md)."""
_SHELF_ENGINE_ALERTS = frozenset(
    {AlertKind.IMPLAUSIBLE_WEIGHT, AlertKind.UNEXPLAINED_WEIGHT_CHANGE}
)
"""Alerts whose condition lives in a shelf engine's memory (see ``Gateway.run``)."""
RESTART_PAUSE_S = 1.0
SUMMARY_EVERY_S = 30.0
CHECK_EVERY_S = 5.0
"""How often the store is pinged for readiness and each sink's lag compared with its threshold."""
STORE_CHECK_TIMEOUT_S = 10.0
"""A store ping unanswered for this long makes /readyz say the store is not answering."""
RECORD_TIMES_MAX = 65_536
"""Record times kept in memory for the sinks' lag in seconds (one per ``record`` call)."""


EXPECTED_POLL_S = 5.0
"""How often the expected-receipts file is checked for changes and idle receipts completed."""


def load_expected(path: Path) -> list[ExpectedReceipt]:
    """Expected receipts from a YAML or JSON file (within ``RECEIPTS_LIMITS``: size, nesting,
    encoding); ValueError names the problem."""
    try:
        data = read_yaml(path, RECEIPTS_LIMITS)
    except DocumentError as exc:
        raise ValueError(exc.problem) from exc
    return [] if data is None else parse_expected(data)  # an empty file expects nothing


def prepare_expected(path: Path, tracker: ReceivingTracker) -> PreparedReceipts:
    """:func:`load_expected` resolved against the tracker's catalog: all the work of taking a
    file, for a worker thread (``tracker.prepare`` only reads the immutable catalog). The
    garbage collector is paused meanwhile (:func:`gateway.documents.gc_paused`: its full
    collections would hold the GIL, and so stall the event loop, for a quarter of a second)."""
    with gc_paused():
        return tracker.prepare(load_expected(path))


def _warn_cleartext(key: str, host: str, what: str) -> None:
    """A secret sent without TLS: fine on loopback, worth one warning anywhere else."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    if host == "localhost":
        return
    log.warning("%s: %s goes to %s without TLS; configure tls to protect it", key, what, host)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _path(value: object | None) -> str | None:
    return None if value is None else str(value)


@dataclass(slots=True)
class Timing:
    """A Prometheus summary without quantiles: how many, and their total in seconds."""

    count: int = 0
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds


@dataclass(slots=True)
class Counters:
    """What the gateway did since it started, for the periodic summary line and the metrics."""

    reads: int = 0
    reads_by_antenna: dict[tuple[str, int], int] = field(default_factory=dict)
    """Reads per configured (reader, antenna): a fixed set of keys, one series each."""
    unexpected_antenna: dict[str, int] = field(default_factory=dict)
    """Reads per reader on antennas it is not configured with (a hostile or misconfigured
    reader could report 65,536 antenna ids: one counter per reader, never a series each)."""
    movements: int = 0
    movements_by_kind: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(MovementKind, 0)
    )
    duplicates: int = 0
    alerts: int = 0
    store_record: Timing = field(default_factory=Timing)
    started: float = field(default_factory=time.monotonic)


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


class StoreWorker:
    """Runs EdgeStore calls on one thread: writes are serialised and the loop never blocks."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-store")
        self.errors = 0
        """Calls that failed with a StoreError."""

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))
        except StoreError:
            self.errors += 1
            raise

    async def timed(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, float]:
        """``call``, and how long ``fn`` itself ran on the store's thread (queueing excluded)."""
        return await self.call(_timed, partial(fn, *args, **kwargs))

    @staticmethod
    def reason(exc: StoreError) -> str:
        """The failed operation and the driver's error class, for an unauthenticated /readyz:
        the message itself names the database server and stays in the log."""
        operation = str(exc).split(" ", 1)[0]
        cause = exc.__cause__
        source = getattr(cause, "orig", None) or cause
        what = type(source).__name__ if source is not None else "StoreError"
        prefix = f"{operation} failed: " if operation.isidentifier() else ""
        return f"{prefix}{what} (details in the gateway log)"

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()


class RecordTimes:
    """When movements were committed, on the monotonic clock: the sinks' lag in seconds.

    One ``(last seq, time)`` entry per ``record`` call, oldest first; an entry dates every seq
    above the previous entry's. Entries every sink acknowledged are forgotten, and at most
    ``limit`` are kept (the oldest go). Seqs at or below ``floor`` (committed before this
    process started, or forgotten) are not in memory: :meth:`missing` names them, and the caller
    dates them from the store with :meth:`dated`; until then they count from ``started``.
    """

    def __init__(self, *, started: float, limit: int = RECORD_TIMES_MAX) -> None:
        self._started = started
        self._limit = limit
        self._entries: deque[tuple[int, float]] = deque()
        self._floor = 0
        self._from_store: dict[int, float] = {}

    def start_after(self, seq: int) -> None:
        """Seqs up to ``seq`` were committed before this process started."""
        self._floor = seq

    def recorded(self, last_seq: int, at: float) -> None:
        self._entries.append((last_seq, at))
        if len(self._entries) > self._limit:
            self._floor = self._entries.popleft()[0]

    def forget_through(self, seq: int) -> None:
        """Every sink acknowledged everything up to ``seq``."""
        while self._entries and self._entries[0][0] <= seq:
            self._floor = self._entries.popleft()[0]

    def _index(self, seq: int) -> int | None:
        if seq <= self._floor:
            return None
        i = bisect.bisect_left(self._entries, seq, key=lambda entry: entry[0])
        return i if i < len(self._entries) else None

    def missing(self, seq: int) -> bool:
        """Memory cannot date ``seq``: look it up in the store."""
        return self._index(seq) is None

    def dated(self, times: dict[int, float]) -> None:
        """Times of seqs memory misses, from the store (replaces the previous ones)."""
        self._from_store = times

    def at(self, seq: int, now: float) -> float:
        """When ``seq`` was committed (a seq above everything recorded here: ``now``)."""
        i = self._index(seq)
        if i is not None:
            return self._entries[i][1]
        return self._from_store.get(seq, self._started if seq <= self._floor else now)

    def stored_time(self, seq: int) -> float | None:
        return self._from_store.get(seq)


async def _supervised(
    name: str, factory: Callable[[], Awaitable[None]], restarting: set[str] | None = None
) -> None:
    """Run ``factory()`` for ever: a crash is logged with its traceback and the part restarts.

    ``restarting`` (optional) holds ``name`` during the pause before a restart (for /readyz)."""
    while True:
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:  # the top of a task: log, pause, restart (STYLE.md rule 3)
            log.exception("%s crashed; restarting in %.0f s", name, RESTART_PAUSE_S)
        else:
            log.warning("%s stopped unexpectedly; restarting in %.0f s", name, RESTART_PAUSE_S)
        if restarting is not None:
            restarting.add(name)
        try:
            await asyncio.sleep(RESTART_PAUSE_S)
        finally:
            if restarting is not None:
                restarting.discard(name)


def build_listeners(
    config: GatewayConfig,
    store: EdgeStore | None,
    *,
    environ: Mapping[str, str] | None = None,
    collect: Callable[[], Any] = dict,
    ready: Callable[[], str | None] | None = None,
    status: Callable[[], RuntimeStatus] | None = None,
    console: Console | None = None,
) -> tuple[EdgeApiServer, MetricsServer | None]:
    """The local gRPC API and the metrics endpoint ``config.api`` describes, not yet started.

    Building them applies every rule of the two listeners (the token, TLS files, no
    unauthenticated listener off loopback): :class:`ConfigError` otherwise. ``store`` None
    builds them only for that check (:func:`preflight`); they must not be started then.
    """
    api = config.api
    token = resolve_secret(api.token, environ=environ) if api.token else None
    server = EdgeApiServer.from_config(
        api,
        cast("EdgeStore", store),  # None only for preflight, which never serves
        site=config.site.id,
        token=token,
        status=status,
    )
    metrics = None
    if api.metrics_listen is not None:
        # One api.tls for both listeners: the metrics endpoint speaks HTTPS with the gRPC
        # API's certificate, and its client CA guards /metrics (not the probes' paths).
        tls = api.tls
        context = (
            server_tls_context(tls.cert_file, tls.key_file, tls.client_ca_file)
            if tls is not None
            else None
        )
        # /healthz is liveness (200 while the loop serves): starting, a store outage or a
        # part restarting are readiness matters (/readyz), not reasons to restart the process.
        # The operator console shares the listener, its TLS and its token (docs/console.md).
        metrics = MetricsServer(
            api.metrics_listen,
            collect,
            token,
            tls=context,
            ready=ready,
            **({} if console is None else console.listener_options()),
        )
    return server, metrics


def preflight(config: GatewayConfig, environ: Mapping[str, str] | None = None) -> None:
    """The start-up checks that need neither the store nor the network, as ``run`` applies
    them: secrets resolve, TLS files load, the listeners' authentication rules hold.
    ``dockwatch check-config`` runs them too. Raises :class:`ConfigError`."""
    build_listeners(config, None, environ=environ)


RECENT_MOVEMENTS = 5000
"""At most this many of the latest movements tell a replayed journal where tags already went."""


def _recent_destinations(
    store: EdgeStore, last_seq: int, since: datetime
) -> dict[str, tuple[str, int]]:
    """EPC URI -> (location, crossing moment us) of the door movements observed since ``since``
    among the latest ``RECENT_MOVEMENTS`` (the portal engine's memory, for a journal replay)."""
    out: dict[str, tuple[str, int]] = {}
    after = max(0, last_seq - RECENT_MOVEMENTS)
    while page := store.movements_since(after):
        for recorded in page:
            m = recorded.movement
            if m.source_type is SourceType.RFID_PORTAL and m.observed_at >= since:
                moment = (m.to_location, round(m.observed_at.timestamp() * 1_000_000))
                for epc in (*m.epcs, *((m.container,) if m.container else ())):
                    out[epc] = moment
        after = page[-1].seq
    return out


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


def epcis_site(config: GatewayConfig) -> EpcisSite:
    """What the EPCIS mapping needs to know about the site (ids, GTINs, optional SGLNs)."""
    sink = config.sinks.epcis
    return EpcisSite(
        site=config.site.id,
        base_uri=sink.base_uri if sink is not None else DEFAULT_BASE_URI,
        site_sgln=config.site.sgln,
        read_points={
            **{p.id: p.sgln for p in config.portals if p.sgln},
            **{s.id: s.sgln for s in config.shelves if s.sgln},
        },
        locations={loc.id: loc.sgln for loc in config.locations if loc.sgln},
        gtins={item.sku: item.gtin for item in config.catalog.items},
        inside={p.id: p.inside_location for p in config.portals},
        shelves={s.id: s.location for s in config.shelves},
    )


def device_tls(tls: TlsClientConfig | None, key: str) -> ssl.SSLContext | None:
    """The TLS context of a reader's or shelf's ``tls:`` block (``key``: its config path)."""
    if tls is None:
        return None
    return client_context(
        ca_file=tls.ca_file,
        cert_file=tls.cert_file,
        key_file=tls.key_file,
        check_hostname=not tls.insecure,
        key=key,
    )


def shelf_point(shelf: ShelfConfig, tls: ssl.SSLContext | None = None) -> ShelfPoint:
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
        tls=tls,
    )


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
        self.config = config
        self._utcnow = utcnow
        self._environ = environ
        self._check_every_s = check_every_s
        self._check_timeout_s = check_timeout_s
        self._ping: asyncio.Future[int] | None = None
        self.counters = Counters()
        for reader in config.readers:  # every configured antenna has a series, reads or not
            self.counters.unexpected_antenna[reader.id] = 0
            for antenna in reader.antennas:
                self.counters.reads_by_antenna[reader.id, antenna] = 0
        self.catalog = catalog_of(config)
        self.portal_engine = PortalEngine(
            portals=portal_specs(config), catalog=self.catalog, params=config.debounce.portal
        )
        self.antenna_health = AntennaHealth(
            portal_specs(config), config.debounce.antenna, now=time.monotonic()
        )
        self._journals: list[JournalWriter] = []
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
                tolerance_g=item.weight_tolerance_g,  # None: the engine's default
                pick_to=LocationId(shelf.pick_to),
                restock_from=LocationId(shelf.restock_from),
                params=config.debounce.shelf,
                division_g=shelf.division_g,
                capacity_g=shelf.capacity_g,
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
        self.epcis: EpcisRelay | None = None
        self.api: EdgeApiServer | None = None
        self.metrics: MetricsServer | None = None
        self.console_feed = ConsoleFeed(utcnow=utcnow)
        """What the operator console shows live: told what MQTT is told (docs/console.md)."""
        self.readers: dict[str, LlrpReaderAdapter] = {}
        self.shelf_poller: ModbusShelfPoller | None = None
        self.started_at = utcnow()
        self._devices: dict[str, DeviceStatus] = {}
        self._stale_alerts: list[Alert] = []
        self._last_seq = 0
        self._cursors: dict[str, int] = {}
        self.worker: StoreWorker | None = None
        self.ready = asyncio.Event()
        self._record_lock = asyncio.Lock()
        self._active_alerts: set[str] = set()
        self._statuses: asyncio.Queue[DeviceStatus] = asyncio.Queue()
        self._stopping = False
        self._restarting: set[str] = set()
        self._store_problems: dict[str, str] = {}
        """Why the store is not usable, by what found out ("record", "check"); empty: fine."""
        self.record_times = RecordTimes(started=self.counters.started)
        self._lag_alert_s = {
            name: sink.lag_alert_s
            for name, sink in (
                ("mqtt", config.sinks.mqtt),
                ("central", config.sinks.central),
                ("epcis", config.sinks.epcis),
            )
            if sink is not None and sink.lag_alert_s is not None
        }
        self.doors = DoorPipeline(
            engine=self.portal_engine,
            antenna_health=self.antenna_health,
            lights=lights_of(config),
            photo_eyes=photo_eyes_of(config),
            counters=DoorCounters(self.counters.reads_by_antenna, self.counters.unexpected_antenna),
            ports=DoorPorts(
                record=self.record,
                raise_alert=self.raise_alert,
                alert_active=self._active_alerts.__contains__,
                publish_pass=self._publish_pass,
                write_gpo=self._write_gpo,
                set_antenna_down=self._set_antenna_down,
                receipt_progress=self.receiving.progress if self.receiving else None,
                reads_seen=self._reads_seen,
            ),
            site=config.site.id,
            now_us=self._now_us,
            utcnow=utcnow,
        )

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
        # A shelf the store has no level for has no book: its first settled weight is its opening
        # count. One with a level compares its first settled weight with it (offline changes).
        for level in levels:
            shelf_id = self._shelf_at.get((level.location, level.sku))
            if shelf_id is not None:
                self.shelf_engines[shelf_id].set_on_hand(level.on_hand)
            self.low_stock.observe(level)
        # Alerts still open from a previous run (outages, low stock) clear when resolved.
        shelves = {shelf.id for shelf in self.config.shelves}
        for alert in await worker.call(store.alerts, active_only=True):
            self._active_alerts.add(alert.alert_id)
            if alert.kind in _SHELF_ENGINE_ALERTS and alert.subject in shelves:
                # The shelf engines start afresh and raise these again if still true; left
                # active, a condition that ended while we were down would never clear.
                self._stale_alerts.append(alert)
            if alert.kind is AlertKind.ANTENNA_DOWN:
                reader, _, antenna = alert.subject.rpartition("/")
                self.antenna_health.restore_down(DeviceId(reader), int(antenna), time.monotonic())
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
        epcis = self.config.sinks.epcis
        if epcis is not None:
            if epcis.token is not None and not epcis.use_tls:
                _warn_cleartext("sinks.epcis", epcis.host, "the EPCIS repository token")
            try:
                self.epcis = EpcisRelay.from_config(
                    epcis, store, site=epcis_site(self.config), on_alert=self.raise_alert
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(f"sinks.epcis: {exc}") from exc

    def _relays(self) -> tuple[tuple[str, MqttSink | CentralRelay | EpcisRelay | None], ...]:
        return (("mqtt", self.mqtt), ("central", self.central), ("epcis", self.epcis))

    def _build_api(self, store: EdgeStore) -> None:
        self.api, self.metrics = build_listeners(
            self.config,
            store,
            environ=self._environ,
            collect=self._collect_metrics,
            ready=self.not_ready,
            status=self._runtime_status,
            console=build_console(self, utcnow=self._utcnow, environ=self._environ),
        )

    def not_ready(self) -> str | None:
        """None when the gateway is ready to do its job, else why not (one line, no secrets)."""
        if self._stopping:
            return "stopping"
        if not self.ready.is_set():
            return "starting"
        if self._store_problems:
            return f"store unavailable: {next(iter(self._store_problems.values()))}"
        if self._restarting:
            return f"restarting after a crash: {', '.join(sorted(self._restarting))}"
        return None

    def _sinks_connected(self) -> dict[str, bool]:
        return {name: sink.connected for name, sink in self._relays() if sink is not None}

    def _acked(self, sink: str) -> int:
        """The sink's acknowledged position: live from the relay, or its stored cursor while
        the relay has not read it yet (a relay starts at 0 until its first connection)."""
        acked = self._cursors.get(sink, 0)
        if sink == "mqtt" and self.mqtt is not None:
            return max(acked, self.mqtt.relay.acked_seq)
        if sink == "central" and self.central is not None:
            return max(acked, self.central.acked_seq)
        if sink == "epcis" and self.epcis is not None:
            return max(acked, self.epcis.acked_seq)
        return acked

    def sync_status(self) -> dict[str, int]:
        """``last_seq`` (the store's highest seq) and each sink's acknowledged seq, by name."""
        status = {"last_seq": self._last_seq}
        for name, sink in self._relays():
            if sink is not None:
                status[name] = self._acked(name)
        return status

    def _runtime_status(self) -> RuntimeStatus:
        return RuntimeStatus(self.started_at, self._sinks_connected())

    def _collect_metrics(self) -> dict[str, Sample]:
        """Every metric (docs/metrics.md lists them); reads memory only, never the store."""
        c = self.counters
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
        health = self.antenna_health
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
            self.reads.qsize(),
        )
        put(
            "dockwatch_read_queue_capacity_batches",
            "gauge",
            "Capacity of the read hand-off queue (when full, a reader drops the oldest batch)",
            self.reads.maxsize,
        )
        for reader_id, n in c.unexpected_antenna.items():
            put(
                "dockwatch_reader_unexpected_antenna_reads_total",
                "counter",
                "Tag reads on antennas the reader is not configured with (ignored)",
                n,
                reader=reader_id,
            )
        for reader_id, adapter in self.readers.items():
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
            len(self.samples),
        )
        put(
            "dockwatch_shelf_queue_capacity_samples",
            "gauge",
            "Capacity of the weight sample queue (when full, the oldest sample is dropped)",
            self.samples.maxsize,
        )
        put(
            "dockwatch_shelf_samples_dropped_total",
            "counter",
            "Weight samples dropped because their queue was full",
            self.samples.dropped,
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
        put("dockwatch_alerts_active", "gauge", "Alerts active now", len(self._active_alerts))
        put("dockwatch_last_seq", "gauge", "Highest movement seq in the store", self._last_seq)
        put(
            "dockwatch_tracked_tags",
            "gauge",
            "Tags the portal engine tracks",
            self.portal_engine.tracked_tags,
        )
        portal = self.portal_engine.stats
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
        for sink, connected in self._sinks_connected().items():
            put(
                "dockwatch_sink_connected",
                "gauge",
                "1 while the sink is connected",
                float(connected),
                sink=sink,
            )
            lag, lag_s, _ = self._sink_lag(sink, now)
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
        for device, status in self._devices.items():
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
        if self.shelf_poller is not None:
            for endpoint, trips in self.shelf_poller.round_trips().items():
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
            self.worker.errors if self.worker is not None else 0,
        )
        put(
            "dockwatch_ready",
            "gauge",
            "1 when /readyz answers 200 (ready), else 0",
            float(self.not_ready() is None),
        )
        return out

    # -- sink lag -----------------------------------------------------------------------------

    def _sink_lag(self, sink: str, now: float) -> tuple[int, float, int]:
        """(movements not acknowledged, age in seconds of the oldest, its seq or 0)."""
        last = self._last_seq
        acked = self._acked(sink)
        if acked >= last:
            return 0, 0.0, 0
        oldest = acked + 1
        return last - acked, max(0.0, now - self.record_times.at(oldest, now)), oldest

    def _forget_acknowledged(self) -> None:
        """Drop the record times every sink has acknowledged."""
        sinks = list(self._sinks_connected())
        if sinks:
            self.record_times.forget_through(min(self._acked(sink) for sink in sinks))

    async def _date_from_store(self, worker: StoreWorker) -> None:
        """Look up in the store the record time of each sink's oldest unacknowledged movement
        that memory does not hold (recorded before this process started, or forgotten)."""
        times = self.record_times
        found: dict[int, float] = {}
        for sink in self._sinks_connected():  # every configured sink
            acked = self._acked(sink)
            seq = acked + 1
            if acked >= self._last_seq or not times.missing(seq):
                continue
            known = times.stored_time(seq)
            if known is None:
                recorded = await worker.call(worker.store.recorded_at, seq)
                known = time.monotonic()
                if recorded is not None:  # None: not committed when we looked, so just now
                    known -= max(0.0, (self._utcnow() - recorded).total_seconds())
            found[seq] = known
        times.dated(found)

    async def _check_loop(self) -> None:
        while True:
            await self._check()
            await asyncio.sleep(self._check_every_s)

    async def _check(self) -> None:
        """Ping the store (readiness), date the sinks' backlogs, raise or clear sync alerts;
        then tell the gRPC health service whether the gateway is ready."""
        try:
            await self._check_store_and_sync()
        finally:
            if self.api is not None:
                self.api.set_serving(self.not_ready() is None)

    async def _check_store_and_sync(self) -> None:
        worker = self.worker
        assert worker is not None
        # One ping at a time: a store that hangs (rather than fails) keeps its ping, and the
        # checks that follow wait for that same one instead of queueing more behind it.
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(worker.call(worker.store.last_seq))
        try:
            async with asyncio.timeout(self._check_timeout_s):
                last = await asyncio.shield(self._ping)
                self._last_seq = max(self._last_seq, last)
                await self._date_from_store(worker)
        except TimeoutError:
            if "check" not in self._store_problems:
                log.error(  # noqa: TRY400 - a timeout has no traceback worth printing
                    "edge store has not answered for %.0f s", self._check_timeout_s
                )
            self._store_problems["check"] = f"not answering within {self._check_timeout_s:g} s"
            return
        except StoreError as exc:
            if "check" not in self._store_problems:
                log.error("edge store check failed: %s", exc)  # noqa: TRY400 - one line says it
            self._store_problems["check"] = worker.reason(exc)
            return
        if self._store_problems.pop("check", None) is not None:
            log.info("edge store answers again")
        self._forget_acknowledged()
        now = time.monotonic()
        for sink, threshold_s in self._lag_alert_s.items():
            await self._sync_alert(sink, threshold_s, now)
        for alert_id in sorted(self._active_alerts):
            kind, _, sink = alert_id.partition(":")
            if kind == AlertKind.SYNC_BEHIND and sink not in self._lag_alert_s:
                # Raised by a run whose config watched this sink: nothing would ever clear it.
                await self.raise_alert(self._sync_behind(alert_id, sink, None, now))

    async def _sync_alert(self, sink: str, threshold_s: float, now: float) -> None:
        """Raise ``sync_behind`` when the lag exceeds the threshold; clear it below half."""
        alert_id = f"{AlertKind.SYNC_BEHIND}:{sink}"
        active = alert_id in self._active_alerts
        _, lag_s, _ = self._sink_lag(sink, now)
        if (not active and lag_s > threshold_s) or (active and lag_s <= threshold_s / 2):
            await self.raise_alert(self._sync_behind(alert_id, sink, threshold_s, now))

    def _sync_behind(
        self, alert_id: str, sink: str, threshold_s: float | None, now: float
    ) -> Alert:
        """The sync_behind alert of ``sink``: raised when it is not active, else cleared."""
        lag, lag_s, oldest = self._sink_lag(sink, now)
        raising = alert_id not in self._active_alerts
        if raising:
            message = (
                f"{sink} is behind: {lag} movement(s) not acknowledged, the oldest "
                f"(seq {oldest}) recorded {_duration(lag_s)} ago (threshold {threshold_s:g} s)"
            )
        elif threshold_s is None:
            message = f"{sink} is no longer watched for lag"
        elif lag == 0:
            message = f"{sink} caught up"
        else:
            message = (
                f"{sink} is catching up: {lag} movement(s) not acknowledged, the oldest "
                f"recorded {_duration(lag_s)} ago"
            )
        details: dict[str, object] = {
            "sink": sink,
            "lag_movements": lag,
            "lag_seconds": round(lag_s, 3),
            "oldest_unacknowledged_seq": oldest,
            "connected": self._sinks_connected().get(sink, False),
        }
        if threshold_s is not None:
            details["threshold_s"] = threshold_s
        return Alert(
            alert_id=alert_id,
            kind=AlertKind.SYNC_BEHIND,
            severity=Severity.WARNING if raising else Severity.INFO,
            subject=sink,
            message=message,
            raised_at=self._utcnow(),
            active=raising,
            details=details,
        )

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
            last = result.recorded[-1].seq
            self._last_seq = max(self._last_seq, last)
            if any(sink is not None for _, sink in self._relays()):
                self.record_times.recorded(last, time.monotonic())
        self.counters.duplicates += len(result.duplicates)
        by_kind = self.counters.movements_by_kind
        for recorded in result.recorded:
            m = recorded.movement
            by_kind[m.kind] = by_kind.get(m.kind, 0) + 1
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
        if self.epcis is not None:
            self.epcis.notify()
        if self.api is not None:
            self.api.notify()
        self.console_feed.recorded(result.recorded, result.stock)
        await self._stock_changed(result.stock)
        if self.receiving is not None and result.recorded:
            moved = [r.movement for r in result.recorded]
            for alert in self.receiving.observe(moved, self._utcnow()):
                self._receipt_closed(alert)
                await self.raise_alert(alert)
        return result

    async def _record_until_stored(
        self, worker: StoreWorker, movements: Sequence[Movement]
    ) -> RecordResult:
        """Record, retrying for as long as the store refuses: the engines cannot derive these
        movements again, so giving up would lose them."""
        result, seconds = await self._until_stored(
            worker,
            "record",
            f"record {len(movements)} movement(s)",
            partial(worker.timed, worker.store.record, movements, now=self._utcnow()),
        )
        self.counters.store_record.observe(seconds)
        return result

    async def _until_stored(
        self, worker: StoreWorker, key: str, what: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """``call()`` until the store takes it, with capped backoff; one error line when it
        starts failing, one when it works again; ``/readyz`` says why meanwhile (``key``)."""
        backoff = Backoff(BackoffPolicy(initial_s=0.2, max_s=10.0))
        failing_since: float | None = None
        while True:
            try:
                result = await call()
            except StoreError as exc:
                self._store_problems[key] = worker.reason(exc)
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.error(  # noqa: TRY400 - the StoreError names operation and cause
                        "cannot %s; retrying until the store takes it: %s", what, exc
                    )
                await asyncio.sleep(backoff.next_delay(time.monotonic()))
                continue
            if failing_since is not None:
                self._store_problems.pop(key, None)
                log.info(
                    "edge store took it after %.1f s: %s", time.monotonic() - failing_since, what
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
        worker = self.worker
        if worker is not None:
            await self._until_stored(
                worker,
                "alert",
                f"store the {alert.kind} alert",
                partial(worker.call, worker.store.upsert_alert, alert),
            )
        if self.mqtt is not None:
            self.mqtt.publish_alert(alert)
        self.console_feed.alert(alert)

    def device_status(self, status: DeviceStatus) -> None:
        """Adapters call this (on the loop thread) when a device changes state.

        Statuses are handled in arrival order by one task (``_status_loop``); the queue is
        unbounded because it holds state *changes* only, a handful per device at most."""
        self._statuses.put_nowait(status)

    async def _status_loop(self) -> None:
        while True:
            await self._device_status(await self._statuses.get())

    async def _device_status(self, status: DeviceStatus) -> None:
        self._devices[status.device_id] = status
        if self.worker is not None:
            await self.worker.call(self.worker.store.set_device_status, status)
        if self._stopping:
            return  # devices go offline because WE stop: a status, not an outage to alert on
        if self.mqtt is not None:
            self.mqtt.publish_device_status(status)
        self.console_feed.device(status)
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

    # The door pipeline's ports (gateway/runtime/doors.py).

    def _reads_seen(self, reads: Sequence[TagRead]) -> None:
        self.counters.reads += len(reads)
        self.console_feed.reads(reads)

    def _publish_pass(self, portal_id: str, payload: bytes) -> None:
        if self.mqtt is not None:
            self.mqtt.publish_pass(portal_id, payload)

    def _write_gpo(self, reader_id: DeviceId, levels: Mapping[int, bool]) -> None:
        adapter = self.readers.get(reader_id)
        if adapter is not None:
            adapter.write_gpo(levels)

    def _set_antenna_down(self, reader_id: DeviceId, antenna: int, detail: str | None) -> None:
        adapter = self.readers.get(reader_id)
        if adapter is not None:
            adapter.set_antenna_down(antenna, detail)

    async def _shelf_loop(self) -> None:
        while True:
            sample = await self.samples.get()
            engine = self.shelf_engines.get(sample.shelf_id)
            if engine is None:
                continue
            movements: list[Movement] = []
            # When the sample was taken, not when it reached the engine: a store that was slow
            # to take the last movement must not shift the next one's observed_at.
            taken = self._utcnow() - timedelta(seconds=max(0.0, time.monotonic() - sample.at))
            for event in engine.feed(sample, taken):
                if isinstance(event, Movement):
                    movements.append(event)
                    continue
                if event.kind is AlertKind.IMPLAUSIBLE_WEIGHT:
                    await self._implausible_weight(event)
                await self.raise_alert(event)
            self.console_feed.sample(sample, movements)
            if movements:
                await self.record(movements)

    async def _implausible_weight(self, alert: Alert) -> None:
        """A transmitter reading garbage is a device fault: its shelf shows degraded (the alert
        says why, once) until it reads a sane settled weight again."""
        previous = self._devices.get(alert.subject)
        state = DeviceState.DEGRADED if alert.active else DeviceState.ONLINE
        if previous is not None and previous.state is DeviceState.OFFLINE:
            return  # an outage says more than the garbage before it
        self.device_status(
            DeviceStatus(
                device_id=DeviceId(alert.subject),
                device_type="modbus_shelf",
                state=state,
                since=alert.raised_at,
                detail=alert.message if alert.active else "",
            )
        )

    async def _receiving_loop(self) -> None:
        """Loads new expected receipts when the file changes; completes idle receipts."""
        tracker = self.receiving
        path = self.config.receiving.expected_file
        assert tracker is not None
        assert path is not None
        while True:
            await self._load_expected(tracker, path)
            for alert in tracker.advance(self._utcnow()):
                self._receipt_closed(alert)
                await self.raise_alert(alert)
            await asyncio.sleep(EXPECTED_POLL_S)

    def _receipt_closed(self, alert: Alert) -> None:
        """A completed expected receipt: its EPCIS closure event follows its movements'."""
        closed = ReceiptClosed.from_alert(alert) if self.epcis is not None else None
        if self.epcis is not None and closed is not None:
            self.epcis.receipt_closed(closed, after_seq=self._last_seq)

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
        # Reading, parsing and resolving run in a worker thread; only the linear insertion of
        # what is new runs on the loop (a 10,000-receipt file must not stall the devices).
        try:
            prepared = await asyncio.to_thread(prepare_expected, path, tracker)
        except ValueError as exc:
            log.error("expected receipts file %s ignored: %s", path, exc)  # noqa: TRY400
            return
        new = tracker.add_prepared(prepared, skip_known=True)
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
            for reader, n in c.unexpected_antenna.items():
                if n:
                    antennas.setdefault(reader, []).append(f"unexpected:{n}")
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
        for alert in self._stale_alerts:
            await self.raise_alert(
                replace(
                    alert,
                    active=False,
                    raised_at=self._utcnow(),
                    message=f"{alert.subject}: cleared at start (raised again if still true)",
                )
            )
        self._stale_alerts.clear()
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
            for journal in self._journals:  # the readers' threads have been joined
                journal.close()
            await asyncio.to_thread(self.worker.close)
            log.info("gateway %s stopped", self.config.site.id)

    def _journal(self, reader_id: str) -> JournalWriter | None:
        path = self.config.store.journal_path
        if path is None:
            return None
        writer = JournalWriter(path, reader_id, segment_s=self.config.store.journal_segment_s)
        self._journals.append(writer)
        return writer

    async def _replay_journal(self) -> None:
        """Feed the portal engine the reads a killed predecessor journaled, so that the passes it
        left open are decided now (gateway/adapters/journal.py); those it had decided come out
        again with the same movement ids, and the store keeps them once."""
        path = self.config.store.journal_path
        if path is None or not self.config.readers:
            return
        started = time.monotonic()
        reports = await asyncio.to_thread(
            replay_journal, path, [reader.id for reader in self.config.readers]
        )
        if not reports:
            return
        engine = self.portal_engine
        assert self.worker is not None
        since = datetime.fromtimestamp(
            reports[0].received_us / 1e6 - self.config.debounce.portal.horizon_s, UTC
        )
        engine.assume_locations(
            await self.worker.call(_recent_destinations, self.worker.store, self._last_seq, since)
        )
        crossings = []
        for report in reports:
            crossings += engine.feed(report.reads, report.received_us)
        engine.take_pass_events()  # news of passes long gone: not for the door's lights
        result = await self.record(engine.movements(crossings)) if crossings else None
        log.info(
            "read journal: %d reads of %d reports from %.0f s replayed in %.2f s; "
            "%d movement(s) recorded, %d already were (the rest is decided as reads go on)",
            sum(len(r.reads) for r in reports),
            len(reports),
            (reports[-1].received_us - reports[0].received_us) / 1e6,
            time.monotonic() - started,
            0 if result is None else len(result.recorded),
            0 if result is None else len(result.duplicates),
        )

    def _build_devices(self) -> None:
        cfg = self.config
        for i, reader in enumerate(cfg.readers):
            self.readers[reader.id] = LlrpReaderAdapter(
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
                tls=device_tls(reader.tls, f"readers[{i}].tls"),
                on_antenna=self.doors.antenna_reported,
                on_gpi=self.doors.gpi_changed,
                journal=self._journal(reader.id),
            )
        if cfg.shelves:
            # One context per connection: the shelves behind it share it (config checks they
            # agree on their tls block).
            contexts: dict[tuple[str, int], ssl.SSLContext | None] = {}
            for i, shelf in enumerate(cfg.shelves):
                connection = (shelf.modbus.host, shelf.modbus.port)
                if connection not in contexts:
                    contexts[connection] = device_tls(shelf.modbus.tls, f"shelves[{i}].modbus.tls")
            timeouts = {s.modbus.timeout_s for s in cfg.shelves}
            self.shelf_poller = ModbusShelfPoller(
                [shelf_point(s, contexts[(s.modbus.host, s.modbus.port)]) for s in cfg.shelves],
                on_sample=self.samples.put,
                on_status=self.device_status,
                settings=PollerSettings(
                    poll_interval_s=cfg.debounce.shelf.poll_interval_s,
                    timeout_s=max(timeouts),
                ),
            )

    async def _run(self, worker: StoreWorker) -> None:
        store = worker.store
        self._build_sinks(store)
        self._build_api(store)
        self._build_devices()
        cfg = self.config
        self._last_seq = await worker.call(store.last_seq)
        self.record_times.start_after(self._last_seq)
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
            ", ".join(n for n, s in self._relays() if s is not None) or "none",
        )
        await self._replay_journal()
        restarting = self._restarting

        def part(name: str, factory: Callable[[], Awaitable[None]]) -> Coroutine[Any, Any, None]:
            return _supervised(name, factory, restarting)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(part("device status", self._status_loop))
            for reader_id, adapter in self.readers.items():
                tg.create_task(part(f"reader {reader_id}", adapter.run))
            if cfg.readers:
                tg.create_task(part("portal engine", partial(self.doors.run_reads, self.reads)))
                tg.create_task(part("portal clock", self.doors.run_clock))
            if self.shelf_poller is not None:
                tg.create_task(part("shelf poller", self.shelf_poller.run))
                tg.create_task(part("shelf engine", self._shelf_loop))
            if self.receiving is not None:
                tg.create_task(part("receiving", self._receiving_loop))
            if self.mqtt is not None:
                tg.create_task(part("mqtt sink", self.mqtt.run))
            if self.central is not None:
                tg.create_task(part("central relay", self.central.run))
            if self.epcis is not None:
                tg.create_task(part("epcis relay", self.epcis.run))
            tg.create_task(part("grpc api", self.api.run))
            if self.metrics is not None:
                tg.create_task(part("metrics", self.metrics.run))
            tg.create_task(part("summary", self._summary))
            tg.create_task(part("store and sync check", self._check_loop))
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
        preflight(config)  # before the store is opened or migrated
        import uvloop

        uvloop.run(_run_until_signalled(Gateway(config)))
    except ConfigError as exc:  # found at start-up (a listener's rule, a secret): exit as invalid
        for problem in exc.problems:
            print(f"{args.config or 'config'}: {problem}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        log.error("gateway stopped: %s", exc)  # noqa: TRY400 - the message is the whole story
        return 1
    return 0
