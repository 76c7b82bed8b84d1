"""Central gRPC sink: stream the store's movements to central inventory's ``InventoryIngest``.

Theory of operation
-------------------
One :class:`CentralRelay` per gateway runs for the life of the process (``run()`` until
cancelled). Its durable position is the store's ``central`` cursor: the last seq central
acknowledged. A *session* is one channel and one ``Ingest`` stream:

1. ``GetCursor(site)`` asks where central stands; the session starts after
   ``min(store cursor, central cursor)``. Normally they agree; a central restored from an old
   backup (lower cursor) is refilled; a store cursor behind central (acks lost before the cursor
   was written) just re-sends a few duplicates, which central ignores by ``movement_id``.
2. A sender pages ``movements_since(next, batch_size)`` and writes one ``IngestBatch`` per page,
   in seq order, keeping at most ``max_in_flight`` batches unacknowledged (the window). A page
   whose encoded size exceeds ``MAX_BATCH_BYTES`` is split into several batches, so a large
   ``batch_size`` never runs into gRPC's message size limit (4 MiB by default on the receiving
   side) and stalls the relay on one refused batch forever. Pages are read and converted to
   protobuf in a worker thread. When the store has nothing new the sender waits for
   :meth:`notify` (call it after each ``EdgeStore.record``), or ``poll_interval_s`` as a safety
   net for movements recorded by another process.
3. A receiver reads ``IngestAck``s. Acks are cumulative: ``acked_through_seq = n`` retires every
   in-flight batch ending at or below ``n`` and advances the store cursor to ``n``. Only acks
   move the cursor, so a crash or a dropped stream never skips a movement; the next session
   re-sends everything after the cursor (at-least-once; central de-duplicates).
4. The session fails on any gRPC error, on central closing the stream, on an ack for something
   never sent, or when no ack arrives for ``ack_timeout_s`` while batches are in flight (a hung
   peer). Then the channel is closed, in-flight batches are forgotten (they will be re-sent) and
   the relay waits a capped, jittered exponential backoff (``gateway.adapters.backoff``) before
   the next session, with a fresh channel so that gRPC's own reconnect backoff does not add up.

Logging: ONE error when central becomes unreachable, debug lines for further failed attempts,
and one line when it is back. The bearer token is never logged.

Store calls are synchronous (SQLAlchemy) and run in worker threads (``asyncio.to_thread``).
Defaults: ``batch_size=200`` (the app passes ``sinks.central.batch_max``, 500 by default),
``max_in_flight=4``, ``max_batch_bytes=MAX_BATCH_BYTES`` (1 MiB), ``ack_timeout_s=30``,
``poll_interval_s=5``, ``connect_timeout_s=5``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import grpc

from dockwatch_core.errors import PublishError, StoreError
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.proto_convert import chunk_by_size, movement_to_proto
from gateway.adapters.sink import OutboxPager
from gateway.adapters.tls import warn_cleartext
from gateway.domain.views import RecordedView
from gateway.proto.dockwatch.central.v1 import ingest_pb2, ingest_pb2_grpc

if TYPE_CHECKING:
    from gateway.config import CentralSinkConfig

log = logging.getLogger(__name__)

SINK = "central"
"""The name of this sink's cursor in the store."""
MAX_BATCH_BYTES = 1 << 20
"""Largest encoded IngestBatch the relay sends (a quarter of gRPC's default receive limit)."""


class MovementSource(Protocol):
    """What the relay needs from the edge store (``edge_store.EdgeStore`` provides it)."""

    def movements_since(self, after_seq: int, limit: int) -> Sequence[RecordedView]: ...

    def get_cursor(self, sink: str) -> int: ...

    def advance_cursor(self, sink: str, seq: int, *, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class ChannelTls:
    """TLS towards central. ``root_certificates`` None: the system trust store."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    """Client certificate for mutual TLS, with ``private_key``."""

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("private_key and certificate_chain go together")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


class CentralRelay:
    """Streams movements to central in seq order; the ``central`` cursor advances only on acks."""

    def __init__(
        self,
        source: MovementSource,
        *,
        site: str,
        target: str,
        token: str | None = None,
        tls: ChannelTls | None = None,
        batch_size: int = 200,
        max_in_flight: int = 4,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        ack_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        poll_interval_s: float = 5.0,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not site:
            raise ValueError("site must not be empty")
        if batch_size < 1 or max_in_flight < 1 or max_batch_bytes < 1:
            raise ValueError("batch_size, max_in_flight and max_batch_bytes must be >= 1")
        if min(ack_timeout_s, connect_timeout_s, poll_interval_s) <= 0:
            raise ValueError("timeouts and poll_interval_s must be > 0")
        self._source = source
        self._site = site
        self._target = target
        self._metadata: tuple[tuple[str, str], ...] = (
            () if token is None else (("authorization", f"Bearer {token}"),)
        )
        self._tls = tls
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._max_batch_bytes = max_batch_bytes
        self._ack_timeout_s = ack_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._backoff = backoff if backoff is not None else Backoff()
        self._outage = Outage(
            f"central {target}",
            log=log,
            backoff=self._backoff,
            clock=monotonic,
            words=OutageWords(
                down="{link} unreachable or failing: {reason}; retrying with backoff",
                back="{link} reachable again after {seconds:.1f}s",
            ),
        )
        self._clock = clock
        self._pager = OutboxPager(self._read, _last_seq, poll_interval_s=poll_interval_s)
        self._acked = asyncio.Condition()
        self._acked_seq = 0
        self._connected = False

    @classmethod
    def from_config(
        cls, config: CentralSinkConfig, source: MovementSource, *, site: str
    ) -> CentralRelay:
        """A relay for the ``sinks.central`` config slice (reads its TLS files and token now)."""
        if config.token is not None and config.tls is None:
            warn_cleartext("sinks.central", config.host, "the central API token")
        tls = None
        if config.tls is not None:
            if config.tls.insecure:
                raise ValueError("sinks.central.tls.insecure is not supported by gRPC")
            tls = ChannelTls(
                root_certificates=(
                    None if config.tls.ca_file is None else config.tls.ca_file.read_bytes()
                ),
                private_key=None
                if config.tls.key_file is None
                else config.tls.key_file.read_bytes(),
                certificate_chain=(
                    None if config.tls.cert_file is None else config.tls.cert_file.read_bytes()
                ),
            )
        return cls(
            source,
            site=site,
            target=config.target,
            token=None if config.token is None else config.token.reveal(),
            tls=tls,
            batch_size=config.batch_max,
            backoff=Backoff(
                BackoffPolicy(initial_s=config.reconnect.initial_s, max_s=config.reconnect.max_s)
            ),
        )

    def __repr__(self) -> str:
        return f"CentralRelay(site={self._site!r}, target={self._target!r})"

    # --- state others read -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return SINK

    @property
    def connected(self) -> bool:
        """A session with central is up (its cursor was read and the stream opened)."""
        return self._connected

    @property
    def acked_seq(self) -> int:
        """The highest seq central acknowledged (the store's cursor once a session started)."""
        return self._acked_seq

    def notify(self) -> None:
        """New movements were recorded: wake the sender. Call from the event loop's thread."""
        self._pager.notify()

    async def wait_acked(self, seq: int) -> None:
        """Return once central acknowledged every movement up to ``seq`` (e.g. to drain)."""
        async with self._acked:
            await self._acked.wait_for(lambda: self._acked_seq >= seq)

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep a session with central up and stream movements, until cancelled."""
        while True:
            try:
                await self._session()
            except* (PublishError, StoreError) as group:
                exc = group.exceptions[0]
                store = isinstance(exc, StoreError)
                self._outage.failed(f"the edge store failed: {exc}" if store else _describe(exc))
            # A TaskGroup whose child failed raises that failure even when our own task was
            # cancelled at the same moment; the cancellation is still counted: honour it.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await self._outage.pause()

    async def _read(self, after_seq: int) -> list[ingest_pb2.IngestBatch]:
        return await asyncio.to_thread(
            _batches,
            self._source,
            self._site,
            after_seq,
            self._batch_size,
            self._max_batch_bytes,
        )

    def _channel(self) -> grpc.aio.Channel:
        # A private subchannel pool: a new channel must really dial again, not inherit the
        # backoff state of the previous channel's connection to the same target.
        options = [("grpc.use_local_subchannel_pool", 1)]
        if self._tls is None:
            return grpc.aio.insecure_channel(self._target, options=options)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self._tls.root_certificates,
            private_key=self._tls.private_key,
            certificate_chain=self._tls.certificate_chain,
        )
        return grpc.aio.secure_channel(self._target, creds, options=options)

    async def _session(self) -> None:
        async with self._channel() as channel:
            stub = ingest_pb2_grpc.InventoryIngestStub(channel)
            try:
                cursor = await stub.GetCursor(
                    ingest_pb2.CursorRequest(site=self._site),
                    metadata=self._metadata,
                    timeout=self._connect_timeout_s,
                )
                call = stub.Ingest(metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                raise PublishError(f"central {self._target}: {_describe(exc)}") from exc
            local = await asyncio.to_thread(self._source.get_cursor, SINK)
            await self._note_acked(local)  # acknowledged before this process started
            start = min(local, cursor.acked_through_seq)
            self._up(start, local=local, remote=cursor.acked_through_seq)
            session = _Session(
                call,
                start,
                pager=self._pager,
                target=self._target,
                max_in_flight=self._max_in_flight,
                ack_timeout_s=self._ack_timeout_s,
                acknowledged=self._acknowledged,
            )
            try:
                # The receiver runs in the body rather than as a second child: a child that
                # fails while the body is still running is the case asyncio's TaskGroup keeps
                # its cancellation count straight for on Python 3.11 (see run()).
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(session.send())
                    await session.receive()
            finally:
                self._connected = False
                call.cancel()

    def _up(self, start: int, *, local: int, remote: int) -> None:
        self._connected = True
        if self._outage.recovered() is None:
            log.info("central %s connected; streaming after seq %d", self._target, start)
        else:
            log.debug("central %s: resuming after seq %d", self._target, start)
        if remote < local:
            log.warning(
                "central %s holds site %s only through seq %d but acknowledged %d before: "
                "re-sending from there",
                self._target,
                self._site,
                remote,
                local,
            )

    async def _acknowledged(self, seq: int) -> None:
        await asyncio.to_thread(self._source.advance_cursor, SINK, seq, now=self._clock())
        await self._note_acked(seq)

    async def _note_acked(self, seq: int) -> None:
        async with self._acked:
            if seq > self._acked_seq:
                self._acked_seq = seq
                self._acked.notify_all()


def _last_seq(batches: list[ingest_pb2.IngestBatch]) -> int | None:
    return batches[-1].movements[-1].seq if batches else None


def _batches(
    source: MovementSource, site: str, after_seq: int, limit: int, max_bytes: int
) -> list[ingest_pb2.IngestBatch]:
    """The next page after ``after_seq`` as batches of at most ``max_bytes`` encoded (a single
    larger movement still travels alone). Runs in a worker thread."""
    movements = map(movement_to_proto, source.movements_since(after_seq, limit))
    return [
        ingest_pb2.IngestBatch(site=site, movements=chunk)
        for chunk in chunk_by_size(movements, max_bytes)
    ]


class _Session:
    """One ``Ingest`` stream: a sender and a receiver sharing the in-flight window."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall[ingest_pb2.IngestBatch, ingest_pb2.IngestAck],
        start: int,
        *,
        pager: OutboxPager[list[ingest_pb2.IngestBatch]],
        target: str,
        max_in_flight: int,
        ack_timeout_s: float,
        acknowledged: Callable[[int], Awaitable[None]],
    ) -> None:
        self._call = call
        self._start = start
        self._pager = pager
        self._target = target
        self._ack_timeout_s = ack_timeout_s
        self._acknowledged = acknowledged
        # Last seq of each unacknowledged batch, oldest first.
        self._in_flight: collections.deque[int] = collections.deque()
        self._window = asyncio.Semaphore(max_in_flight)
        self._ack_deadline: asyncio.Timeout | None = None

    def _arm_ack_deadline(self) -> None:
        if self._ack_deadline is not None:
            when = None
            if self._in_flight:
                when = asyncio.get_running_loop().time() + self._ack_timeout_s
            self._ack_deadline.reschedule(when)

    async def send(self) -> None:
        await self._pager.run(self._start, self._send_page)

    async def _send_page(self, batches: list[ingest_pb2.IngestBatch]) -> None:
        for batch in batches:
            await self._send(batch)

    async def _send(self, batch: ingest_pb2.IngestBatch) -> None:
        target = self._target
        await self._window.acquire()
        last_seq = batch.movements[-1].seq
        self._in_flight.append(last_seq)
        if len(self._in_flight) == 1:
            self._arm_ack_deadline()
        try:
            await self._call.write(batch)
        except grpc.aio.AioRpcError as exc:
            raise PublishError(f"central {target}: {_describe(exc)}") from exc
        except asyncio.InvalidStateError as exc:  # the call already ended: say how
            status = f"{(await self._call.code()).name}: {await self._call.details()}"
            raise PublishError(f"central {target}: {status}") from exc

    async def receive(self) -> None:
        target = self._target
        while True:
            try:
                async with asyncio.timeout(None) as deadline:
                    self._ack_deadline = deadline
                    self._arm_ack_deadline()
                    ack = await self._call.read()
            except TimeoutError as exc:
                raise PublishError(f"central {target}: no ack for {self._ack_timeout_s}s") from exc
            except grpc.aio.AioRpcError as exc:
                raise PublishError(f"central {target}: {_describe(exc)}") from exc
            finally:
                self._ack_deadline = None
            if not isinstance(ack, ingest_pb2.IngestAck):  # grpc.aio.EOF
                raise PublishError(f"central {target} closed the stream")
            seq = ack.acked_through_seq
            if not self._in_flight or seq > self._in_flight[-1]:
                raise PublishError(f"central {target} acknowledged seq {seq}, which was never sent")
            while self._in_flight and self._in_flight[0] <= seq:
                self._in_flight.popleft()
                self._window.release()
            await self._acknowledged(seq)
