"""The local gRPC API (``dockwatch.edge.v1.EdgeApi``): watch movements, query stock and status.

Theory of operation
-------------------
The API is read-only and stateless: every call reads the edge store (whose API is synchronous)
in a worker thread (``asyncio.to_thread``), so a slow database never blocks the event loop.

``WatchMovements(after_seq)``: a watch pages ``movements_since(cursor, page_size)`` and sends each
movement in seq order, advancing its cursor. A short page means it has caught up; it then waits
for :meth:`EdgeApiServer.notify` (the app calls it after each ``EdgeStore.record``) or at most
``poll_interval_s`` (a safety net for movements another process recorded, or a missed notify),
and pages again. seq is gap-free and only grows, so paging by cursor neither skips nor repeats.
The wake-up is a *generation event*: ``notify()`` sets the current event and installs a fresh
one, and a watch takes the current event *before* it reads the store, so a notify landing between
its read and its wait is never lost. gRPC flow control is the back-pressure: a watch awaits each
write, so a slow client costs one page of memory, not a growing queue.

``GetStock``: ``as_of_seq`` must be exactly the seq the levels include. The store reads them in
separate transactions, so the snapshot reads ``last_seq``, the levels, then ``last_seq`` again:
every ``record`` commits its movements, levels and counter together, so an unchanged counter
proves no movement was committed in between. It retries a few times and answers ``ABORTED``
(retry) if writes never pause.

Security: TLS (server certificate, optionally client certificates signed by ``tls_client_ca_file``
for mutual TLS) and a bearer token (``authorization: Bearer <token>`` metadata, compared with
``hmac.compare_digest``, ``UNAUTHENTICATED`` otherwise), checked by a server interceptor so that
every method, present or future, is covered. An API with neither a token nor client
certificates may only listen on a loopback address: anything else is a :class:`ConfigError`.
Refused calls are logged at most once per ``REFUSAL_LOG_EVERY_S`` (with a count); the token is
never logged.

Shutdown: :meth:`EdgeApiServer.stop` first ends open watches with ``UNAVAILABLE`` (clients
resume with their last seq), then gives unary calls ``grace_s`` to finish.

A watch whose ``after_seq`` is beyond the store's last seq is refused with ``OUT_OF_RANGE`` (its
position comes from another store); at most ``max_watches`` are open at once
(``RESOURCE_EXHAUSTED`` beyond), so that watches, which never end on their own, cannot take every
slot from the short queries.

Defaults: ``page_size=500``, ``poll_interval_s=5``, ``max_watches=32``, ``stop_grace_s=2``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, Protocol, TypeAlias, TypeVar

import grpc

from gateway import __version__
from gateway.adapters.proto_convert import (
    alert_to_proto,
    datetime_to_timestamp,
    device_status_to_proto,
    movement_to_proto,
    stock_level_to_proto,
)
from gateway.domain.model import Alert, DeviceStatus, RecordedMovement, StockLevel
from gateway.errors import ConfigError, GatewayError, ProtocolError, StoreError
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from gateway.config import ApiConfig

__all__ = [
    "EdgeApiServer",
    "EdgeStoreReader",
    "RefusalLog",
    "RuntimeStatus",
    "bearer_matches",
    "check_auth_rule",
    "check_token",
    "is_loopback_listen",
    "listen_host",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SNAPSHOT_ATTEMPTS = 8
"""GetStock reads (last_seq, levels, last_seq) at most this often before answering ABORTED."""
UNARY_CALLS_MAX = 32
"""Queries served at once besides the watches (more wait in gRPC's queue or are refused)."""
REFUSAL_LOG_EVERY_S = 60.0
"""At most one log line per this many seconds about refused (unauthenticated) calls."""

_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class EdgeStoreReader(Protocol):
    """The part of ``edge_store.EdgeStore`` the API reads (all synchronous)."""

    def movements_since(self, after_seq: int, limit: int = 500) -> list[RecordedMovement]: ...
    def last_seq(self) -> int: ...
    def stock(self, *, location: str | None = None, sku: str | None = None) -> list[StockLevel]: ...
    def alerts(self, *, active_only: bool = True) -> list[Alert]: ...
    def device_statuses(self) -> list[DeviceStatus]: ...
    def cursors(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    """What only the running gateway knows, for ``GetStatus`` (the store knows the rest).

    ``sinks`` maps each configured sink (``"mqtt"``, ``"central"``) to whether it is connected
    now; a sink with a cursor in the store but absent here is reported as not connected.
    """

    started_at: datetime
    sinks: Mapping[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError(f"started_at must be timezone-aware, got {self.started_at!r}")


# --- listen addresses and bearer tokens (shared with gateway.adapters.metrics) ----------------


def listen_host(listen: str) -> str:
    """The host part of ``host:port`` / ``[v6]:port`` (port 0 allowed); ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be 'host:port', got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    if ":" in host:
        raise ValueError(f"an IPv6 address must be in brackets, got {listen!r}")
    return host


def is_loopback_listen(listen: str) -> bool:
    """Whether ``listen`` binds only loopback. Host names other than ``localhost`` are not
    resolved and count as non-loopback (they could resolve to anything later)."""
    host = listen_host(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: str | None, key: str) -> bytes | None:
    """The token as bytes for :func:`bearer_matches`; ConfigError if it cannot be a bearer token."""
    if token is None:
        return None
    if not token or token != token.strip() or any(c.isspace() for c in token):
        raise ConfigError(f"{key}: the API token must be non-empty and contain no blanks")
    if not token.isascii() or not token.isprintable():
        raise ConfigError(f"{key}: the API token must be printable ASCII")
    return token.encode("ascii")


def bearer_matches(expected: bytes, header: str | bytes | None) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <expected>`` (scheme case-insensitive).

    The token comparison takes the same time wherever the first difference is.
    """
    if header is None:
        return False
    raw = header if isinstance(header, bytes) else header.encode("utf-8", "replace")
    scheme, _, credentials = raw.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), expected)


class RefusalLog:
    """Logs refused calls as state changes: one line, then a count at most every ``every_s``."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        every_s: float = REFUSAL_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0
        self.total = 0

    def refused(self, peer: str, reason: str) -> None:
        self.total += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._every_s:
            self._suppressed += 1
            return
        self._log.warning(
            "%s refused a call from %s: %s (%d more refused since the last report; "
            "next report in %.0f s at the earliest)",
            self._what,
            peer,
            reason,
            self._suppressed,
            self._every_s,
        )
        self._last = now
        self._suppressed = 0


def check_auth_rule(
    *, listen: str, key: str, authenticated: bool, what: str, logger: logging.Logger
) -> None:
    """ConfigError for an unauthenticated service on a non-loopback address; a warning on
    loopback (an unauthenticated local service is fine for a bench, worth saying once)."""
    try:
        loopback = is_loopback_listen(listen)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    if authenticated:
        return
    if not loopback:
        raise ConfigError(
            f"{key}: refusing to serve the {what} without authentication on {listen!r}, a "
            "non-loopback address: configure a token (api.token_file or api.token_env)"
            + (" or client certificates (api.tls.client_ca_file)" if what == "gRPC API" else "")
            + ", or listen on 127.0.0.1"
        )
    logger.warning(
        "%s on %s requires no authentication: it listens on loopback only, so only local "
        "processes can reach it",
        what,
        listen,
    )


# --- the servicer ------------------------------------------------------------------------------


class _Watches:
    """Wakes the open watches: a generation event (see the module docstring)."""

    def __init__(self) -> None:
        self.news = asyncio.Event()
        self.closing = False
        self.active = 0

    def notify(self) -> None:
        self.news.set()
        self.news = asyncio.Event()

    def close(self) -> None:
        self.closing = True
        self.notify()


class _EdgeApi(edge_api_pb2_grpc.EdgeApiServicer):
    def __init__(
        self,
        store: EdgeStoreReader,
        *,
        site: str,
        watches: _Watches,
        status: Callable[[], RuntimeStatus],
        page_size: int,
        poll_interval_s: float,
        max_watches: int,
    ) -> None:
        self._store = store
        self._site = site
        self._watches = watches
        self._status = status
        self._page_size = page_size
        self._poll_interval_s = poll_interval_s
        self._max_watches = max_watches
        self._store_ok = True

    async def _read(
        self, context: _Context, operation: str, fn: Callable[P, T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn`` in a worker thread; a store failure becomes UNAVAILABLE for the client and one
        log line when the store becomes unreadable (and one when it is back)."""
        try:
            result = await asyncio.to_thread(fn, *args, **kw)
        except StoreError as exc:
            failure = exc
        else:
            if not self._store_ok:
                self._store_ok = True
                log.info("local API: the edge store answers again")
            return result
        if self._store_ok:
            self._store_ok = False
            log.error("local API: %s failed, answering UNAVAILABLE: %s", operation, failure)
        else:
            log.debug("local API: %s failed: %s", operation, failure)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"edge store unavailable: {failure}")

    async def _convert(
        self, context: _Context, fn: Callable[P, T], *args: P.args, **kw: P.kwargs
    ) -> T:
        try:
            return fn(*args, **kw)
        except ProtocolError as exc:  # a stored value the wire format cannot carry: a bug
            failure = exc
        log.error("local API: cannot encode a response: %s", failure)
        await context.abort(grpc.StatusCode.INTERNAL, f"cannot encode the response: {failure}")

    async def WatchMovements(
        self, request: edge_api_pb2.WatchRequest, context: _Context
    ) -> AsyncIterator[types_pb2.Movement]:
        watches = self._watches
        cursor = request.after_seq
        peer = context.peer()
        if watches.active >= self._max_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{watches.active} watches are open, the most this gateway serves",
            )
        watches.active += 1
        try:
            last_seq = await self._read(context, "WatchMovements", self._store.last_seq)
            if cursor > last_seq:
                # Resuming past the end means the client's position comes from another store
                # (or this one was replaced): waiting would hide that, and skip what comes first.
                await context.abort(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"after_seq {cursor} is beyond the last recorded seq {last_seq}",
                )
            log.debug("watch from %s opened after seq %d", peer, cursor)
            while True:
                news = watches.news  # taken before reading: a notify after this wakes us
                if watches.closing:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is stopping")
                page = await self._read(
                    context, "WatchMovements", self._store.movements_since, cursor, self._page_size
                )
                for recorded in page:
                    yield await self._convert(context, movement_to_proto, recorded)
                    cursor = recorded.seq
                if len(page) < self._page_size:
                    try:
                        async with asyncio.timeout(self._poll_interval_s):
                            await news.wait()
                    except TimeoutError:
                        pass  # the safety-net poll
        finally:
            watches.active -= 1
            log.debug("watch from %s closed at seq %d", peer, cursor)

    async def GetStock(
        self, request: edge_api_pb2.StockQuery, context: _Context
    ) -> edge_api_pb2.StockSnapshot:
        snapshot = await self._read(
            context, "GetStock", self._stock_snapshot, request.location or None, request.sku or None
        )
        if snapshot is None:
            await context.abort(
                grpc.StatusCode.ABORTED, "movements kept arriving during the snapshot; retry"
            )
        levels, as_of = snapshot
        return await self._convert(
            context,
            lambda: edge_api_pb2.StockSnapshot(
                site=self._site,
                levels=[stock_level_to_proto(level, site=self._site) for level in levels],
                as_of_seq=as_of,
            ),
        )

    def _stock_snapshot(
        self, location: str | None, sku: str | None
    ) -> tuple[list[StockLevel], int] | None:
        store = self._store
        for _ in range(SNAPSHOT_ATTEMPTS):
            before = store.last_seq()
            levels = store.stock(location=location, sku=sku)
            if store.last_seq() == before:
                return levels, before
        return None

    async def ListAlerts(
        self, request: edge_api_pb2.AlertQuery, context: _Context
    ) -> edge_api_pb2.AlertList:
        alerts = await self._read(
            context,
            "ListAlerts",
            lambda: self._store.alerts(active_only=not request.include_cleared),
        )
        return await self._convert(
            context,
            lambda: edge_api_pb2.AlertList(
                # The store answers oldest first; the API promises newest first.
                alerts=[alert_to_proto(a, site=self._site) for a in reversed(alerts)]
            ),
        )

    async def ListDevices(
        self, request: edge_api_pb2.DeviceQuery, context: _Context
    ) -> edge_api_pb2.DeviceList:
        devices = await self._read(context, "ListDevices", self._store.device_statuses)
        return await self._convert(
            context,
            lambda: edge_api_pb2.DeviceList(
                devices=[
                    device_status_to_proto(d, site=self._site)
                    for d in sorted(devices, key=lambda d: d.device_id)
                ]
            ),
        )

    async def GetStatus(
        self, request: edge_api_pb2.StatusRequest, context: _Context
    ) -> edge_api_pb2.GatewayStatus:
        last_seq, cursors = await self._read(context, "GetStatus", self._seq_and_cursors)
        runtime = self._status()
        sinks = [
            edge_api_pb2.SinkStatus(
                name=name,
                cursor=cursors.get(name, 0),
                lag=max(0, last_seq - cursors.get(name, 0)),
                connected=runtime.sinks.get(name, False),
            )
            for name in sorted(set(cursors) | set(runtime.sinks))
        ]
        return await self._convert(
            context,
            lambda: edge_api_pb2.GatewayStatus(
                site=self._site,
                version=__version__,
                started_at=datetime_to_timestamp(runtime.started_at),
                last_seq=last_seq,
                sinks=sinks,
            ),
        )

    def _seq_and_cursors(self) -> tuple[int, dict[str, int]]:
        # Cursors first: a cursor never passes last_seq, so the lag read this way is never < 0.
        cursors = self._store.cursors()
        return self._store.last_seq(), cursors


# --- authentication ----------------------------------------------------------------------------


class _BearerAuth(grpc.aio.ServerInterceptor):
    """Refuses every call without ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, expected: bytes, refusals: RefusalLog) -> None:
        self._expected = expected
        self._refusals = refusals

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        metadata: Sequence[tuple[str, str | bytes]] = handler_call_details.invocation_metadata or ()
        given = next((value for key, value in metadata if key == "authorization"), None)
        handler = await continuation(handler_call_details)
        if bearer_matches(self._expected, given):
            return handler
        reason = "no bearer token" if given is None else "wrong bearer token"
        refusals = self._refusals

        # A coroutine serves a streaming method too (grpc.aio awaits it; it would write with
        # context.write), so one refusal fits both shapes.
        async def refuse(request: object, context: _Context) -> NoReturn:
            refusals.refused(context.peer(), f"{handler_call_details.method}: {reason}")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing bearer token")

        if handler is None:  # unknown methods too: an unauthenticated client learns nothing
            return grpc.unary_unary_rpc_method_handler(refuse)
        build = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[handler.request_streaming, handler.response_streaming]
        return build(refuse, request_deserializer=handler.request_deserializer)


# --- the server ----------------------------------------------------------------------------------


def _read_pem(path: str | Path, key: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{key}: {path} is not a PEM file")
    return data


class EdgeApiServer:
    """The ``EdgeApi`` gRPC server on ``listen`` (``host:port``; port 0 picks a free port).

    ``status`` supplies what only the running gateway knows (start time, which sinks are
    connected); without it ``started_at`` is when :meth:`start` ran and no sink is connected.
    Raises :class:`ConfigError` at construction for an unauthenticated non-loopback ``listen``,
    a TLS key without a certificate (or the reverse), or a client CA without TLS.
    """

    def __init__(
        self,
        store: EdgeStoreReader,
        *,
        site: str,
        listen: str,
        token: str | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        tls_client_ca_file: str | Path | None = None,
        status: Callable[[], RuntimeStatus] | None = None,
        page_size: int = 500,
        poll_interval_s: float = 5.0,
        max_watches: int = 32,
        stop_grace_s: float = 2.0,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if page_size < 1 or max_watches < 1:
            raise ValueError("page_size and max_watches must be >= 1")
        if poll_interval_s <= 0 or stop_grace_s < 0:
            raise ValueError("poll_interval_s must be > 0 and stop_grace_s >= 0")
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ConfigError("api.tls: cert_file and key_file go together")
        if tls_client_ca_file is not None and tls_cert_file is None:
            raise ConfigError("api.tls.client_ca_file: client certificates need TLS (cert_file)")
        self._expected = check_token(token, "api.token")
        check_auth_rule(
            listen=listen,
            key="api.grpc_listen",
            authenticated=self._expected is not None or tls_client_ca_file is not None,
            what="gRPC API",
            logger=log,
        )
        if self._expected is not None and tls_cert_file is None and not is_loopback_listen(listen):
            log.warning(
                "gRPC API on %s: the bearer token travels unencrypted (no api.tls); "
                "anyone on the path can read it",
                listen,
            )
        self._store = store
        self._site = site
        self._listen = listen
        self._tls_files = (tls_cert_file, tls_key_file, tls_client_ca_file)
        self._status = status
        self._page_size = page_size
        self._poll_interval_s = poll_interval_s
        self._max_watches = max_watches
        self._stop_grace_s = stop_grace_s
        self._utcnow = utcnow
        self._started_at: datetime | None = None
        self._watches = _Watches()
        self._server: grpc.aio.Server | None = None
        self._refusals = RefusalLog(log, "gRPC API")
        self.port = 0
        """The bound port, once started."""

    @classmethod
    def from_config(
        cls,
        config: ApiConfig,
        store: EdgeStoreReader,
        *,
        site: str,
        token: str | None,
        status: Callable[[], RuntimeStatus] | None = None,
    ) -> EdgeApiServer:
        """The server ``api`` describes; ``token`` is ``resolve_secret(config.token)``."""
        tls = config.tls
        return cls(
            store,
            site=site,
            listen=config.grpc_listen,
            token=token,
            tls_cert_file=tls.cert_file if tls else None,
            tls_key_file=tls.key_file if tls else None,
            tls_client_ca_file=tls.client_ca_file if tls else None,
            status=status,
        )

    @property
    def active_watches(self) -> int:
        """Open ``WatchMovements`` streams (for metrics)."""
        return self._watches.active

    @property
    def refused_calls(self) -> int:
        """Calls refused for a missing or wrong token since start (for metrics)."""
        return self._refusals.total

    def notify(self) -> None:
        """Wake every open watch: call it (on the loop's thread) after each store ``record``."""
        self._watches.notify()

    def _runtime_status(self) -> RuntimeStatus:
        if self._status is not None:
            return self._status()
        return RuntimeStatus(started_at=self._started_at or self._utcnow())

    async def start(self) -> int:
        """Bind and serve; returns the bound port. ConfigError for unreadable TLS files,
        GatewayError when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("the API server is already started")
        credentials = await asyncio.to_thread(self._credentials)
        interceptors = []
        if self._expected is not None:
            interceptors.append(_BearerAuth(self._expected, self._refusals))
        server = grpc.aio.server(
            interceptors=interceptors,
            # Watches last; the rest are short queries, which keep this much room beside them.
            maximum_concurrent_rpcs=self._max_watches + UNARY_CALLS_MAX,
            options=[
                # A second gateway on the same port must fail, not share the traffic.
                ("grpc.so_reuseport", 0),
                # Notice clients that vanished while their watch waits for news.
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
            ],
        )
        self._watches = _Watches()
        edge_api_pb2_grpc.add_EdgeApiServicer_to_server(
            _EdgeApi(
                self._store,
                site=self._site,
                watches=self._watches,
                status=self._runtime_status,
                page_size=self._page_size,
                poll_interval_s=self._poll_interval_s,
                max_watches=self._max_watches,
            ),
            server,
        )
        try:
            if credentials is None:
                port = server.add_insecure_port(self._listen)
            else:
                port = server.add_secure_port(self._listen, credentials)
        except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
            raise GatewayError(f"gRPC API cannot listen on {self._listen}: {exc}") from exc
        await server.start()
        self._server, self.port = server, port
        self._started_at = self._utcnow()
        auth = [
            "TLS" if credentials is not None else "plaintext",
            *(["client certificates"] if self._tls_files[2] is not None else []),
            *(["bearer token"] if self._expected is not None else []),
        ]
        log.info("gRPC API listening on %s (port %d, %s)", self._listen, port, ", ".join(auth))
        return port

    def _credentials(self) -> grpc.ServerCredentials | None:
        cert_file, key_file, ca_file = self._tls_files
        if cert_file is None or key_file is None:
            return None
        cert = _read_pem(cert_file, "api.tls.cert_file")
        key = _read_pem(key_file, "api.tls.key_file")
        if ca_file is None:
            return grpc.ssl_server_credentials([(key, cert)])
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=_read_pem(ca_file, "api.tls.client_ca_file"),
            require_client_auth=True,
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """End open watches with UNAVAILABLE, give other calls ``grace_s`` (default
        ``stop_grace_s``) to finish, then stop. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._watches.close()
        await server.stop(self._stop_grace_s if grace_s is None else grace_s)
        log.info("gRPC API on %s stopped", self._listen)

    async def run(self) -> None:
        """Serve until cancelled, then stop. Starts the server unless :meth:`start` already did
        (start first to fail fast on a bad address or unreadable TLS files)."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await self.stop()
