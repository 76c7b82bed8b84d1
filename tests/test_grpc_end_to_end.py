"""gRPC end to end over real sockets: the edge store, the local API, the central relay and the
central simulator together, as a deployment runs them.

- A day's mixed movements, recorded in batches while the relay streams to the central simulator
  and a dashboard watches the local API: central's totals per location and SKU equal the
  gateway's stock, and every consumer saw every movement once, in order.
- A watcher that disconnects (its own channel closing, then the gateway restarting) resumes from
  its last seq and gets exactly what it missed.
- A client that knows nothing of dockwatch's protos builds GetStock from server reflection alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.central import CentralRelay
from gateway.adapters.grpc_api import EdgeApiServer
from gateway.adapters.proto_convert import movement_to_proto
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2
from simulators.central import CentralLedger, CentralServer
from tests.support.net import free_port
from tests.support.tls import self_signed_server

pytestmark = pytest.mark.integration

SITE = "dc-e2e"
T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
WAIT_S = 20.0
TOKEN = "e2e-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SKUS = ("SKU-1001", "SKU-1002", "SKU-1003")
LOCATIONS = ("yard", "receiving", "shelf-a1", "shelf-b1", "customer", "adjustment")
# (kind, from, to, source type, source id): the flows of a distribution centre's day.
FLOWS = (
    (MovementKind.RECEIPT, "yard", "receiving", SourceType.RFID_PORTAL, "door-1"),
    (MovementKind.TRANSFER, "receiving", "shelf-a1", SourceType.RFID_PORTAL, "door-2"),
    (MovementKind.TRANSFER, "receiving", "shelf-b1", SourceType.RFID_PORTAL, "door-2"),
    (MovementKind.PICK, "shelf-a1", "customer", SourceType.WEIGHT_SHELF, "shelf-a1"),
    (MovementKind.PICK, "shelf-b1", "customer", SourceType.WEIGHT_SHELF, "shelf-b1"),
    (MovementKind.RESTOCK, "receiving", "shelf-a1", SourceType.WEIGHT_SHELF, "shelf-a1"),
    (MovementKind.ADJUSTMENT, "adjustment", "shelf-b1", SourceType.MANUAL, "clerk-7"),
    (MovementKind.SHIPMENT, "receiving", "yard", SourceType.RFID_PORTAL, "door-1"),
    (MovementKind.RETURN, "customer", "receiving", SourceType.MANUAL, "clerk-7"),
)


def _movement(i: int) -> Movement:
    kind, src, dst, source_type, source_id = FLOWS[(i * 7) % len(FLOWS)]
    rfid = source_type is SourceType.RFID_PORTAL
    return Movement(
        movement_id=MovementId(f"e2e-{i:05d}"),
        kind=kind,
        sku=Sku(SKUS[i % len(SKUS)]),
        quantity=1 + (i * 5) % 24,
        from_location=LocationId(src),
        to_location=LocationId(dst),
        source_type=source_type,
        source_id=source_id,
        observed_at=T0 + timedelta(seconds=17 * i, microseconds=i),
        confidence=0.97 if rfid else 1.0,
        epcs=(f"urn:epc:id:sgtin:0614141.812345.{i}",) if rfid else (),
        container=f"urn:epc:id:sscc:0614141.{i:010d}" if kind is MovementKind.RECEIPT else None,
    )


def _open(url: str) -> EdgeStore:
    store = EdgeStore.open(url, site=SITE)
    store.sync_catalog(
        [CatalogItem(sku=Sku(sku), name=sku) for sku in SKUS],
        [LocationRecord(id=x) for x in LOCATIONS],
    )
    return store


@pytest.fixture
def store(database_url: str) -> Iterator[EdgeStore]:
    with _open(database_url) as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EdgeStore]:
    with _open(f"sqlite:///{tmp_path / 'edge.db'}") as s:
        yield s


@asynccontextmanager
async def serving(server: EdgeApiServer) -> AsyncIterator[int]:
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop(1.0)


async def _read(
    call: grpc.aio.UnaryStreamCall[edge_api_pb2.WatchRequest, edge_api_pb2.WatchMovementsResponse],
    n: int,
) -> list[types_pb2.Movement]:
    """The movements of a watch's next responses, until there are at least n (a response is a
    page: the last one may take the total beyond n)."""
    out: list[types_pb2.Movement] = []
    async with asyncio.timeout(WAIT_S):
        while len(out) < n:
            response = await call.read()
            assert isinstance(response, edge_api_pb2.WatchMovementsResponse), (
                f"stream ended after {len(out)}"
            )
            out.extend(response.movements)
    return out


# --- the whole flow --------------------------------------------------------------------------


def test_a_days_movements_reach_central_whose_totals_equal_the_gateway_stock(
    store: EdgeStore, tmp_path: Path
) -> None:
    batches = [(0, 40), (40, 1), (41, 25), (66, 60), (126, 14)]  # (first, count), as engines do
    total = sum(count for _, count in batches)

    async def scenario() -> None:
        with CentralLedger(tmp_path / "central.db") as ledger:
            central = CentralServer(ledger, listen="127.0.0.1:0", token="central-token")
            central_port = await central.start()
            relay = CentralRelay(
                store,
                site=SITE,
                target=f"127.0.0.1:{central_port}",
                token="central-token",
                batch_size=16,
                poll_interval_s=60.0,  # notify() must do the waking
                backoff=Backoff(BackoffPolicy(initial_s=0.02, max_s=0.2)),
            )
            api = EdgeApiServer(
                store, site=SITE, listen="127.0.0.1:0", token=TOKEN, poll_interval_s=60.0
            )
            async with (
                serving(api) as api_port,
                grpc.aio.insecure_channel(f"127.0.0.1:{api_port}") as channel,
                asyncio.TaskGroup() as tasks,
            ):
                relaying = tasks.create_task(relay.run())
                client = edge_api_pb2_grpc.EdgeApiStub(channel)
                watch = client.WatchMovements(edge_api_pb2.WatchRequest(), metadata=AUTH)
                watched = tasks.create_task(_read(watch, total))
                for first, count in batches:
                    # A recording sends one notify per batch, as the app does after record().
                    await asyncio.to_thread(
                        store.record, [_movement(i) for i in range(first, first + count)], now=T0
                    )
                    relay.notify()
                    api.notify()
                # A replay after a crash: recording is idempotent, nothing moves twice.
                replay = await asyncio.to_thread(
                    store.record, [_movement(i) for i in range(30, 45)], now=T0
                )
                assert (replay.recorded, len(replay.duplicates)) == ((), 15)
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(total)
                seen = await watched
                watch.cancel()
                relaying.cancel()
                snapshot = await client.GetStock(edge_api_pb2.StockQuery(), metadata=AUTH)
                listed = await _list_all(client)
            await central.stop()

            expected = [movement_to_proto(r) for r in store.movements_since(0, total + 1)]
            assert [m.seq for m in expected] == list(range(1, total + 1))
            # Every consumer saw each movement once, in seq order, as stored.
            assert seen == expected
            assert listed == expected
            assert [movement_to_proto(r) for r in ledger.movements(SITE)] == expected
            (stats,) = ledger.stats()
            assert (stats.unique, stats.duplicates, stats.gaps, stats.missing) == (total, 0, 0, 0)

            # Central's totals are the gateway's stock: same keys, quantities and last seqs.
            gateway_stock = {
                (lv.location, lv.sku): (lv.on_hand, lv.last_seq) for lv in store.stock()
            }
            central_totals = {
                (t.location, t.sku): (t.on_hand, t.last_seq) for t in ledger.totals(SITE)
            }
            assert central_totals == gateway_stock
            assert len(gateway_stock) >= 12  # the scenario touches many (location, SKU) pairs
            assert {(lv.location, lv.sku): (lv.on_hand, lv.last_seq) for lv in snapshot.levels} == (
                gateway_stock
            )
            assert snapshot.as_of_seq == total

    asyncio.run(scenario())


async def _list_all(client: edge_api_pb2_grpc.EdgeApiAsyncStub) -> list[types_pb2.Movement]:
    out: list[types_pb2.Movement] = []
    after = 0
    while True:
        page = await client.ListMovements(
            edge_api_pb2.ListMovementsRequest(after_seq=after, page_size=37), metadata=AUTH
        )
        out.extend(page.movements)
        after = page.next_after_seq
        if after == page.last_seq:
            return out


# --- a watcher resumes from its last seq -----------------------------------------------------


def test_a_watcher_that_disconnects_resumes_with_exactly_what_it_missed(
    sqlite_store: EdgeStore,
) -> None:
    store = sqlite_store

    def record(first: int, count: int) -> None:
        store.record([_movement(i) for i in range(first, first + count)], now=T0)

    def expected(first_seq: int, last_seq: int) -> list[types_pb2.Movement]:
        return [
            movement_to_proto(r)
            for r in store.movements_since(first_seq - 1, last_seq - first_seq + 1)
        ]

    async def scenario() -> None:
        port = free_port()
        record(0, 30)
        api = EdgeApiServer(store, site=SITE, listen=f"127.0.0.1:{port}", poll_interval_s=60.0)
        await api.start()
        try:
            # 1. The client goes away mid-backlog (its channel closes), having processed 12 of
            #    the movements it received.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = edge_api_pb2_grpc.EdgeApiStub(channel).WatchMovements(
                    edge_api_pb2.WatchRequest()
                )
                got = (await _read(call, 12))[:12]
            assert got == expected(1, 12)
            last = got[-1].seq
            await asyncio.to_thread(record, 30, 20)  # recorded while it is away
            api.notify()

            # 2. It comes back with its last seq: exactly 13..50, then the live ones.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                client = edge_api_pb2_grpc.EdgeApiStub(channel)
                call = client.WatchMovements(edge_api_pb2.WatchRequest(after_seq=last))
                got = await _read(call, 38)
                assert got == expected(13, 50)
                await asyncio.to_thread(record, 50, 5)
                api.notify()
                live = await _read(call, 5)
                assert live == expected(51, 55)
                last = live[-1].seq

                # 3. The gateway restarts under it: the stream ends UNAVAILABLE ...
                await api.stop(1.0)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call.read()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.to_thread(record, 55, 7)  # ... and records more while down
            api = EdgeApiServer(store, site=SITE, listen=f"127.0.0.1:{port}", poll_interval_s=60.0)
            await api.start()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = edge_api_pb2_grpc.EdgeApiStub(channel).WatchMovements(
                    edge_api_pb2.WatchRequest(after_seq=last)
                )
                # The resumed stream continues at 56: no gap, no repeat.
                assert await _read(call, 7) == expected(56, 62)
                call.cancel()
        finally:
            await api.stop(1.0)

    asyncio.run(scenario())


# --- a client built from reflection alone -----------------------------------------------------


def _reflective_get_stock(port: int, root_cert: bytes, location: str) -> dict[str, object]:
    """GetStock with no generated code: descriptors come from the server's reflection service.

    Runs a synchronous channel (grpcio-reflection's descriptor database is synchronous), so the
    test calls it in a worker thread. The token travels as call credentials, which send
    ``authorization: Bearer <token>`` on every call, the reflection stream included.
    """
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=root_cert),
        grpc.access_token_call_credentials(TOKEN),
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)  # a fresh pool, not the default one
        service = pool.FindServiceByName("dockwatch.edge.v1.EdgeApi")
        method = service.FindMethodByName("GetStock")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        assert response_class is not edge_api_pb2.StockSnapshot
        assert method.output_type.file.pool is pool
        get_stock = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        request = request_class()
        json_format.ParseDict({"location": location}, request)
        response = get_stock(request, timeout=WAIT_S)
    answer = json_format.MessageToDict(response, preserving_proto_field_name=True)
    answer["_services"] = services
    return answer


def test_a_client_built_only_from_reflection_reads_the_stock(
    sqlite_store: EdgeStore, tmp_path: Path
) -> None:
    pem = self_signed_server(tmp_path)
    sqlite_store.record([_movement(i) for i in range(60)], now=T0)
    receiving = sqlite_store.stock(location="receiving")

    async def scenario() -> dict[str, object]:
        api = EdgeApiServer(
            sqlite_store,
            site=SITE,
            listen="127.0.0.1:0",
            token=TOKEN,
            tls_cert_file=pem.cert_file,
            tls_key_file=pem.key_file,
        )
        async with serving(api) as port:
            return await asyncio.to_thread(_reflective_get_stock, port, pem.cert, "receiving")

    answer = asyncio.run(scenario())
    assert "dockwatch.edge.v1.EdgeApi" in answer["_services"]  # type: ignore[operator]
    assert answer["site"] == SITE
    assert answer["as_of_seq"] == "60"  # 64-bit integers are strings in protobuf's JSON
    levels = answer["levels"]
    assert isinstance(levels, list)
    assert [(lv["location"], lv["sku"], int(lv["on_hand"])) for lv in levels] == [
        (lv.location, lv.sku, lv.on_hand) for lv in receiving
    ]
    assert len(levels) == len(SKUS)
