"""The local gRPC API (``dockwatch.edge.v1.EdgeApi``): watch movements, query stock and status.

Theory of operation
-------------------
The API is read-only and stateless: every call reads the edge store (whose API is synchronous)
in a worker thread (``asyncio.to_thread``), so a slow database never blocks the event loop.

``WatchMovements(after_seq)``: a watch pages ``movements_since(cursor, page_size)`` and sends
each page as one ``WatchMovementsResponse`` (several movements per message, as etcd's Watch and
Pub/Sub's StreamingPull do: each gRPC message has a fixed cost that dominates in gRPC Python, so
one message per movement would cap a stream at about 12,000 movements/s on two cores). A page is
read *and converted to protobuf* in the worker thread, together with the store's ``last_seq``
(read after the page, so it is never below the page's last seq; every response carries it), and
split into responses of at most ``MAX_RESPONSE_BYTES`` encoded (gRPC clients refuse messages
above 4 MiB by default, and a page of movements with many EPCs could exceed that); the event loop
only writes ready messages. A page that ends before ``last_seq`` means more is stored: the next
page is read ahead while this one is sent, so a catching-up watch overlaps reading with sending
and holds at most two pages. A page that reaches ``last_seq`` means the watch has caught up: it
then waits for :meth:`EdgeApiServer.notify` (the app calls it after each ``EdgeStore.record``) or
at most ``poll_interval_s`` (a safety net for movements another process recorded, or a missed
notify), and pages again; a live movement therefore goes out as soon as it is read, usually
alone in its response: nothing is held back to fill a page. seq is gap-free and only grows, so
paging by cursor neither skips nor repeats. The wake-up is a *generation event*: ``notify()``
sets the current event and installs a fresh one, and a watch takes the current event *before* it
reads the store, so a notify landing between its read and its wait is never lost. gRPC flow
control is the back-pressure: a watch awaits each write, so a slow client costs at most two
pages of memory, not a growing queue.

``ListMovements(after_seq, page_size)``: one page, read in the worker thread together with
``last_seq`` (the page first, so ``last_seq`` is never below the page's last seq). ``page_size``
0 means ``LIST_PAGE_DEFAULT``; above ``LIST_PAGE_MAX`` it is lowered to it (a bounded answer,
as Google's API guidelines coerce oversized pages), so one call never reads the whole store.

``GetStock``: ``as_of_seq`` must be exactly the seq the levels include. The store reads them in
separate transactions, so the snapshot reads ``last_seq``, the levels, then ``last_seq`` again:
every ``record`` commits its movements, levels and counter together, so an unchanged counter
proves no movement was committed in between. It retries a few times and answers ``ABORTED``
(retry) if writes never pause.

Security: TLS (server certificate, optionally client certificates signed by ``tls_client_ca_file``
for mutual TLS) and a bearer token (``authorization: Bearer <token>`` metadata, compared with
``hmac.compare_digest``, ``UNAUTHENTICATED`` otherwise), checked by a server interceptor so that
every method, present or future, is covered (but health: see below). An API with neither a token nor
client certificates may only listen on a loopback address: anything else is a :class:`ConfigError`.
Refused calls are logged at most once per ``auth.REFUSAL_LOG_EVERY_S`` (with a count); the token
is never logged.

Hostile requests: the token is checked *before* the request body is decoded (the methods are
registered with raw-bytes deserializers by :class:`_Gate`, which authenticates, then decodes), so
a client without the token learns nothing and costs nothing but the refusal. A body that is not
the method's protobuf message is ``INVALID_ARGUMENT`` ("request body is not a valid
dockwatch.edge.v1.WatchRequest"), as is a field out of the range the store holds, named in the
message (``after_seq`` above 2^63 - 1: seqs are signed 64-bit in the store; a ``location`` or
``sku`` longer than the 64 characters of an id or holding control characters). ``after_seq``
beyond the last recorded seq, a position that may become valid, is ``OUT_OF_RANGE`` (gRPC's
convention for reading past the end). Invalid requests are logged at most once per client (host)
per ``auth.INVALID_LOG_EVERY_S``, with a count; never a traceback.

Health and reflection: the server also serves the standard ``grpc.health.v1.Health`` (status
``SERVING`` from :meth:`EdgeApiServer.start` until :meth:`EdgeApiServer.stop`, ``NOT_SERVING``
from the moment ``stop`` begins; :meth:`EdgeApiServer.set_serving` lets the app report a
temporary outage) for the whole server (``""``) and for ``dockwatch.edge.v1.EdgeApi``, and server
reflection (``grpc.reflection.v1alpha.ServerReflection``, grpcio-reflection's servicer). Health
needs NO token, like the metrics endpoint's ``/healthz``: orchestrators probe it without secrets,
and it reveals only "serving or not" (TLS, and client certificates when configured, still apply:
they are the transport). Reflection needs the token like every other method: the schema is
public in this repository, but who may ask a given gateway is not. The health servicer is ours
(on grpcio-health-checking's generated service) rather than grpcio-health-checking's reference
one because that one's ``Watch`` streams never end, so each open watch would hold ``stop`` for
its whole grace period; ours send ``NOT_SERVING`` and then end with ``UNAVAILABLE``.

Shutdown: :meth:`EdgeApiServer.stop` first ends open watches with ``UNAVAILABLE`` (clients
resume with their last seq), then gives unary calls ``grace_s`` to finish.

A watch whose ``after_seq`` is beyond the store's last seq is refused with ``OUT_OF_RANGE`` (its
position comes from another store); at most ``max_watches`` are open at once
(``RESOURCE_EXHAUSTED`` beyond), so that watches, which never end on their own, cannot take every
slot from the short queries.

Defaults: ``page_size=500`` (watch pages), ``max_response_bytes=MAX_RESPONSE_BYTES`` (1 MiB),
``poll_interval_s=5``, ``max_watches=32``, ``stop_grace_s=2``; ListMovements pages 500 by
default, 5000 at most.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, Protocol, TypeAlias, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dockwatch_core.errors import ConfigError, GatewayError, ProtocolError, StoreError
from gateway import __version__
from gateway.adapters.auth import (
    PerClientLog,
    RefusalLog,
    bearer_matches,
    check_listener_auth,
)
from gateway.adapters.proto_convert import (
    alert_to_proto,
    chunk_by_size,
    datetime_to_timestamp,
    device_status_to_proto,
    movement_to_proto,
    stock_level_to_proto,
)
from gateway.domain.views import AlertView, DeviceStatusView, RecordedView, StockView
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from gateway.config import ApiConfig

__all__ = ["EdgeApiServer", "EdgeStoreReader", "RuntimeStatus"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SNAPSHOT_ATTEMPTS = 8
"""GetStock reads (last_seq, levels, last_seq) at most this often before answering ABORTED."""
UNARY_CALLS_MAX = 32
HEALTH_WATCHES_MAX = 4
"""Open ``Health/Watch`` streams (which need no token) served at once."""
"""Queries served at once besides the watches (more wait in gRPC's queue or are refused)."""
SEQ_MAX = 2**63 - 1
"""The largest seq the store holds (a signed 64-bit integer column)."""
QUERY_ID_MAX_CHARS = 64
"""A ``location`` or ``sku`` in a query: ids of the config, 64 characters at most."""
LIST_PAGE_DEFAULT = 500
"""ListMovements' page size when the request gives none."""
LIST_PAGE_MAX = 5000
"""ListMovements never answers more movements than this at once."""
MAX_RESPONSE_BYTES = 1 << 20
"""A watch splits a page into responses of at most this many bytes encoded (one movement larger
than this still travels, alone): gRPC clients refuse messages above 4 MiB by default."""
EDGE_API_SERVICE = edge_api_pb2.DESCRIPTOR.services_by_name["EdgeApi"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_OPEN_METHODS = f"/{HEALTH_SERVICE}/"
"""Methods served without the bearer token (see the module docstring)."""

_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class EdgeStoreReader(Protocol):
    """The part of ``edge_store.EdgeStore`` the API reads (all synchronous)."""

    def movements_since(self, after_seq: int, limit: int = 500) -> Sequence[RecordedView]: ...
    def last_seq(self) -> int: ...
    def stock(
        self, *, location: str | None = None, sku: str | None = None
    ) -> Sequence[StockView]: ...
    def alerts(self, *, active_only: bool = True) -> Sequence[AlertView]: ...
    def device_statuses(self) -> Sequence[DeviceStatusView]: ...
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


def _movement_protos(
    store: EdgeStoreReader, after_seq: int, limit: int
) -> list[types_pb2.Movement]:
    """A page of movements as protobuf messages (in the caller's worker thread)."""
    return [movement_to_proto(m) for m in store.movements_since(after_seq, limit)]


def _movement_page(
    store: EdgeStoreReader, after_seq: int, limit: int
) -> tuple[list[types_pb2.Movement], int]:
    """A page, then the last seq: every seq in the page is <= the last seq returned."""
    page = _movement_protos(store, after_seq, limit)
    return page, store.last_seq()


@dataclass(frozen=True, slots=True)
class _WatchPage:
    """One page of a watch, ready to send: ``responses`` (none when nothing was stored after the
    cursor) end at seq ``end`` (the cursor itself when empty); ``last_seq`` was read after it."""

    responses: list[edge_api_pb2.WatchMovementsResponse]
    end: int
    last_seq: int

    @property
    def more_stored(self) -> bool:
        return bool(self.responses) and self.end < self.last_seq


def _watch_page(store: EdgeStoreReader, after_seq: int, limit: int, max_bytes: int) -> _WatchPage:
    """The page after ``after_seq`` as responses of at most ``max_bytes`` encoded (in the
    caller's worker thread)."""
    page, last_seq = _movement_page(store, after_seq, limit)
    responses = [
        edge_api_pb2.WatchMovementsResponse(movements=chunk, last_seq=last_seq)
        for chunk in chunk_by_size(page, max_bytes)
    ]
    return _WatchPage(responses, page[-1].seq if page else after_seq, last_seq)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a read-ahead's failure as seen: the watch that wanted it may have ended first."""
    if not future.cancelled():
        future.exception()


class _EdgeApi(edge_api_pb2_grpc.EdgeApiServicer):
    def __init__(
        self,
        store: EdgeStoreReader,
        *,
        site: str,
        watches: _Watches,
        status: Callable[[], RuntimeStatus],
        page_size: int,
        max_response_bytes: int,
        poll_interval_s: float,
        max_watches: int,
        invalid: PerClientLog,
    ) -> None:
        self._store = store
        self._invalid = invalid
        self._site = site
        self._watches = watches
        self._status = status
        self._page_size = page_size
        self._max_response_bytes = max_response_bytes
        self._poll_interval_s = poll_interval_s
        self._max_watches = max_watches
        self._store_ok = True

    async def _read(
        self, context: _Context, operation: str, fn: Callable[P, T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """``fn`` in a worker thread; a store failure becomes UNAVAILABLE for the client and one
        log line when the store becomes unreadable (and one when it is back). A stored value
        the wire format cannot carry (converted in the thread too) is INTERNAL."""
        try:
            result = await asyncio.to_thread(fn, *args, **kw)
        except StoreError as exc:
            failure = exc
        except ProtocolError as exc:  # a stored value the wire format cannot carry: a bug
            await self._unencodable(context, exc)
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
        await self._unencodable(context, failure)

    async def _reject(self, context: _Context, method: str, problem: str) -> NoReturn:
        """INVALID_ARGUMENT naming the field; logged once per client per minute."""
        self._invalid.report(context.peer(), f"{method}: {problem}")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    async def _check_seq(self, context: _Context, method: str, after_seq: int) -> int:
        if after_seq > SEQ_MAX:
            await self._reject(
                context,
                method,
                f"after_seq: must be at most {SEQ_MAX} (seqs are signed 64-bit integers), "
                f"got {after_seq}",
            )
        return after_seq

    async def _check_id(self, context: _Context, method: str, field: str, value: str) -> str | None:
        """A query's ``location``/``sku`` (empty: any): an id of the config or INVALID_ARGUMENT."""
        if not value:
            return None
        if len(value) > QUERY_ID_MAX_CHARS:
            await self._reject(
                context,
                method,
                f"{field}: must be at most {QUERY_ID_MAX_CHARS} characters, got {len(value)}",
            )
        if not value.isprintable():
            await self._reject(
                context, method, f"{field}: must not contain control characters, got {value!r}"
            )
        return value

    @staticmethod
    async def _unencodable(context: _Context, failure: ProtocolError) -> NoReturn:
        log.error("local API: cannot encode a response: %s", failure)
        await context.abort(grpc.StatusCode.INTERNAL, f"cannot encode the response: {failure}")

    async def WatchMovements(
        self, request: edge_api_pb2.WatchRequest, context: _Context
    ) -> AsyncIterator[edge_api_pb2.WatchMovementsResponse]:
        """The responses of one watch (never empty), in seq order, until the client cancels."""
        watches = self._watches
        cursor = await self._check_seq(context, "WatchMovements", request.after_seq)
        peer = context.peer()
        if watches.active >= self._max_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{watches.active} watches are open, the most this gateway serves",
            )
        watches.active += 1
        # The next page, read ahead while the current one is sent, and the wake-up event taken
        # before that read began.
        ahead: tuple[asyncio.Event, asyncio.Future[_WatchPage]] | None = None
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
                if ahead is None:
                    news = watches.news  # taken before reading: a notify after this wakes us
                    page = await self._read_page(context, cursor)
                else:
                    (news, reading), ahead = ahead, None
                    page = await reading
                if watches.closing:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is stopping")
                if page.more_stored:
                    # Read the next page while this one is being sent.
                    ahead = (
                        watches.news,
                        asyncio.ensure_future(self._read_page(context, page.end)),
                    )
                    ahead[1].add_done_callback(_retrieve)
                for response in page.responses:
                    yield response
                    cursor = response.movements[-1].seq
                if not page.more_stored:
                    try:
                        async with asyncio.timeout(self._poll_interval_s):
                            await news.wait()
                    except TimeoutError:
                        pass  # the safety-net poll
        finally:
            if ahead is not None:
                ahead[1].cancel()
            watches.active -= 1
            log.debug("watch from %s closed at seq %d", peer, cursor)

    async def _read_page(self, context: _Context, after_seq: int) -> _WatchPage:
        return await self._read(
            context,
            "WatchMovements",
            _watch_page,
            self._store,
            after_seq,
            self._page_size,
            self._max_response_bytes,
        )

    async def ListMovements(
        self, request: edge_api_pb2.ListMovementsRequest, context: _Context
    ) -> edge_api_pb2.MovementPage:
        limit = min(request.page_size or LIST_PAGE_DEFAULT, LIST_PAGE_MAX)
        after = await self._check_seq(context, "ListMovements", request.after_seq)
        page, last_seq = await self._read(
            context, "ListMovements", _movement_page, self._store, after, limit
        )
        if after > last_seq:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"after_seq {after} is beyond the last recorded seq {last_seq}",
            )
        return edge_api_pb2.MovementPage(
            movements=page, next_after_seq=page[-1].seq if page else after, last_seq=last_seq
        )

    async def GetStock(
        self, request: edge_api_pb2.StockQuery, context: _Context
    ) -> edge_api_pb2.StockSnapshot:
        location = await self._check_id(context, "GetStock", "location", request.location)
        sku = await self._check_id(context, "GetStock", "sku", request.sku)
        snapshot = await self._read(context, "GetStock", self._stock_snapshot, location, sku)
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
    ) -> tuple[Sequence[StockView], int] | None:
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


# --- health --------------------------------------------------------------------------------------

_ServingStatus: TypeAlias = int
"""A ``grpc.health.v1.HealthCheckResponse.ServingStatus`` number."""


class _Health(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health`` for ``services``: Check answers at once; Watch sends the status,
    then every change, and ends with UNAVAILABLE after sending NOT_SERVING at shutdown.

    Health needs no token, so its watches, which never end on their own, are capped at
    ``max_watches`` (RESOURCE_EXHAUSTED beyond): without a cap, anyone who can reach the port
    could hold every call slot of the server and lock out the authenticated clients."""

    def __init__(self, services: Sequence[str], max_watches: int = HEALTH_WATCHES_MAX) -> None:
        self._status: dict[str, _ServingStatus] = dict.fromkeys(
            services, health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self._changed = asyncio.Event()  # a generation event, as for the movement watches
        self._stopped = False
        self._max_watches = max_watches
        self.watches = 0

    def set(self, status: _ServingStatus) -> None:
        """Every service's status; ignored once stopped (NOT_SERVING is then final)."""
        if self._stopped:
            return
        for service in self._status:
            self._status[service] = status
        self._changed.set()
        self._changed = asyncio.Event()

    def stop(self) -> None:
        self.set(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._stopped = True

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: _Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: _Context
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if self.watches >= self._max_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.watches} health watches are open, the most this gateway serves",
            )
        self.watches += 1
        try:
            sent: _ServingStatus | None = None
            while True:
                changed = self._changed  # taken before reading the status: no change is missed
                status = self._status.get(
                    request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                )
                if status != sent:
                    yield health_pb2.HealthCheckResponse(status=status)
                    sent = status
                if self._stopped:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is stopping")
                await changed.wait()
        finally:
            self.watches -= 1


# --- authentication ----------------------------------------------------------------------------


def _message_name(deserializer: Callable[[bytes], Any] | None) -> str:
    """The protobuf message a deserializer (``Message.FromString``) decodes, for messages."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request message"))


class _Gate(grpc.aio.ServerInterceptor):
    """Every call passes here before its body is decoded: the bearer token first (when one is
    configured; UNAUTHENTICATED otherwise, except the health service's), then the body, decoded
    here rather than by gRPC (whose failure would be UNKNOWN and a traceback in the log): a body
    that is not the method's message is INVALID_ARGUMENT, logged once per client per minute."""

    def __init__(self, expected: bytes | None, refusals: RefusalLog, invalid: PerClientLog) -> None:
        self._expected = expected
        self._refusals = refusals
        self._invalid = invalid

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if self._expected is not None and not method.startswith(_OPEN_METHODS):
            metadata: Sequence[tuple[str, str | bytes]] = (
                handler_call_details.invocation_metadata or ()
            )
            given = next((value for key, value in metadata if key == "authorization"), None)
            if not bearer_matches(self._expected, given):
                reason = "no bearer token" if given is None else "wrong bearer token"
                return self._refusal(handler, method, reason)
        if handler is None:
            return None  # UNIMPLEMENTED
        return self._decoding(handler, method)

    def _refusal(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None, method: str, reason: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        refusals = self._refusals

        # A coroutine serves a streaming method too (grpc.aio awaits it; it would write with
        # context.write), so one refusal fits every shape. The body is never decoded (no
        # deserializer): an unauthenticated client cannot make the server parse anything.
        async def refuse(request: object, context: _Context) -> NoReturn:
            refusals.refused(context.peer(), f"{method}: {reason}")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing bearer token")

        if handler is None:  # unknown methods too: an unauthenticated client learns nothing
            return grpc.unary_unary_rpc_method_handler(refuse)
        return _build(handler)(refuse, response_serializer=handler.response_serializer)

    def _decoding(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        decode = handler.request_deserializer
        if decode is None:
            return handler
        name = _message_name(decode)
        invalid = self._invalid

        async def decoded(raw: bytes, context: _Context) -> Any:
            try:
                return decode(raw)
            except DecodeError as exc:
                problem = f"request body is not a valid {name}: {exc}"
            invalid.report(context.peer(), f"{method}: {problem}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

        behavior = _behavior(handler)
        build = _build(handler)
        serialize = handler.response_serializer
        if handler.request_streaming:

            async def requests(raw_requests: AsyncIterator[bytes], context: _Context) -> Any:
                async for raw in raw_requests:
                    yield await decoded(raw, context)

            if inspect.isasyncgenfunction(behavior):

                async def stream_gen(raw_requests: Any, context: _Context) -> Any:
                    async for response in behavior(requests(raw_requests, context), context):
                        yield response

                return build(stream_gen, response_serializer=serialize)

            async def stream_call(raw_requests: Any, context: _Context) -> Any:
                return await behavior(requests(raw_requests, context), context)

            return build(stream_call, response_serializer=serialize)

        if inspect.isasyncgenfunction(behavior):

            async def unary_gen(raw: bytes, context: _Context) -> Any:
                request = await decoded(raw, context)
                async for response in behavior(request, context):
                    yield response

            return build(unary_gen, response_serializer=serialize)

        async def unary_call(raw: bytes, context: _Context) -> Any:
            return await behavior(await decoded(raw, context), context)

        return build(unary_call, response_serializer=serialize)


def _behavior(handler: grpc.RpcMethodHandler[Any, Any]) -> Callable[..., Any]:
    behavior = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    assert behavior is not None
    return cast(Callable[..., Any], behavior)


def _build(
    handler: grpc.RpcMethodHandler[Any, Any],
) -> Callable[..., grpc.RpcMethodHandler[Any, Any]]:
    """The ``grpc.*_rpc_method_handler`` factory of ``handler``'s shape."""
    return cast(
        "Callable[..., grpc.RpcMethodHandler[Any, Any]]",
        {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[handler.request_streaming, handler.response_streaming],
    )


# --- the server ----------------------------------------------------------------------------------


def _serving_status(serving: bool) -> _ServingStatus:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )


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
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        poll_interval_s: float = 5.0,
        max_watches: int = 32,
        stop_grace_s: float = 2.0,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if page_size < 1 or max_watches < 1 or max_response_bytes < 1:
            raise ValueError("page_size, max_response_bytes and max_watches must be >= 1")
        if poll_interval_s <= 0 or stop_grace_s < 0:
            raise ValueError("poll_interval_s must be > 0 and stop_grace_s >= 0")
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ConfigError("api.tls: cert_file and key_file go together")
        if tls_client_ca_file is not None and tls_cert_file is None:
            raise ConfigError("api.tls.client_ca_file: client certificates need TLS (cert_file)")
        self._expected = check_listener_auth(
            listen=listen,
            key="api.grpc_listen",
            what="gRPC API",
            token=token,
            client_certs=tls_client_ca_file is not None,
            encrypted=tls_cert_file is not None,
            logger=log,
        )
        self._store = store
        self._site = site
        self._listen = listen
        self._tls_files = (tls_cert_file, tls_key_file, tls_client_ca_file)
        self._status = status
        self._page_size = page_size
        self._max_response_bytes = max_response_bytes
        self._poll_interval_s = poll_interval_s
        self._max_watches = max_watches
        self._stop_grace_s = stop_grace_s
        self._utcnow = utcnow
        self._started_at: datetime | None = None
        self._watches = _Watches()
        self._health: _Health | None = None
        self._serving = True
        self._server: grpc.aio.Server | None = None
        self._refusals = RefusalLog(log, "gRPC API")
        self._invalid = PerClientLog(log, "gRPC API: invalid request")
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
    def invalid_requests(self) -> int:
        """Requests refused as malformed or out of range since start (for metrics)."""
        return self._invalid.total

    @property
    def refused_calls(self) -> int:
        """Calls refused for a missing or wrong token since start (for metrics)."""
        return self._refusals.total

    def notify(self) -> None:
        """Wake every open watch: call it (on the loop's thread) after each store ``record``."""
        self._watches.notify()

    def set_serving(self, serving: bool) -> None:
        """What the health service reports while the server runs (SERVING by default):
        False reports NOT_SERVING, e.g. while the edge store is unreachable. Call it on the
        loop's thread. After :meth:`stop` the status stays NOT_SERVING."""
        self._serving = serving
        if self._health is not None:
            self._health.set(_serving_status(serving))

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
        server = grpc.aio.server(
            interceptors=[_Gate(self._expected, self._refusals, self._invalid)],
            # Watches last; the rest are short queries, which keep this much room beside them.
            maximum_concurrent_rpcs=self._max_watches + UNARY_CALLS_MAX + HEALTH_WATCHES_MAX,
            options=[
                # A second gateway on the same port must fail, not share the traffic.
                ("grpc.so_reuseport", 0),
                # Notice clients that vanished while their watch waits for news.
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
            ],
        )
        self._watches = _Watches()
        health = _Health(("", EDGE_API_SERVICE))
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (EDGE_API_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        edge_api_pb2_grpc.add_EdgeApiServicer_to_server(
            _EdgeApi(
                self._store,
                site=self._site,
                watches=self._watches,
                status=self._runtime_status,
                page_size=self._page_size,
                max_response_bytes=self._max_response_bytes,
                poll_interval_s=self._poll_interval_s,
                max_watches=self._max_watches,
                invalid=self._invalid,
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
        self._server, self.port, self._health = server, port, health
        health.set(_serving_status(self._serving))
        self._started_at = self._utcnow()
        auth = [
            "TLS" if credentials is not None else "plaintext",
            *(["client certificates"] if self._tls_files[2] is not None else []),
            *(["bearer token"] if self._expected is not None else []),
        ]
        log.info(
            "gRPC API listening on %s (port %d, %s; health and reflection on)",
            self._listen,
            port,
            ", ".join(auth),
        )
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
        """Report NOT_SERVING, end open watches (movements and health) with UNAVAILABLE, give
        other calls ``grace_s`` (default ``stop_grace_s``) to finish, then stop. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._health is not None:
            self._health.stop()
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
