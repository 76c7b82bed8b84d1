"""One MQTT connection for publishing: paho-mqtt's protocol engine driven by the asyncio loop.

Theory of operation
-------------------
paho-mqtt encodes and decodes MQTT 3.1.1 and 5; it offers an "external event loop" interface
(``on_socket_open``/``on_socket_register_write``... callbacks plus ``loop_read``/
``loop_write``/``loop_misc``), which this module wires to the running asyncio loop, so no paho
thread exists and every paho callback runs on the loop's thread. Only the blocking part of
connecting (TCP connect and TLS handshake) runs in a worker thread; the socket callbacks it
triggers are handed to the loop with ``call_soon_threadsafe``.

Why not aiomqtt (which does the same for a general-purpose client): the relay needs what
aiomqtt does not expose. (1) A v5 PUBACK may carry a failure reason code (for example 0x87,
"not authorized", when an ACL forbids the topic): aiomqtt reports it as success, which would let
the cursor pass a movement the broker dropped. (2) The broker's CONNACK ``Receive Maximum``
bounds how many QoS>0 publishes may await their PUBACK; exceeding it is a protocol error for
brokers that enforce it. (3) A pending publish must fail at once when the connection drops,
not after a timeout. (4) At thousands of messages per second a callback per PUBACK costs far
less than a task and an event per publish.

Contract: :meth:`MqttConnection.publish` calls its ``done`` callback exactly once per accepted
publish, on the loop thread: with ``None`` on PUBACK (QoS 1), PUBCOMP (QoS 2) or once written
(QoS 0); with a :class:`PublishRefused` for a v5 failure reason code; with a
:class:`ConnectionLost` when the connection ends first. ``lost`` resolves (never raises) with
the reason when the connection ends, for whatever cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from dockwatch_core.errors import PublishError

Done = Callable[["PublishError | None"], None]

MQTT_V5 = "5"
MQTT_V311 = "3.1.1"
_MISC_INTERVAL_S = 1.0
"""How often paho's keepalive bookkeeping runs (sends PINGREQ, detects a silent broker)."""


class BrokerUnavailable(PublishError):
    """The broker could not be reached, refused the connection, or the connection ended."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConnectionLost(BrokerUnavailable):
    """The connection ended while a publish awaited its acknowledgement."""


class PublishRefused(PublishError):
    """The broker acknowledged a publish with a failure reason code (MQTT 5)."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"broker refused the publish on {topic}: {reason}")


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    host: str
    port: int
    client_id: str
    protocol: str = MQTT_V5
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    will_topic: str | None = None
    will_payload: bytes = b""
    connect_timeout_s: float = 10.0

    def __repr__(self) -> str:
        # The password must never reach a log line, even through a repr in a traceback.
        return (
            f"ConnectOptions({self.host}:{self.port}, client_id={self.client_id!r}, "
            f"protocol={self.protocol}, tls={self.tls_context is not None})"
        )


def _reason_text(rc: ReasonCode | int) -> str:
    if isinstance(rc, ReasonCode):
        return f"{rc.getName()} (reason code {rc.value:#04x})"
    return paho.error_string(rc)


class MqttConnection:
    """One connection's life: ``await connect()``, ``publish(...)`` many times, ``close()``.

    Not reusable: a new connection attempt uses a new instance (and a clean session; the relay
    resends from its cursor, so no broker-side session state is needed).
    """

    def __init__(self, options: ConnectOptions, *, log: logging.Logger) -> None:
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        v5 = options.protocol == MQTT_V5
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client = self._client
        if log.isEnabledFor(logging.DEBUG):
            # paho formats a line per packet; at thousands of packets a second that costs.
            client.enable_logger(log)
        # Our own window bounds what is in flight; paho must send at once, never queue.
        client.max_inflight_messages_set(0)
        client.connect_timeout = options.connect_timeout_s
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if options.tls_context is not None:
            client.tls_set_context(options.tls_context)
        if options.will_topic is not None:
            client.will_set(options.will_topic, options.will_payload, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        # The CONNACK's outcome: None when accepted, else why not (a result, not an exception,
        # so a connection that ends before anyone awaits it leaves nothing unretrieved).
        self._connack: asyncio.Future[str | None] = self._loop.create_future()
        self.lost: asyncio.Future[str] = self._loop.create_future()
        """Resolves with the reason when the connection ends; await it through asyncio.shield
        (a cancelled waiter would cancel it)."""
        self._ended = False
        self._end_reason = ""
        self._pending: dict[int, tuple[str, Done]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.receive_maximum: int | None = None
        """The broker's Receive Maximum (MQTT 5; None means no limit was announced)."""

    # -- public -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and wait for a positive CONNACK; raise :class:`BrokerUnavailable` if not."""
        try:
            refusal = await self._handshake()
        except BaseException:
            self._teardown()
            raise
        if refusal is not None:
            self._teardown()
            raise BrokerUnavailable(refusal)
        name = f"mqtt-keepalive-{self._options.client_id}"
        self._misc = asyncio.create_task(self._misc_loop(), name=name)

    async def _handshake(self) -> str | None:
        o = self._options
        try:
            # TCP connect and TLS handshake block; paho bounds them with connect_timeout.
            await self._loop.run_in_executor(None, self._blocking_connect)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise BrokerUnavailable(_describe_socket_error(exc)) from exc
        try:
            async with asyncio.timeout(o.connect_timeout_s):
                return await self._connack
        except TimeoutError as exc:
            raise BrokerUnavailable(f"no CONNACK within {o.connect_timeout_s:g} s") from exc

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool, done: Done) -> None:
        """Send one PUBLISH; ``done`` is called once with its outcome (see the module doc).

        Raises :class:`BrokerUnavailable` (and does not call ``done``) if the connection is
        already gone.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            reason = self._end_reason or paho.error_string(info.rc)
            raise BrokerUnavailable(f"cannot publish on {topic}: {reason}")
        self._pending[info.mid] = (topic, done)

    async def publish_wait(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        """Publish and wait for the outcome; raise its error, if any."""
        outcome: asyncio.Future[PublishError | None] = self._loop.create_future()

        def done(error: PublishError | None) -> None:
            if not outcome.done():  # the waiter may have been cancelled meanwhile
                outcome.set_result(error)

        self.publish(topic, payload, qos=qos, retain=retain, done=done)
        error = await outcome
        if error is not None:
            raise error

    async def close(self, *, timeout_s: float = 2.0) -> None:
        """Disconnect cleanly (the broker then discards the Last Will) and release the socket."""
        if not self._ended:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self.lost)
        self._teardown()
        if self._misc is not None:
            await asyncio.wait([self._misc])

    # -- connecting ---------------------------------------------------------------------------

    def _blocking_connect(self) -> None:
        o = self._options
        # A clean session (MQTT 5: clean start, no Session Expiry Interval, i.e. 0): the broker
        # keeps nothing for us, because the relay resends from its own durable cursor.
        if o.protocol == MQTT_V5:
            self._client.connect(o.host, o.port, keepalive=o.keepalive_s, clean_start=True)
        else:
            self._client.connect(o.host, o.port, keepalive=o.keepalive_s)

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_result(f"connection refused by broker: {_reason_text(reason)}")
            return
        if properties is not None and hasattr(properties, "ReceiveMaximum"):
            self.receive_maximum = int(properties.ReceiveMaximum)
        self._connack.set_result(None)

    # -- the loop's side of paho ----------------------------------------------------------------

    def _on_loop(self, callback: Callable[..., object], *args: object) -> None:
        # paho calls the socket callbacks from the connecting worker thread too.
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._watch_socket, sock)

    def _watch_socket(self, sock: socket.socket) -> None:
        if self._ended:
            return
        self._sock = sock
        self._loop.add_reader(sock, self._readable)

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._forget_socket, sock)

    def _forget_socket(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        self._sock = None

    def _on_socket_register_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_write, sock)

    def _want_write(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0 and not self._ended:
            self._loop.add_writer(sock, self._writable)

    def _on_socket_unregister_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._on_loop(self._no_write, sock)

    def _no_write(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        try:
            self._client.loop_read()
            # TLS: decrypted bytes can wait inside the SSL object while the socket itself has
            # nothing left to read, so the selector would not wake us for them.
            sock = self._client.socket()
            while isinstance(sock, ssl.SSLSocket) and sock.pending():
                self._client.loop_read()
                sock = self._client.socket()
        except Exception as exc:  # noqa: BLE001 - an event-loop callback: any failure ends the connection, reported once through `lost`
            self._connection_ended(f"read failed: {exc}")

    def _writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # noqa: BLE001 - as in _readable
            self._connection_ended(f"write failed: {exc}")

    async def _misc_loop(self) -> None:
        while not self._ended:
            await asyncio.sleep(_MISC_INTERVAL_S)
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._connection_ended("keepalive: the broker stopped answering")

    # -- outcomes -------------------------------------------------------------------------------

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _properties: Properties,
    ) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        topic, done = entry
        done(PublishRefused(topic, _reason_text(reason)) if reason.is_failure else None)

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            self._connection_ended(f"disconnected by broker: {_reason_text(reason)}")
        elif reason.value == 0:
            self._connection_ended("disconnected")
        else:
            self._connection_ended(f"connection lost ({reason.getName()})")

    def _connection_ended(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self._end_reason = reason
            if not self.lost.done():  # it is cancelled if a waiter forgot asyncio.shield
                self.lost.set_result(reason)
        if not self._connack.done():
            self._connack.set_result(reason)
        pending, self._pending = self._pending, {}
        for topic, done in pending.values():
            done(ConnectionLost(f"{reason} before the broker acknowledged {topic}"))

    def _teardown(self) -> None:
        """Release the socket and the keepalive task; never raises."""
        self._connection_ended("closed")
        if self._misc is not None:
            self._misc.cancel()
        client = self._client
        # paho would call these again from its finaliser, on a loop that may be closed.
        client.on_socket_close = client.on_socket_unregister_write = None
        client.on_disconnect = None
        sock = client.socket()
        if sock is not None:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            sock.close()
        self._sock = None


def _describe_socket_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return "TCP connect timed out"
    return str(exc) or type(exc).__name__
