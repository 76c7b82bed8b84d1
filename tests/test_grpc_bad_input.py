"""Hostile requests to the local gRPC API (issue 16), over real channels against a real store:
out-of-range fields and malformed bodies are INVALID_ARGUMENT naming the field, refused before
decoding without the token, logged once per client per minute, never a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.auth import PerClientLog, client_host
from gateway.adapters.grpc_api import SEQ_MAX, EdgeApiServer
from gateway.domain.model import CatalogItem, Sku
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
LOGGER = "gateway.adapters.grpc_api"
SERVICE = "/dockwatch.edge.v1.EdgeApi/"

MALFORMED = [
    b"\xff",  # a field number with an unfinished varint
    b"\x08",  # field 1 varint, no value
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # an 11-byte varint
    b"\x0a\x05ab",  # length 5, two bytes follow
    b"\x0f",  # wire type 7 does not exist
    b"\x0b",  # a start-group with no end
    b"\x0c",  # an end-group with no start
    b"\x00",  # field number 0
    b"\x12\xff\xff\xff\xff\x0f",  # a length of 4 GiB
    b"\x0a\x02\xff\xfe",  # a string field that is not UTF-8 (StockQuery.location)
    b"\x08\x80",
    b"\x1a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\x0d\x00\x00",  # fixed32 cut short
    b"\x09\x00\x00\x00",  # fixed64 cut short
    b"\xf8\xff\xff\xff\xff\x0f",  # a field number beyond 2^29
]
"""Fifteen request bodies that are no protobuf message (as in the issue's bench)."""
NOT_UTF8 = MALFORMED[9]
"""Malformed for StockQuery; for a message whose field 1 is a number it is an unknown field of
another wire type, which protobuf skips: a valid message."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore.open(f"sqlite:///{tmp_path / 'edge.db'}", site="dc-test") as s:
        s.sync_catalog([CatalogItem(sku=Sku("SKU-1"), name="Widget")], [LocationRecord(id="yard")])
        yield s


@asynccontextmanager
async def api(store: EdgeStore, token: str | None = TOKEN) -> AsyncIterator[grpc.aio.Channel]:
    server = EdgeApiServer(store, site="dc-test", listen="127.0.0.1:0", token=token)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(1.0)


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            while await call.read() is not grpc.aio.EOF:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("after_seq", [SEQ_MAX + 1, 2**64 - 1])
def test_after_seq_beyond_64_bits_signed_is_invalid_argument_naming_the_field(
    store: EdgeStore, caplog: pytest.LogCaptureFixture, after_seq: int
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with api(store) as channel:
            stub = edge_api_pb2_grpc.EdgeApiStub(channel)
            out = []
            for _ in range(3):
                out.append(
                    await status_of(
                        stub.ListMovements(
                            edge_api_pb2.ListMovementsRequest(after_seq=after_seq), metadata=AUTH
                        )
                    )
                )
                out.append(
                    await status_of(
                        stub.WatchMovements(
                            edge_api_pb2.WatchRequest(after_seq=after_seq), metadata=AUTH
                        )
                    )
                )
            # A position that may yet be recorded is gRPC's OUT_OF_RANGE, as before.
            out.append(
                await status_of(
                    stub.ListMovements(
                        edge_api_pb2.ListMovementsRequest(after_seq=SEQ_MAX), metadata=AUTH
                    )
                )
            )
            return out

    results = asyncio.run(scenario())
    for code, details in results[:-1]:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == (
            f"after_seq: must be at most {SEQ_MAX} (seqs are signed 64-bit integers), "
            f"got {after_seq}"
        )
    assert results[-1][0] == grpc.StatusCode.OUT_OF_RANGE
    no_tracebacks(caplog)
    lines = [r for r in caplog.records if "invalid request" in r.getMessage()]
    assert len(lines) == 1  # six invalid calls from one client: one line
    assert "127.0.0.1" in lines[0].getMessage()
    assert "after_seq" in lines[0].getMessage()


def test_malformed_bodies_are_refused_before_decoding_without_the_token(
    store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> tuple[list[grpc.StatusCode], list[tuple[grpc.StatusCode, str]]]:
        async with api(store) as channel:
            anonymous = []
            authenticated = []
            for method in ("ListMovements", "GetStock", "WatchMovements"):
                call: Callable[..., object] = (
                    channel.unary_stream(SERVICE + method)
                    if method == "WatchMovements"
                    else channel.unary_unary(SERVICE + method)
                )
                for body in MALFORMED:
                    if body == NOT_UTF8 and method != "GetStock":
                        continue  # an unknown field of another wire type: a valid message there
                    anonymous.append((await status_of(call(body)))[0])
                    authenticated.append(await status_of(call(body, metadata=AUTH)))
            return anonymous, authenticated

    anonymous, authenticated = asyncio.run(scenario())
    assert set(anonymous) == {grpc.StatusCode.UNAUTHENTICATED}
    for code, details in authenticated:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert details.startswith("request body is not a valid dockwatch.edge.v1.")
    no_tracebacks(caplog)
    invalid = [r for r in caplog.records if "invalid request" in r.getMessage()]
    refused = [r for r in caplog.records if "refused a call" in r.getMessage()]
    assert len(invalid) == 1
    assert len(refused) == 1


def test_an_unauthenticated_api_on_loopback_still_decodes_safely(
    store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with api(store, token=None) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                SERVICE + "ListMovements"
            )
            return [await status_of(call(body)) for body in MALFORMED if body != NOT_UTF8]

    for code, details in asyncio.run(scenario()):
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "dockwatch.edge.v1.ListMovementsRequest" in details
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"location": "x" * 65}, "location: must be at most 64 characters, got 65"),
        ({"sku": "x" * 1_000_000}, "sku: must be at most 64 characters, got 1000000"),
        ({"location": "a\x00b"}, "location: must not contain control characters"),
    ],
)
def test_stock_query_ids_are_bounded(
    store: EdgeStore, caplog: pytest.LogCaptureFixture, query: dict[str, str], message: str
) -> None:
    async def scenario() -> tuple[grpc.StatusCode, str]:
        async with api(store) as channel:
            stub = edge_api_pb2_grpc.EdgeApiStub(channel)
            return await status_of(stub.GetStock(edge_api_pb2.StockQuery(**query), metadata=AUTH))

    code, details = asyncio.run(scenario())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message)
    no_tracebacks(caplog)


def test_invalid_requests_are_logged_once_per_client_per_minute() -> None:
    now = [0.0]
    logger = logging.getLogger("test.per_client")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger.addHandler(Keep())
    logger.setLevel(logging.DEBUG)
    log = PerClientLog(logger, "bad", every_s=60, max_clients=2, clock=lambda: now[0])
    for _ in range(5):
        log.report("ipv4:10.0.0.1:1111", "x")
        log.report("ipv4:10.0.0.1:2222", "x")  # another connection, the same client
    log.report("ipv6:[::1]:3333", "y")
    assert len(records) == 2
    now[0] = 61.0
    log.report("ipv4:10.0.0.1:4444", "x")
    assert len(records) == 3
    assert "9 more from this client" in records[-1]
    assert log.total == 12
    assert client_host("ipv6:[::1]:50051") == "[::1]"
    assert client_host("unix:/tmp/s") == "unix:/tmp/s"


def test_every_service_decodes_behind_the_gate_streams_and_health_included(
    store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[grpc.StatusCode, str, grpc.StatusCode, str]:
        async with api(store) as channel:
            reflection: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            )
            call = reflection(metadata=AUTH)
            try:
                await call.write(b"\xff\xff")
                await call.done_writing()
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError:
                pass
            stream = (await call.code(), await call.details())
            health: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/grpc.health.v1.Health/Check"
            )
            code, details = await status_of(health(b"\xff"))  # open: no token needed
            return (*stream, code, details)

    stream_code, stream_details, health_code, health_details = asyncio.run(scenario())
    assert stream_code == grpc.StatusCode.INVALID_ARGUMENT
    assert stream_details.startswith(
        "request body is not a valid grpc.reflection.v1alpha.ServerReflectionRequest"
    )
    assert health_code == grpc.StatusCode.INVALID_ARGUMENT
    assert health_details.startswith(
        "request body is not a valid grpc.health.v1.HealthCheckRequest"
    )
    no_tracebacks(caplog)
