"""The local gRPC API over real channels, against a real edge store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from dockwatch_core.errors import ConfigError, GatewayError
from edge_store import EdgeStore, LocationRecord
from gateway import __version__
from gateway.adapters.grpc_api import (
    EDGE_API_SERVICE,
    HEALTH_WATCHES_MAX,
    LIST_PAGE_DEFAULT,
    LIST_PAGE_MAX,
    EdgeApiServer,
    RuntimeStatus,
)
from gateway.adapters.proto_convert import (
    datetime_from_timestamp,
    movement_from_proto,
    movement_to_proto,
)
from gateway.domain.model import (
    Alert,
    AlertKind,
    CatalogItem,
    DeviceId,
    DeviceState,
    DeviceStatus,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    RecordedMovement,
    Severity,
    Sku,
    SourceType,
)
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2
from tests.support.net import free_port
from tests.support.tls import Pem, certificate_authority, issue, self_signed_server

pytestmark = pytest.mark.integration

SITE = "dc-test"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
WAIT_S = 10.0
TOKEN = "s3cret-token"
LOGGER = "gateway.adapters.grpc_api"


def _movement(i: int) -> Movement:
    """Movement i: receipts into receiving, every third one a pick of SKU-2 off the shelf."""
    shelf = i % 3 == 2
    return Movement(
        movement_id=MovementId(f"m-{i:05d}"),
        kind=MovementKind.PICK if shelf else MovementKind.RECEIPT,
        sku=Sku("SKU-2" if shelf else "SKU-1"),
        quantity=1 + i % 4,
        from_location=LocationId("shelf-a1" if shelf else "yard"),
        to_location=LocationId("picked" if shelf else "receiving"),
        source_type=SourceType.WEIGHT_SHELF if shelf else SourceType.RFID_PORTAL,
        source_id="shelf-a1" if shelf else "door-1",
        observed_at=T0 + timedelta(microseconds=1_000_003 * i),
        confidence=0.9,
        epcs=() if shelf else (f"3074257BF7194E40000{i:05X}",),
    )


def _expected(first_seq: int, last_seq: int) -> list[types_pb2.Movement]:
    """Seq n is movement n - 1 (every test records movements 0, 1, 2... in order)."""
    return [
        movement_to_proto(RecordedMovement(seq=s, site=SITE, movement=_movement(s - 1)))
        for s in range(first_seq, last_seq + 1)
    ]


def _record(store: EdgeStore, first: int, count: int) -> None:
    store.record([_movement(i) for i in range(first, first + count)], now=T0)


def _open(url: str) -> EdgeStore:
    s = EdgeStore.open(url, site=SITE)
    s.sync_catalog(
        [
            CatalogItem(sku=Sku("SKU-1"), name="Widget"),
            CatalogItem(sku=Sku("SKU-2"), name="Gadget"),
        ],
        [LocationRecord(id=loc) for loc in ("yard", "receiving", "shelf-a1", "picked")],
    )
    return s


@pytest.fixture
def store(database_url: str) -> Iterator[EdgeStore]:
    with _open(database_url) as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EdgeStore]:
    """For tests about the server itself, where the database makes no difference."""
    with _open(f"sqlite:///{tmp_path / 'edge.db'}") as s:
        yield s


def _server(store: EdgeStore, **kwargs: Any) -> EdgeApiServer:
    kwargs.setdefault("listen", "127.0.0.1:0")
    # Long: the tests prove that notify() wakes the watches, not this safety-net poll.
    kwargs.setdefault("poll_interval_s", 60.0)
    return EdgeApiServer(store, site=SITE, **kwargs)


@asynccontextmanager
async def serving(server: EdgeApiServer) -> AsyncIterator[int]:
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop(1.0)


@asynccontextmanager
async def stub(
    port: int, credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[edge_api_pb2_grpc.EdgeApiAsyncStub]:
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        yield edge_api_pb2_grpc.EdgeApiStub(channel)


WatchCall = grpc.aio.UnaryStreamCall[edge_api_pb2.WatchRequest, edge_api_pb2.WatchMovementsResponse]


async def _responses(call: WatchCall, n: int) -> list[edge_api_pb2.WatchMovementsResponse]:
    """The next responses of a watch until they hold n movements (exactly: no more arrive)."""
    out: list[edge_api_pb2.WatchMovementsResponse] = []
    count = 0
    async with asyncio.timeout(WAIT_S):
        while count < n:
            response = await call.read()
            assert isinstance(response, edge_api_pb2.WatchMovementsResponse), (
                f"stream ended after {count} movements"
            )
            assert response.movements, "an empty response"
            out.append(response)
            count += len(response.movements)
    assert count == n, f"{count} movements arrived, expected {n}"
    return out


async def _take(call: WatchCall, n: int) -> list[types_pb2.Movement]:
    """The next n movements of a watch, whatever responses carry them."""
    return [m for response in await _responses(call, n) for m in response.movements]


async def _eventually(condition: Callable[[], bool]) -> None:
    """For server-side effects of a client action, which the client cannot await directly."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - a server-side counter has no event to await
            await asyncio.sleep(0.01)


AUTH = (("authorization", f"Bearer {TOKEN}"),)


# --- WatchMovements ------------------------------------------------------------------------


def test_watch_replays_the_backlog_in_pages_then_follows_live_movements(store: EdgeStore) -> None:
    async def scenario() -> None:
        _record(store, 0, 25)
        server = _server(store, page_size=10)
        async with serving(server) as port, stub(port) as api:
            resumed = api.WatchMovements(edge_api_pb2.WatchRequest(after_seq=5))
            assert await _take(resumed, 20) == _expected(6, 25)
            live_only = api.WatchMovements(edge_api_pb2.WatchRequest(after_seq=25))
            await _eventually(lambda: server.active_watches == 2)

            await asyncio.to_thread(_record, store, 25, 15)
            server.notify()
            assert await _take(resumed, 15) == _expected(26, 40)
            assert await _take(live_only, 15) == _expected(26, 40)
            # What arrives converts back into exactly what was recorded.
            assert [movement_from_proto(m) for m in _expected(26, 40)] == [
                RecordedMovement(seq=s, site=SITE, movement=_movement(s - 1)) for s in range(26, 41)
            ]

            resumed.cancel()
            live_only.cancel()
            await _eventually(lambda: server.active_watches == 0)

    asyncio.run(scenario())


def test_a_backlog_larger_than_a_page_arrives_in_pages_of_at_most_page_size(
    store: EdgeStore,
) -> None:
    async def scenario() -> None:
        _record(store, 0, 25)
        server = _server(store, page_size=10)
        async with serving(server) as port, stub(port) as api:
            call = api.WatchMovements(edge_api_pb2.WatchRequest(after_seq=3))
            responses = await _responses(call, 22)
            assert [len(r.movements) for r in responses] == [10, 10, 2]
            assert [m for r in responses for m in r.movements] == _expected(4, 25)
            # Each says how far the store reached when it was read: here, all of the backlog.
            assert [r.last_seq for r in responses] == [25, 25, 25]

            # A burst recorded at once is a backlog too: pages again, then caught up.
            await asyncio.to_thread(_record, store, 25, 14)
            server.notify()
            burst = await _responses(call, 14)
            assert [len(r.movements) for r in burst] == [10, 4]
            assert [m for r in burst for m in r.movements] == _expected(26, 39)
            assert [r.last_seq for r in burst] == [39, 39]
            call.cancel()
            await _eventually(lambda: server.active_watches == 0)

    asyncio.run(scenario())


def test_a_live_movement_arrives_at_once_in_its_own_response(store: EdgeStore) -> None:
    async def scenario() -> None:
        _record(store, 0, 3)
        # The page is large and the poll long: only notify() can deliver it, and it must not
        # wait for more movements to fill a page.
        server = _server(store, page_size=500)
        async with serving(server) as port, stub(port) as api:
            call = api.WatchMovements(edge_api_pb2.WatchRequest())
            assert await _take(call, 3) == _expected(1, 3)  # caught up
            for i in (3, 4):
                await asyncio.to_thread(_record, store, i, 1)
                started = time.monotonic()
                server.notify()
                (response,) = await _responses(call, 1)
                assert time.monotonic() - started < 2.0
                assert list(response.movements) == _expected(i + 1, i + 1)
                assert response.last_seq == i + 1
            call.cancel()

    asyncio.run(scenario())


def test_a_page_too_large_for_one_message_is_split_in_seq_order(sqlite_store: EdgeStore) -> None:
    """Movements with many EPCs: a page's responses stay under the size limit, and a movement
    larger than the limit still travels, alone."""

    def big(i: int, epcs: int) -> Movement:
        return dataclasses.replace(
            _movement(i),
            kind=MovementKind.RECEIPT,
            sku=Sku("SKU-1"),
            from_location=LocationId("yard"),
            to_location=LocationId("receiving"),
            source_type=SourceType.RFID_PORTAL,
            source_id="door-1",
            epcs=tuple(f"3074257BF7194E4{i:05X}{e:04X}" for e in range(epcs)),
        )

    async def scenario() -> None:
        sizes = [5, 5, 5, 5, 40, 5, 5]  # EPCs per movement; the fifth is above the limit alone
        movements = [big(i, n) for i, n in enumerate(sizes)]
        await asyncio.to_thread(sqlite_store.record, movements, now=T0)
        small = max(
            movement_to_proto(RecordedMovement(seq=i + 1, site=SITE, movement=m)).ByteSize()
            for i, m in enumerate(movements)
            if len(m.epcs) == 5
        )
        # Two small movements fit (each costs its size plus at most 6 bytes of framing), a
        # third does not.
        limit = 2 * (small + 6) + 4
        server = _server(sqlite_store, max_response_bytes=limit)
        async with serving(server) as port, stub(port) as api:
            call = api.WatchMovements(edge_api_pb2.WatchRequest())
            responses = await _responses(call, len(sizes))
            assert [len(r.movements) for r in responses] == [2, 2, 1, 2]
            assert [r.ByteSize() <= limit for r in responses] == [True, True, False, True]
            got = [movement_from_proto(m) for r in responses for m in r.movements]
            assert [r.movement for r in got] == movements
            assert [r.seq for r in got] == list(range(1, 8))
            call.cancel()

    asyncio.run(scenario())


def test_a_movement_recorded_by_another_process_arrives_by_the_safety_net_poll(
    store: EdgeStore, database_url: str
) -> None:
    async def scenario() -> None:
        _record(store, 0, 3)
        server = _server(store, poll_interval_s=0.2)
        async with serving(server) as port, stub(port) as api:
            call = api.WatchMovements(edge_api_pb2.WatchRequest())
            assert await _take(call, 3) == _expected(1, 3)
            with EdgeStore.open(database_url, site=SITE) as other:  # nobody calls notify()
                await asyncio.to_thread(_record, other, 3, 2)
            assert await _take(call, 2) == _expected(4, 5)
            call.cancel()

    asyncio.run(scenario())


def test_a_watch_beyond_the_last_seq_or_beyond_the_limit_is_refused(
    sqlite_store: EdgeStore,
) -> None:
    async def scenario() -> None:
        _record(sqlite_store, 0, 4)
        server = _server(sqlite_store, max_watches=1)
        async with serving(server) as port, stub(port) as api:
            # A position from another store (or a replaced one) is an error, not a long wait.
            beyond = api.WatchMovements(edge_api_pb2.WatchRequest(after_seq=5))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await beyond.read()
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "beyond the last recorded seq 4" in (info.value.details() or "")

            first = api.WatchMovements(edge_api_pb2.WatchRequest(after_seq=4))
            await _eventually(lambda: server.active_watches == 1)
            second = api.WatchMovements(edge_api_pb2.WatchRequest())
            assert await _code(second) == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Queries are still served beside the watches.
            assert (await api.GetStatus(edge_api_pb2.StatusRequest())).last_seq == 4
            first.cancel()
            await _eventually(lambda: server.active_watches == 0)
            again = api.WatchMovements(edge_api_pb2.WatchRequest(after_seq=3))
            assert await _take(again, 1) == _expected(4, 4)
            again.cancel()

    asyncio.run(scenario())


def test_stop_ends_open_watches_with_unavailable_promptly(sqlite_store: EdgeStore) -> None:
    async def scenario() -> None:
        _record(sqlite_store, 0, 2)
        server = _server(sqlite_store)
        port = await server.start()
        async with stub(port) as api:
            call = api.WatchMovements(edge_api_pb2.WatchRequest())
            assert await _take(call, 2) == _expected(1, 2)
            started = time.monotonic()
            await server.stop(10.0)
            assert time.monotonic() - started < 5.0  # not the whole grace period
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "stopping" in (info.value.details() or "")

    asyncio.run(scenario())


def test_run_serves_until_cancelled_then_releases_the_port(sqlite_store: EdgeStore) -> None:
    async def scenario() -> None:
        port = free_port()
        server = _server(sqlite_store, listen=f"127.0.0.1:{port}")
        task = asyncio.get_running_loop().create_task(server.run())
        async with stub(port) as api:
            status = await api.GetStatus(edge_api_pb2.StatusRequest(), wait_for_ready=True)
            assert status.site == SITE
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(OSError):
            await _connect(port)

    asyncio.run(scenario())


async def _connect(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


# --- ListMovements ------------------------------------------------------------------------


def test_list_movements_pages_to_the_end(store: EdgeStore) -> None:
    async def scenario() -> None:
        _record(store, 0, 25)
        server = _server(store)
        async with serving(server) as port, stub(port) as api:
            pages: list[edge_api_pb2.MovementPage] = []
            after = 0
            while not pages or pages[-1].next_after_seq < pages[-1].last_seq:
                page = await api.ListMovements(
                    edge_api_pb2.ListMovementsRequest(after_seq=after, page_size=10)
                )
                pages.append(page)
                after = page.next_after_seq
            assert [len(p.movements) for p in pages] == [10, 10, 5]
            assert [(p.next_after_seq, p.last_seq) for p in pages] == [(10, 25), (20, 25), (25, 25)]
            assert [m for p in pages for m in p.movements] == _expected(1, 25)

            # At the end: an empty page that says so; then new movements continue it.
            end = await api.ListMovements(edge_api_pb2.ListMovementsRequest(after_seq=25))
            assert (list(end.movements), end.next_after_seq, end.last_seq) == ([], 25, 25)
            await asyncio.to_thread(_record, store, 25, 3)
            more = await api.ListMovements(edge_api_pb2.ListMovementsRequest(after_seq=25))
            assert list(more.movements) == _expected(26, 28)
            assert (more.next_after_seq, more.last_seq) == (28, 28)

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await api.ListMovements(edge_api_pb2.ListMovementsRequest(after_seq=29))
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "beyond the last recorded seq 28" in (info.value.details() or "")

    asyncio.run(scenario())


def test_list_movements_pages_are_bounded(sqlite_store: EdgeStore) -> None:
    total = LIST_PAGE_MAX + 7
    for first in range(0, total, 1000):
        _record(sqlite_store, first, min(1000, total - first))

    async def scenario() -> None:
        async with serving(_server(sqlite_store)) as port, stub(port) as api:
            default = await api.ListMovements(edge_api_pb2.ListMovementsRequest())
            assert len(default.movements) == LIST_PAGE_DEFAULT
            assert default.next_after_seq == LIST_PAGE_DEFAULT
            huge = await api.ListMovements(
                edge_api_pb2.ListMovementsRequest(after_seq=3, page_size=4_000_000_000)
            )
            assert len(huge.movements) == LIST_PAGE_MAX
            assert (huge.movements[0].seq, huge.next_after_seq) == (4, 3 + LIST_PAGE_MAX)
            assert huge.last_seq == total

    asyncio.run(scenario())


# --- health and reflection -------------------------------------------------------------------


def _health(channel: grpc.aio.Channel) -> Any:
    # grpcio-health-checking's stub types declare no methods; the calls are checked by the tests.
    return health_pb2_grpc.HealthStub(channel)


def test_health_is_open_serving_while_running_and_not_serving_from_stop(
    sqlite_store: EdgeStore,
) -> None:
    serving_ = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    async def scenario() -> None:
        server = _server(sqlite_store, token=TOKEN)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = _health(channel)
                # No token: probes need no secret.
                for service in ("", EDGE_API_SERVICE):
                    answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                    assert answer.status == serving_, service
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await health.Check(health_pb2.HealthCheckRequest(service="nope.Nope"))
                assert info.value.code() == grpc.StatusCode.NOT_FOUND

                watch = health.Watch(health_pb2.HealthCheckRequest(service=EDGE_API_SERVICE))
                assert (await watch.read()).status == serving_
                server.set_serving(False)  # e.g. the app lost its store
                assert (await watch.read()).status == not_serving
                assert (await health.Check(health_pb2.HealthCheckRequest())).status == not_serving
                server.set_serving(True)
                assert (await watch.read()).status == serving_

                started = time.monotonic()
                stopping = asyncio.ensure_future(server.stop(10.0))
                assert (await watch.read()).status == not_serving
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await watch.read()
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                await stopping
                assert time.monotonic() - started < 5.0  # the open watch did not hold stop
        finally:
            await server.stop(1.0)

    asyncio.run(scenario())


def test_open_health_watches_are_capped_and_cannot_lock_out_the_token_holders(
    sqlite_store: EdgeStore,
) -> None:
    """Health needs no token: without a cap, anyone could hold every call slot of the server."""

    async def scenario() -> None:
        server = _server(sqlite_store, token=TOKEN)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = _health(channel)
                request = health_pb2.HealthCheckRequest(service=EDGE_API_SERVICE)
                held = [health.Watch(request) for _ in range(HEALTH_WATCHES_MAX)]
                for watch in held:
                    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
                # Unauthenticated streams beyond the cap are refused, many times over.
                for _ in range(3 * HEALTH_WATCHES_MAX):
                    extra = health.Watch(request)
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await extra.read()
                    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                api = edge_api_pb2_grpc.EdgeApiStub(channel)
                metadata = (("authorization", f"Bearer {TOKEN}"),)
                status = await api.GetStatus(edge_api_pb2.StatusRequest(), metadata=metadata)
                assert status.site == SITE
                # A closed watch frees its place.
                held.pop().cancel()
                refusals: list[grpc.StatusCode] = []
                async with asyncio.timeout(WAIT_S):
                    while True:
                        again = health.Watch(request)
                        try:
                            await again.read()
                            break
                        except grpc.aio.AioRpcError as exc:  # the cancel is not processed yet
                            refusals.append(exc.code())
                            await asyncio.sleep(0.02)
                assert set(refusals) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
                for watch in held:
                    watch.cancel()
                again.cancel()
        finally:
            await server.stop(1.0)

    asyncio.run(scenario())


def _reflection_call(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )


async def _list_services(channel: grpc.aio.Channel, metadata: Any = ()) -> list[str]:
    call = _reflection_call(channel)(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
    )
    response = await call.read()
    return [s.name for s in response.list_services_response.service]


def test_reflection_lists_the_services_to_token_holders_only(sqlite_store: EdgeStore) -> None:
    async def scenario() -> None:
        async with (
            serving(_server(sqlite_store, token=TOKEN)) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            assert sorted(await _list_services(channel, AUTH)) == [
                "dockwatch.edge.v1.EdgeApi",
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            ]
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await _list_services(channel, metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(scenario())


# --- queries -------------------------------------------------------------------------------


def test_stock_snapshot_filters_and_continues_with_watch_without_gap_or_overlap(
    store: EdgeStore,
) -> None:
    async def scenario() -> None:
        _record(store, 0, 12)
        server = _server(store)
        async with serving(server) as port, stub(port) as api:
            everything = await api.GetStock(edge_api_pb2.StockQuery())
            assert everything.site == SITE
            assert everything.as_of_seq == 12
            levels = {(lv.location, lv.sku): lv.on_hand for lv in everything.levels}
            assert list(levels) == sorted(levels)  # ordered by (location, sku)
            assert levels == _on_hand(range(12))
            receiving = await api.GetStock(edge_api_pb2.StockQuery(location="receiving"))
            assert {(lv.location, lv.sku) for lv in receiving.levels} == {("receiving", "SKU-1")}
            gadgets = await api.GetStock(edge_api_pb2.StockQuery(sku="SKU-2"))
            assert {lv.location for lv in gadgets.levels} == {"shelf-a1", "picked"}
            assert {lv.site for lv in gadgets.levels} == {SITE}
            none = await api.GetStock(edge_api_pb2.StockQuery(location="nowhere"))
            assert list(none.levels) == []

            # A client holding the snapshot applies what it watches after as_of_seq ...
            await asyncio.to_thread(_record, store, 12, 7)
            call = api.WatchMovements(edge_api_pb2.WatchRequest(after_seq=everything.as_of_seq))
            for m in await _take(call, 7):
                levels[(m.from_location, m.sku)] = levels.get((m.from_location, m.sku), 0) - (
                    m.quantity
                )
                levels[(m.to_location, m.sku)] = levels.get((m.to_location, m.sku), 0) + m.quantity
            call.cancel()
            # ... and holds exactly the next snapshot.
            later = await api.GetStock(edge_api_pb2.StockQuery())
            assert later.as_of_seq == 19
            assert {(lv.location, lv.sku): lv.on_hand for lv in later.levels} == levels

    asyncio.run(scenario())


def test_every_stock_snapshot_is_exactly_the_movements_up_to_its_as_of_seq(
    store: EdgeStore, database_url: str
) -> None:
    """A writer in another store instance commits one movement at a time during the queries."""
    total = 150
    stretch = 25  # commits between two snapshots, at most
    # Set after every snapshot; the writer waits for one after each stretch of commits, so the
    # queries interleave with the writes however the machine schedules the two.
    snapshot_taken = threading.Event()

    def writer() -> None:
        with EdgeStore.open(database_url, site=SITE) as other:
            for i in range(total):
                _record(other, i, 1)
                if i % stretch == stretch - 1:
                    assert snapshot_taken.wait(WAIT_S), "no snapshot while writing"
                    snapshot_taken.clear()

    async def scenario() -> None:
        server = _server(store)
        async with serving(server) as port, stub(port) as api:
            writing = asyncio.ensure_future(asyncio.to_thread(writer))
            snapshots: list[edge_api_pb2.StockSnapshot] = []
            refusals: list[grpc.StatusCode] = []
            while not writing.done():
                try:
                    snapshots.append(await api.GetStock(edge_api_pb2.StockQuery()))
                    snapshot_taken.set()
                except grpc.aio.AioRpcError as exc:
                    refusals.append(exc.code())
            await writing
        assert set(refusals) <= {grpc.StatusCode.ABORTED}  # "retry", never a wrong answer
        assert len(snapshots) >= 5, f"{len(snapshots)} snapshots, {len(refusals)} aborted"
        for snap in snapshots:
            levels = {(lv.location, lv.sku): lv.on_hand for lv in snap.levels}
            assert levels == _on_hand(range(snap.as_of_seq)), snap.as_of_seq

    asyncio.run(scenario())


def _on_hand(indices: range) -> dict[tuple[str, str], int]:
    levels: dict[tuple[str, str], int] = {}
    for i in indices:
        m = _movement(i)
        levels[(m.from_location, m.sku)] = levels.get((m.from_location, m.sku), 0) - m.quantity
        levels[(m.to_location, m.sku)] = levels.get((m.to_location, m.sku), 0) + m.quantity
    return levels


def test_alerts_newest_first_devices_by_id_and_gateway_status(store: EdgeStore) -> None:
    def alert(alert_id: str, minutes: int, *, active: bool) -> Alert:
        return Alert(
            alert_id=alert_id,
            kind=AlertKind.LOW_STOCK,
            severity=Severity.WARNING,
            subject="shelf-a1/SKU-2",
            message=f"alert {alert_id}",
            raised_at=T0 + timedelta(minutes=minutes),
            active=active,
            details={"on_hand": 3, "reorder_point": 10},
        )

    store.upsert_alert(alert("old", 1, active=True))
    store.upsert_alert(alert("cleared", 2, active=False))
    store.upsert_alert(alert("new", 3, active=True))
    for device_id, state in (
        ("shelf-a1", DeviceState.OFFLINE),
        ("door-1-reader", DeviceState.ONLINE),
    ):
        store.set_device_status(
            DeviceStatus(
                device_id=DeviceId(device_id),
                device_type="modbus_shelf" if device_id.startswith("shelf") else "llrp_reader",
                state=state,
                since=T0,
                detail="timeout" if state is DeviceState.OFFLINE else "",
            )
        )
    _record(store, 0, 10)
    store.advance_cursor("mqtt", 7, now=T0)
    started = T0 + timedelta(hours=1)

    async def scenario() -> None:
        server = _server(
            store, status=lambda: RuntimeStatus(started, {"mqtt": True, "central": False})
        )
        async with serving(server) as port, stub(port) as api:
            active = await api.ListAlerts(edge_api_pb2.AlertQuery())
            assert [a.alert_id for a in active.alerts] == ["new", "old"]
            everything = await api.ListAlerts(edge_api_pb2.AlertQuery(include_cleared=True))
            assert [(a.alert_id, a.active) for a in everything.alerts] == [
                ("new", True),
                ("cleared", False),
                ("old", True),
            ]
            assert everything.alerts[0].kind == types_pb2.ALERT_KIND_LOW_STOCK
            assert dict(everything.alerts[0].details) == {"on_hand": 3.0, "reorder_point": 10.0}

            devices = await api.ListDevices(edge_api_pb2.DeviceQuery())
            assert [(d.device_id, d.state, d.detail) for d in devices.devices] == [
                ("door-1-reader", types_pb2.DEVICE_STATE_ONLINE, ""),
                ("shelf-a1", types_pb2.DEVICE_STATE_OFFLINE, "timeout"),
            ]

            status = await api.GetStatus(edge_api_pb2.StatusRequest())
            assert (status.site, status.version, status.last_seq) == (SITE, __version__, 10)
            assert datetime_from_timestamp(status.started_at) == started
            assert [(s.name, s.cursor, s.lag, s.connected) for s in status.sinks] == [
                ("central", 0, 10, False),
                ("mqtt", 7, 3, True),
            ]

    asyncio.run(scenario())


def test_status_without_a_provider_reports_the_start_time_and_stored_cursors(
    sqlite_store: EdgeStore,
) -> None:
    _record(sqlite_store, 0, 4)
    sqlite_store.advance_cursor("central", 4, now=T0)
    clock = T0 + timedelta(days=1)

    async def scenario() -> None:
        server = _server(sqlite_store, utcnow=lambda: clock)
        async with serving(server) as port, stub(port) as api:
            status = await api.GetStatus(edge_api_pb2.StatusRequest())
        assert datetime_from_timestamp(status.started_at) == clock
        assert [(s.name, s.cursor, s.lag, s.connected) for s in status.sinks] == [
            ("central", 4, 0, False)
        ]

    asyncio.run(scenario())


def test_an_unreadable_store_answers_unavailable_and_is_logged_once(
    sqlite_store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        server = _server(sqlite_store)
        async with serving(server) as port, stub(port) as api:
            sqlite_store.close()
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await api.GetStock(edge_api_pb2.StockQuery())
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "edge store unavailable" in (info.value.details() or "")

    asyncio.run(scenario())
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "GetStock" in errors[0].getMessage()


# --- authentication and TLS ------------------------------------------------------------------


async def _code(call: object) -> grpc.StatusCode:
    """The status a call ends with (OK when it succeeds)."""
    try:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            await call.read()
        else:
            assert isinstance(call, grpc.aio.UnaryUnaryCall)
            await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_the_bearer_token_is_required_on_every_method(
    sqlite_store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    _record(sqlite_store, 0, 1)

    async def scenario() -> None:
        # Any address: the token makes it acceptable (and the warning says it travels in clear).
        server = _server(sqlite_store, listen="0.0.0.0:0", token=TOKEN)
        async with serving(server) as port, stub(port) as api:
            for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
                calls = [
                    api.GetStatus(edge_api_pb2.StatusRequest(), metadata=metadata),
                    api.GetStock(edge_api_pb2.StockQuery(), metadata=metadata),
                    api.ListAlerts(edge_api_pb2.AlertQuery(), metadata=metadata),
                    api.ListDevices(edge_api_pb2.DeviceQuery(), metadata=metadata),
                    api.WatchMovements(edge_api_pb2.WatchRequest(), metadata=metadata),
                    api.ListMovements(edge_api_pb2.ListMovementsRequest(), metadata=metadata),
                ]
                assert [await _code(c) for c in calls] == [grpc.StatusCode.UNAUTHENTICATED] * 6
            for call in (
                api.GetStatus(edge_api_pb2.StatusRequest(), metadata=AUTH),
                api.GetStatus(
                    edge_api_pb2.StatusRequest(), metadata=(("authorization", f"bearer {TOKEN}"),)
                ),
                api.WatchMovements(edge_api_pb2.WatchRequest(), metadata=AUTH),
                api.ListMovements(edge_api_pb2.ListMovementsRequest(), metadata=AUTH),
            ):
                assert await _code(call) == grpc.StatusCode.OK
            assert server.refused_calls == 18

    asyncio.run(scenario())
    records = [r for r in caplog.records if r.name == LOGGER]
    assert all(TOKEN not in r.getMessage() for r in records)
    refusals = [r for r in records if "refused" in r.getMessage()]
    assert len(refusals) == 1  # one line, then counted, not a line per call
    assert any("unencrypted" in r.getMessage() for r in records)


def test_unknown_methods_reveal_nothing_without_the_token(sqlite_store: EdgeStore) -> None:
    async def scenario() -> None:
        server = _server(sqlite_store, token=TOKEN)
        async with (
            serving(server) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            nope: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/dockwatch.edge.v1.EdgeApi/Nope"
            )
            assert await _code(nope(b"")) == grpc.StatusCode.UNAUTHENTICATED
            assert await _code(nope(b"", metadata=AUTH)) == grpc.StatusCode.UNIMPLEMENTED

    asyncio.run(scenario())


def test_tls_with_a_token(sqlite_store: EdgeStore, tmp_path: Path) -> None:
    pem = self_signed_server(tmp_path)
    _record(sqlite_store, 0, 3)

    async def scenario() -> None:
        server = _server(
            sqlite_store,
            listen="0.0.0.0:0",
            token=TOKEN,
            tls_cert_file=pem.cert_file,
            tls_key_file=pem.key_file,
        )
        async with serving(server) as port:
            trusted = grpc.ssl_channel_credentials(root_certificates=pem.cert)
            async with stub(port, trusted) as api:
                call = api.WatchMovements(edge_api_pb2.WatchRequest(), metadata=AUTH)
                assert await _take(call, 3) == _expected(1, 3)
                call.cancel()
                no_token = api.GetStatus(edge_api_pb2.StatusRequest())
                assert await _code(no_token) == grpc.StatusCode.UNAUTHENTICATED
            async with stub(port) as plaintext:
                refused = plaintext.GetStatus(
                    edge_api_pb2.StatusRequest(), metadata=AUTH, timeout=WAIT_S
                )
                assert await _code(refused) == grpc.StatusCode.UNAVAILABLE

    asyncio.run(scenario())


def test_mutual_tls_admits_only_clients_signed_by_the_client_ca(
    sqlite_store: EdgeStore, tmp_path: Path
) -> None:
    server_ca = certificate_authority(tmp_path / "server-ca")
    server_pem = issue(server_ca, tmp_path / "server", "localhost", server=True)
    client_ca = certificate_authority(tmp_path / "client-ca", "clients")
    client = issue(client_ca, tmp_path / "client", "dashboard", server=False)
    stranger = issue(server_ca, tmp_path / "stranger", "stranger", server=False)

    def credentials(pem: Pem | None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=server_ca.cert,
            private_key=pem.key if pem else None,
            certificate_chain=pem.cert if pem else None,
        )

    async def scenario() -> None:
        # Client certificates are authentication enough to listen on any address.
        server = _server(
            sqlite_store,
            listen="0.0.0.0:0",
            tls_cert_file=server_pem.cert_file,
            tls_key_file=server_pem.key_file,
            tls_client_ca_file=client_ca.cert_file,
        )
        async with serving(server) as port:
            for pem, expected in (
                (client, grpc.StatusCode.OK),
                (None, grpc.StatusCode.UNAVAILABLE),
                (stranger, grpc.StatusCode.UNAVAILABLE),
            ):
                async with stub(port, credentials(pem)) as api:
                    call = api.GetStatus(edge_api_pb2.StatusRequest(), timeout=WAIT_S)
                    assert await _code(call) == expected, pem

    asyncio.run(scenario())


# --- configuration rules -----------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:50061", "[::]:50061", "gateway.example:50061"])
def test_an_unauthenticated_api_on_a_non_loopback_address_is_refused(
    sqlite_store: EdgeStore, listen: str
) -> None:
    with pytest.raises(ConfigError, match=r"api\.grpc_listen"):
        _server(sqlite_store, listen=listen)
    # TLS alone encrypts but admits anyone: still refused.
    with pytest.raises(ConfigError, match=r"api\.grpc_listen"):
        _server(sqlite_store, listen=listen, tls_cert_file="c.pem", tls_key_file="k.pem")


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "localhost:0", "[::1]:0", "127.8.9.10:0"])
def test_an_unauthenticated_api_on_loopback_warns_once(
    sqlite_store: EdgeStore, listen: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    _server(sqlite_store, listen=listen)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "loopback" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tls_cert_file": "c.pem"}, "cert_file and key_file"),
        ({"tls_key_file": "k.pem"}, "cert_file and key_file"),
        ({"tls_client_ca_file": "ca.pem"}, "client_ca_file"),
        ({"token": ""}, "api.token"),
        ({"token": "two words"}, "api.token"),
        ({"token": "t\u00f6ken"}, "api.token"),
        ({"listen": "127.0.0.1"}, "host:port"),
    ],
)
def test_inconsistent_settings_are_config_errors(
    sqlite_store: EdgeStore, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _server(sqlite_store, **kwargs)


def test_unreadable_tls_files_and_a_taken_port_fail_at_start(
    sqlite_store: EdgeStore, tmp_path: Path
) -> None:
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")

    async def scenario() -> None:
        for cert, key in ((tmp_path / "missing.pem", not_pem), (not_pem, not_pem)):
            server = _server(sqlite_store, token=TOKEN, tls_cert_file=cert, tls_key_file=key)
            with pytest.raises(ConfigError, match=r"api\.tls\.cert_file"):
                await server.start()
        first = _server(sqlite_store)
        async with serving(first) as port:
            second = _server(sqlite_store, listen=f"127.0.0.1:{port}")
            with pytest.raises(GatewayError, match="cannot listen"):
                await second.start()

    asyncio.run(scenario())
