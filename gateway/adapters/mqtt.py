"""MQTT sink: movements from the durable outbox, retained stock/device/alert state, gateway status.

Theory of operation
-------------------
Three parts share one broker connection (:mod:`gateway.adapters.mqtt_client`):

- The *link* (:class:`MqttSink`) keeps one connection up: it connects (MQTT 5 or 3.1.1, optional
  TLS and username/password, clean session) with the Last Will ``offline`` retained on
  ``{prefix}/gateway/status``, publishes ``online`` there, and runs the two publishers below for
  as long as the connection lives. When the connection fails it waits a capped, jittered
  exponential backoff (:mod:`gateway.adapters.backoff`) and tries again, for ever. A broker that
  goes away or refuses the connection is logged ONCE as an error naming ``host:port`` and the
  reason; later attempts only at debug level; the recovery once at info level.
- The :class:`MovementRelay` reads the store's outbox in ``seq`` order and publishes each
  movement (QoS 1 by default) on ``{prefix}/movements/{from_location}`` and then on
  ``{prefix}/movements/{to_location}``, keeping at most a window of publishes un-acknowledged
  (``inflight_max``, never more than the broker's MQTT 5 Receive Maximum). A movement is
  *acked* once every copy got its PUBACK; the cursor (``acked_seq``) is the highest seq below
  which every movement is acked, so it never passes an un-acked movement. It is written to the
  store at most every ``cursor_flush_s`` (a crash costs re-sends, never losses). On every new
  connection the relay restarts after the acked position: what was in flight when a connection
  died is sent again, byte-identical (same ``movement_id`` and ``seq``), so consumers that
  de-duplicate by ``movement_id`` see each movement once. A PUBACK carrying an MQTT 5 failure
  reason code (an ACL refusing the topic, a quota) is not an ack: the relay logs it once, and the
  link reconnects with backoff and retries from the cursor until the broker accepts.
- The *state publisher* republishes, retained, every stock level, device status and active
  alert from the store on every (re)connect, so a new subscriber sees the present state at once
  even after the broker lost its retained messages; at run time it publishes what the
  application hands to :meth:`MqttSink.publish_stock`, :meth:`~MqttSink.publish_device_status`
  and :meth:`~MqttSink.publish_alert`. State updates are coalesced per topic (the newest wins; a
  stock level never replaces one with a higher ``last_seq``); alert events wait in a bounded
  queue (oldest dropped, with one warning) while the broker is unreachable. A refused state
  publish is logged once per topic and skipped: it must not stall the movements.

Waking: :meth:`MqttSink.notify` (call it after each ``EdgeStore.record``) wakes the relay at
once; it also polls every ``poll_interval_s`` so movements recorded by another process arrive.

The store is synchronous (SQLAlchemy); its calls run in worker threads so the event loop keeps
serving PUBACKs while a batch is read. Passwords are never logged: the sink's ``repr`` and every
message name the broker by ``host:port`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

from dockwatch_core.errors import ConfigError, PublishError
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.mqtt_client import (
    BrokerUnavailable,
    ConnectOptions,
    Done,
    MqttConnection,
    PublishRefused,
)
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.sink import OutboxPager
from gateway.adapters.tls import client_context, warn_cleartext
from gateway.domain import payloads
from gateway.domain.views import AlertView, DeviceStatusView, RecordedView, StockView

if TYPE_CHECKING:
    from gateway.config import MqttSinkConfig

logger = logging.getLogger(__name__)

SINK_NAME = "mqtt"
"""The store cursor this sink owns (by default)."""
LIBRARY_LOGGER = f"{__name__}.paho"
"""paho-mqtt logs here, every line demoted to DEBUG (see :class:`_DemoteToDebug`)."""
STATE_WINDOW_MAX = 16
"""Retained-state publishes in flight at once (taken from the same Receive Maximum)."""


class MqttStore(Protocol):
    """The edge-store methods the MQTT sink uses (``edge_store.repository.EdgeStore``)."""

    def movements_since(self, after_seq: int, limit: int) -> Sequence[RecordedView]: ...

    def get_cursor(self, sink: str) -> int: ...

    def advance_cursor(self, sink: str, seq: int, *, now: datetime) -> None: ...

    def stock(self) -> Sequence[StockView]: ...

    def alerts(self, *, active_only: bool = ...) -> Sequence[AlertView]: ...

    def device_statuses(self) -> Sequence[DeviceStatusView]: ...


class Publisher(Protocol):
    """One live connection, as the relay and the state publisher see it
    (:class:`~gateway.adapters.mqtt_client.MqttConnection`)."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int, retain: bool, done: Done
    ) -> None: ...

    async def publish_wait(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None: ...


def _path(value: object | None) -> str | None:
    return None if value is None else str(value)


def _last_seq(batch: Sequence[RecordedView]) -> int | None:
    return batch[-1].seq if batch else None


_MAX_QUEUED_EVENTS = 1000


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is, parsed from ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``."""

    host: str
    port: int
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"}:
            raise ConfigError(f"sinks.mqtt.url: scheme must be mqtt:// or mqtts://, got {url!r}")
        if parts.username is not None or parts.password is not None:
            # A password inside a URL ends up in logs and process listings.
            raise ConfigError("sinks.mqtt.url: put credentials in username/password, not the URL")
        if not parts.hostname:
            raise ConfigError(f"sinks.mqtt.url: no host in {url!r}")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError(f"sinks.mqtt.url: bad port in {url!r}") from exc
        return cls(parts.hostname, port, tls)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _DemoteToDebug(logging.Filter):
    """paho-mqtt logs each socket failure at ERROR; the sink itself reports a connection's
    state (one error per outage, one line on recovery), so paho's lines are for debugging."""

    def __init__(self, library: logging.Logger) -> None:
        super().__init__()
        self._library = library

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self._library.isEnabledFor(logging.DEBUG)


def _library_logger() -> logging.Logger:
    library = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(f, _DemoteToDebug) for f in library.filters):
        library.addFilter(_DemoteToDebug(library))
    return library


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


# --------------------------------------------------------------------------------------------
# Movement relay


class MovementRelay:
    """Publishes the store's movements in ``seq`` order and advances the cursor on ack.

    Driven by :class:`MqttSink`: ``serve(publisher, window=...)`` runs while one connection
    lives and ``persist_cursor()`` runs for the sink's whole life.
    """

    def __init__(
        self,
        *,
        store: MqttStore,
        topic_prefix: str,
        qos: int = 1,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        cursor_flush_s: float = 0.1,
        sink_name: str = SINK_NAME,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._prefix = payloads.validate_prefix(topic_prefix)
        self._qos = qos
        self._batch_size = max(1, batch_size)
        self._cursor_flush_s = cursor_flush_s
        self._sink = sink_name
        self._clock = clock
        self._acked = 0
        self._persisted = 0
        self._loaded = False
        self._refused_seq: int | None = None
        self._pager = OutboxPager(self._read, _last_seq, poll_interval_s=poll_interval_s)
        self._acked_changed = asyncio.Event()

    @property
    def name(self) -> str:
        """The cursor's name in the store."""
        return self._sink

    @property
    def acked_seq(self) -> int:
        """Every movement with ``seq`` up to this one has been acknowledged by the broker."""
        return self._acked

    @property
    def persisted_seq(self) -> int:
        """The cursor as last written to the store."""
        return self._persisted

    def notify(self) -> None:
        """New movements were recorded: look at the outbox now. Call from the event loop."""
        self._pager.notify()

    async def load_cursor(self) -> int:
        """Read the durable cursor; the relay resumes after it."""
        cursor = await asyncio.to_thread(self._store.get_cursor, self._sink)
        self._acked = self._persisted = max(self._acked, cursor)
        self._loaded = True
        return cursor

    async def persist_cursor(self) -> None:
        """Write the acked position to the store whenever it moves (at most every
        ``cursor_flush_s``), until cancelled; on cancellation write it one last time."""
        writing: asyncio.Task[None] | None = None
        try:
            while True:
                await self._acked_changed.wait()
                self._acked_changed.clear()
                # Shielded: a cancellation must not abandon a write half-way in its thread.
                writing = asyncio.create_task(self._write_cursor())
                await asyncio.shield(writing)
                writing = None
                await asyncio.sleep(self._cursor_flush_s)
        except asyncio.CancelledError:
            if writing is not None:
                await asyncio.wait([writing])
            await self._write_cursor()
            raise

    async def _write_cursor(self) -> None:
        acked = self._acked
        if acked > self._persisted:
            now = self._clock()
            await asyncio.to_thread(self._store.advance_cursor, self._sink, acked, now=now)
            self._persisted = max(self._persisted, acked)

    async def serve(self, publisher: Publisher, *, window: int) -> None:
        """Publish from the acked position on, with at most ``window`` publishes awaiting their
        acknowledgement, until cancelled; raise the first failed publish's error."""
        if not self._loaded:
            await self.load_cursor()
        loop = asyncio.get_running_loop()
        # Seqs sent on this connection, oldest first, and how many copies of each await PUBACK.
        issued: deque[int] = deque()
        unacked_copies: dict[int, int] = {}
        in_flight = 0
        room = asyncio.Event()
        failed: asyncio.Future[PublishError] = loop.create_future()
        batches: asyncio.Queue[Sequence[RecordedView]] = asyncio.Queue(maxsize=2)

        def done(seq: int, error: PublishError | None) -> None:
            nonlocal in_flight
            in_flight -= 1
            room.set()
            if error is not None:
                if isinstance(error, PublishRefused) and self._refused_seq is None:
                    self._refused_seq = seq
                    logger.error(
                        "MQTT broker refuses movement seq %d: %s; retrying with backoff "
                        "(the cursor waits at %d)",
                        seq,
                        error,
                        self._acked,
                    )
                if not failed.done():
                    failed.set_result(error)
                return
            unacked_copies[seq] -= 1
            if unacked_copies[seq] or issued[0] != seq:
                return
            # Slide the cursor over every fully acked movement at the head of the window.
            while issued and unacked_copies[issued[0]] == 0:
                head = issued.popleft()
                del unacked_copies[head]
                self._acked = head
            self._acked_changed.set()
            if self._refused_seq is not None and self._acked >= self._refused_seq:
                logger.info("MQTT broker accepts movements again (cursor at %d)", self._acked)
                self._refused_seq = None

        async def pump() -> None:
            nonlocal in_flight
            qos = self._qos
            while True:
                batch = await batches.get()
                for recorded in batch:
                    payload = payloads.movement_json(recorded)
                    topics = payloads.movement_topics(self._prefix, recorded)
                    issued.append(recorded.seq)
                    unacked_copies[recorded.seq] = len(topics)
                    ack = functools.partial(done, recorded.seq)
                    for topic in topics:
                        while in_flight >= window:
                            room.clear()
                            await room.wait()
                        in_flight += 1
                        publisher.publish(topic, payload, qos=qos, retain=False, done=ack)

        async def fail() -> None:
            raise await failed

        async with asyncio.TaskGroup() as tg:
            # Reading the next batch overlaps with publishing this one (the queue holds two:
            # when publishing lags, reading waits).
            tg.create_task(self._pager.run(self._acked, batches.put))
            tg.create_task(pump())
            tg.create_task(fail())

    async def _read(self, after_seq: int) -> Sequence[RecordedView]:
        return await asyncio.to_thread(self._store.movements_since, after_seq, self._batch_size)


# --------------------------------------------------------------------------------------------
# Retained state and alerts


@dataclass(frozen=True, slots=True)
class _AlertEvent:
    alert: AlertView
    update_state: bool
    """False for events queued before a reconnect: the store snapshot is newer than they are."""


class _StatePublisher:
    """Retained stock levels, device statuses and active alerts; alert events."""

    def __init__(
        self,
        *,
        store: MqttStore,
        site: str,
        topic_prefix: str,
        qos: int,
        max_queued_alerts: int,
    ) -> None:
        self._store = store
        self._site = site
        self._prefix = topic_prefix
        self._qos = qos
        # topic -> payload of the newest state not yet published; bounded by the number of
        # locations x SKUs, devices and alert subjects, so it needs no other limit.
        self._pending: dict[str, bytes] = {}
        self._stock_seq: dict[str, int] = {}
        self._device_since: dict[str, datetime] = {}
        self._alerts: deque[_AlertEvent] = deque(maxlen=max(1, max_queued_alerts))
        # Pass events (topic, payload): news of the moment, so a short queue; the oldest go
        # first while the broker is away (the settled movements are in the outbox anyway).
        self._events: deque[tuple[str, bytes]] = deque(maxlen=_MAX_QUEUED_EVENTS)
        self._dropping_alerts = False
        self._refused_topics: set[str] = set()
        self._changed = asyncio.Event()

    def stock(self, levels: Iterable[StockView]) -> None:
        for level in levels:
            topic = payloads.stock_topic(self._prefix, level.location, level.sku)
            # Levels can reach us out of order (a snapshot read races a runtime update):
            # last_seq orders them, and an older level never replaces a newer one.
            if level.last_seq < self._stock_seq.get(topic, -1):
                continue
            self._stock_seq[topic] = level.last_seq
            self._pending[topic] = payloads.stock_json(self._site, level)
        self._changed.set()

    def device_status(self, status: DeviceStatusView) -> None:
        topic = payloads.device_status_topic(self._prefix, status.device_id)
        known = self._device_since.get(topic)
        if known is not None and status.since < known:
            return
        self._device_since[topic] = status.since
        self._pending[topic] = payloads.device_status_json(self._site, status)
        self._changed.set()

    def alert(self, alert: AlertView) -> None:
        if len(self._alerts) == self._alerts.maxlen and not self._dropping_alerts:
            self._dropping_alerts = True
            logger.warning(
                "MQTT alert queue full (%d): dropping the oldest alerts until the broker is back",
                self._alerts.maxlen,
            )
        self._alerts.append(_AlertEvent(alert, update_state=True))
        self._changed.set()

    def event(self, topic: str, payload: bytes) -> None:
        self._events.append((topic, payload))
        self._changed.set()

    def _alert_state(self, alert: AlertView) -> tuple[str, bytes]:
        topic = payloads.active_alert_topic(self._prefix, alert.kind, alert.subject)
        return topic, (payloads.alert_json(self._site, alert) if alert.active else payloads.CLEARED)

    async def serve(self, publisher: Publisher, *, window: int) -> None:
        """Republish the store's state, then publish updates as they come, until cancelled."""
        # Events queued so far are older than the snapshot: they still go out as events, but
        # must not overwrite the retained active-alert state the snapshot sets.
        self._alerts = deque(
            (_AlertEvent(e.alert, update_state=False) for e in self._alerts),
            maxlen=self._alerts.maxlen,
        )
        self._stock_seq.clear()
        self._device_since.clear()
        self._pending.clear()
        levels, statuses, alerts = await asyncio.to_thread(self._snapshot)
        self.stock(levels)
        for status in statuses:
            self.device_status(status)
        for alert in alerts:
            topic, payload = self._alert_state(alert)
            self._pending[topic] = payload
        while True:
            self._changed.clear()
            state, self._pending = self._pending, {}
            # If the connection dies now, the next snapshot republishes all of this state.
            await self._publish_retained(publisher, state, window)
            while self._alerts:
                event = self._alerts[0]
                alert = event.alert
                topic = payloads.alert_topic(self._prefix, alert.kind)
                await self._publish(publisher, topic, payloads.alert_json(self._site, alert), False)
                if event.update_state:
                    await self._publish(publisher, *self._alert_state(alert), True)
                # Removed only once acknowledged: an alert is not lost to a dying connection.
                if self._alerts and self._alerts[0] is event:
                    self._alerts.popleft()
            self._dropping_alerts = False
            while self._events:
                head = self._events[0]
                await self._publish(publisher, *head, False)
                if self._events and self._events[0] is head:
                    self._events.popleft()
            if not self._pending:
                await self._changed.wait()

    def _snapshot(
        self,
    ) -> tuple[Sequence[StockView], Sequence[DeviceStatusView], Sequence[AlertView]]:
        return (
            self._store.stock(),
            self._store.device_statuses(),
            self._store.alerts(active_only=False),
        )

    async def _publish(
        self, publisher: Publisher, topic: str, payload: bytes, retain: bool
    ) -> None:
        try:
            await publisher.publish_wait(topic, payload, qos=self._qos, retain=retain)
        except PublishRefused as exc:
            # State is not in the outbox; stalling on it would stall nothing useful. Log once.
            if topic not in self._refused_topics:
                self._refused_topics.add(topic)
                logger.warning("%s; this state update is skipped", exc)

    async def _publish_retained(
        self, publisher: Publisher, state: dict[str, bytes], window: int
    ) -> None:
        if not state:
            return
        slots = asyncio.Semaphore(window)

        async def one(topic: str, payload: bytes) -> None:
            try:
                await self._publish(publisher, topic, payload, True)
            finally:
                slots.release()

        async with asyncio.TaskGroup() as tg:
            for topic, payload in state.items():
                await slots.acquire()
                tg.create_task(one(topic, payload))


# --------------------------------------------------------------------------------------------
# The sink: one connection, reconnecting for ever


class MqttSink:
    """Streams the store's movements and state to an MQTT broker; see the module docstring.

    Usage (in the composition root)::

        sink = MqttSink(store=store, site="dc-east", url="mqtt://127.0.0.1:1883",
                        topic_prefix="dockwatch/dc-east")
        task_group.create_task(sink.run())
        ...
        result = store.record(movements, now=now)
        sink.notify()
        sink.publish_stock(result.stock)

    ``run()`` returns only by cancellation (then it publishes ``offline`` and disconnects
    cleanly), or raises ``ConfigError`` for unusable TLS files or the store's ``StoreError``.
    ``notify()`` and the ``publish_*`` methods never block and must be called from the event
    loop's thread.
    """

    def __init__(
        self,
        *,
        store: MqttStore,
        site: str,
        url: str,
        topic_prefix: str,
        qos: int = 1,
        client_id: str | None = None,
        protocol: Literal["5", "3.1.1"] = "5",
        keepalive_s: float = 30.0,
        inflight_max: int = 256,
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_insecure: bool = False,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        cursor_flush_s: float = 0.1,
        cursor_name: str = SINK_NAME,
        max_queued_alerts: int = 1000,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ConfigError(f"sinks.mqtt.qos must be 0, 1 or 2, got {qos}")
        if protocol not in ("5", "3.1.1"):
            raise ConfigError(f"sinks.mqtt.protocol must be '5' or '3.1.1', got {protocol!r}")
        if keepalive_s < 1:
            raise ConfigError(f"sinks.mqtt.keepalive_s must be >= 1, got {keepalive_s}")
        if inflight_max < 1:
            raise ConfigError(f"sinks.mqtt.inflight_max must be >= 1, got {inflight_max}")
        try:
            prefix = payloads.validate_prefix(topic_prefix)
        except ValueError as exc:
            raise ConfigError(f"sinks.mqtt.topic_prefix: {exc}") from exc
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ConfigError("sinks.mqtt.tls: cert_file and key_file go together")
        self.address = BrokerAddress.from_url(url)
        self._client_id = client_id or f"dockwatch-{site}"
        self._protocol = protocol
        self._qos = qos
        self._keepalive = max(1, round(keepalive_s))
        self._inflight_max = inflight_max
        self._username = username
        self._password = password
        self._tls_files = (tls_ca_file, tls_cert_file, tls_key_file)
        self._tls = self.address.tls or any(self._tls_files)
        self._tls_insecure = tls_insecure
        self._backoff = backoff or Backoff(
            BackoffPolicy(initial_s=reconnect_initial_s, max_s=reconnect_max_s)
        )
        mode = f"MQTT {protocol}" + (", TLS" if self._tls else "")
        self._outage = Outage(
            str(self.address),
            log=logger,
            backoff=self._backoff,
            clock=monotonic,
            words=OutageWords(
                down="MQTT broker {link} unavailable: {reason}; movements wait in the store and "
                "are sent when it is back (retrying with backoff up to "
                f"{self._backoff.policy.max_s:.0f} s)",
                back="MQTT broker {link} reachable again after {seconds:.1f} s and "
                "{attempts} failed attempts (" + mode + ")",
                next="next MQTT connection attempt to {link} in {delay:.2f} s",
            ),
        )
        self._connect_timeout_s = connect_timeout_s
        self._monotonic = monotonic
        self._status_topic = payloads.gateway_status_topic(prefix)
        self._prefix = prefix
        self.relay = MovementRelay(
            store=store,
            topic_prefix=prefix,
            qos=qos,
            batch_size=batch_size,
            poll_interval_s=poll_interval_s,
            cursor_flush_s=cursor_flush_s,
            sink_name=cursor_name,
            clock=clock,
        )
        self._state = _StatePublisher(
            store=store,
            site=site,
            topic_prefix=prefix,
            qos=qos,
            max_queued_alerts=max_queued_alerts,
        )
        self._connected = False
        self._announced = False

    @classmethod
    def from_config(
        cls,
        config: MqttSinkConfig,
        store: MqttStore,
        *,
        site: str,
        environ: Mapping[str, str] | None = None,
    ) -> MqttSink:
        """A sink for the ``sinks.mqtt`` config slice (resolves its password now)."""
        password = None if config.password is None else config.password.reveal(environ)
        if password is not None and not config.use_tls:
            warn_cleartext("sinks.mqtt", config.host, "the MQTT password")
        tls = config.tls
        return cls(
            store=store,
            site=site,
            url=config.url,
            topic_prefix=config.topic_prefix,
            qos=config.qos,
            client_id=config.client_id,
            protocol=config.protocol,
            keepalive_s=config.keepalive_s,
            inflight_max=config.inflight_max,
            username=config.username,
            password=password,
            tls_ca_file=_path(tls.ca_file) if tls else None,
            tls_cert_file=_path(tls.cert_file) if tls else None,
            tls_key_file=_path(tls.key_file) if tls else None,
            tls_insecure=tls.insecure if tls else False,
            reconnect_initial_s=config.reconnect.initial_s,
            reconnect_max_s=config.reconnect.max_s,
        )

    def __repr__(self) -> str:
        return f"MqttSink({self.address}, prefix={self._prefix!r}, client_id={self._client_id!r})"

    @property
    def name(self) -> str:
        return self.relay.name

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def acked_seq(self) -> int:
        """Every movement up to this seq was acknowledged by the broker."""
        return self.relay.acked_seq

    # -- what the application calls ---------------------------------------------------------

    def notify(self) -> None:
        """New movements were recorded: publish them now rather than at the next poll."""
        self.relay.notify()

    def publish_stock(self, levels: Iterable[StockView]) -> None:
        """Publish (retained) these stock levels; an older level never replaces a newer one."""
        self._state.stock(levels)

    def publish_device_status(self, status: DeviceStatusView) -> None:
        """Publish (retained) a device's status."""
        self._state.device_status(status)

    def publish_alert(self, alert: AlertView) -> None:
        """Publish an alert event, and set (active) or clear (inactive) its retained state."""
        self._state.alert(alert)

    def publish_event(self, topic: str, payload: bytes) -> None:
        """Publish a message that is not in the outbox (QoS of the sink, not retained), e.g. a
        door's pass events (``payloads.door_passes_topic``). Queued while the broker is away,
        at most ``_MAX_QUEUED_EVENTS`` (the oldest are dropped)."""
        self._state.event(topic, payload)

    def publish_pass(self, portal_id: str, payload: bytes) -> None:
        """Publish a door's pass event (JSON) on ``{prefix}/doors/{portal}/passes``."""
        self.publish_event(payloads.door_passes_topic(self._prefix, portal_id), payload)

    # -- the connection loop ----------------------------------------------------------------

    async def run(self) -> None:
        tls_context = await asyncio.to_thread(self._tls_context) if self._tls else None
        await self.relay.load_cursor()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.relay.persist_cursor())
            tg.create_task(self._connect_forever(tls_context))

    async def _connect_forever(self, tls_context: ssl.SSLContext | None) -> None:
        options = ConnectOptions(
            host=self.address.host,
            port=self.address.port,
            client_id=self._client_id,
            protocol=self._protocol,
            keepalive_s=self._keepalive,
            username=self._username,
            password=self._password,
            tls_context=tls_context,
            will_topic=self._status_topic,
            will_payload=payloads.GATEWAY_OFFLINE,
            connect_timeout_s=self._connect_timeout_s,
        )
        while True:
            try:
                await self._connect_and_serve(options)
            except PublishRefused as exc:
                # The relay logged it once; the connection itself is fine.
                logger.debug("reconnecting to %s after a refused publish: %s", self.address, exc)
            except BrokerUnavailable as exc:
                self._connected = False
                self._outage.failed(exc.reason)
            await self._outage.pause()

    async def _connect_and_serve(self, options: ConnectOptions) -> None:
        connection = MqttConnection(options, log=_library_logger())
        try:
            await connection.connect()
            self._up()
            await self._serve(connection)
        except asyncio.CancelledError:
            if self._connected:
                # A clean DISCONNECT suppresses the Last Will: say goodbye ourselves.
                with contextlib.suppress(PublishError, TimeoutError):
                    async with asyncio.timeout(2.0):
                        await connection.publish_wait(
                            self._status_topic, payloads.GATEWAY_OFFLINE, qos=1, retain=True
                        )
            raise
        finally:
            self._connected = False
            await connection.close()

    async def _serve(self, connection: MqttConnection) -> None:
        limit = self._inflight_max
        if connection.receive_maximum is not None:
            limit = min(limit, connection.receive_maximum)
        # Movements and state share the broker's budget of un-acknowledged publishes.
        state_window = max(1, min(STATE_WINDOW_MAX, limit // 4))
        relay_window = max(1, limit - state_window)

        async def watch() -> None:
            reason = await asyncio.shield(connection.lost)
            raise BrokerUnavailable(f"connection lost: {reason}")

        async def announce_then_state() -> None:
            await connection.publish_wait(
                self._status_topic, payloads.GATEWAY_ONLINE, qos=1, retain=True
            )
            await self._state.serve(connection, window=state_window)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(watch())
                tg.create_task(announce_then_state())
                tg.create_task(self.relay.serve(connection, window=relay_window))
        except BaseExceptionGroup as group:
            # Report the connection's failure as one error, not as a group of its symptoms.
            lost, rest = group.split(PublishError)
            if rest is not None or lost is None:
                raise
            raise _first_error(lost) from group

    def _up(self) -> None:
        self._connected = True
        if self._outage.recovered() is None:  # else the outage's end was the news
            if not self._announced:
                mode = f"MQTT {self._protocol}" + (", TLS" if self._tls else "")
                logger.info(
                    "connected to MQTT broker %s (%s) as %s", self.address, mode, self._client_id
                )
            else:  # a deliberate reconnection (after a refused publish): nothing went down
                logger.debug("reconnected to MQTT broker %s", self.address)
        self._announced = True

    def _tls_context(self) -> ssl.SSLContext:
        ca_file, cert_file, key_file = self._tls_files
        # Like mosquitto_pub --insecure: the chain is still verified, the host name is not.
        context = client_context(
            ca_file=ca_file,
            cert_file=cert_file if key_file is not None else None,
            key_file=key_file if cert_file is not None else None,
            check_hostname=not self._tls_insecure,
            key="sinks.mqtt.tls",
        )
        context.sslsocket_class = _ClosingSSLSocket
        return context


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails.

    paho-mqtt 2.2 lets the exception of a failed handshake (a bad certificate) escape without
    closing the socket it wrapped, leaking one file descriptor per reconnection attempt.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise
