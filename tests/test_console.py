"""The operator console without a browser: the re-count rule, the feed's bounds, and the
listener's rules for the console's paths over real sockets (the API token by header or by the
sign-in cookie, the operator token for actions, the live stream). The browser tests
(test_console_browser.py) run the same console wired to a real gateway."""

from __future__ import annotations

import asyncio
import http.cookiejar
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.adapters.metrics import MetricsServer, server_tls_context
from gateway.console.feed import ConsoleFeed, FeedFull
from gateway.console.web import Console, ConsoleData
from gateway.domain.epc import decode_epc, encode_sgtin96
from gateway.domain.model import (
    DeviceId,
    Epc,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    MovementReason,
    RecordedMovement,
    Sku,
    SourceType,
    StockLevel,
    TagRead,
)
from gateway.domain.recount import RecountRefused, ShelfReading, recount
from tests.support.tls import certificate_authority, issue

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
API_TOKEN = "api-token-1"
OPERATOR = "operator-token-1"


def _reading(**changes: object) -> ShelfReading:
    base: dict[str, object] = {
        "shelf_id": "shelf-a1",
        "location": LocationId("shelf-a1"),
        "sku": Sku("SKU-1001"),
        "adjust_location": LocationId("adjustment"),
        "on_hand": 10,
        "implied_units": 7,
        "fits": True,
        "confidence": 0.9,
    }
    base.update(changes)
    return ShelfReading(**base)  # type: ignore[arg-type]


def test_a_recount_corrects_the_book_to_the_weight() -> None:
    down = recount(_reading(), NOW)
    assert down is not None
    assert (down.kind, down.quantity, down.reason) == (
        MovementKind.ADJUSTMENT,
        3,
        MovementReason.RECONCILIATION,
    )
    assert (down.from_location, down.to_location) == ("shelf-a1", "adjustment")
    up = recount(_reading(implied_units=12), NOW)
    assert up is not None
    assert (up.quantity, up.from_location, up.to_location) == (2, "adjustment", "shelf-a1")
    assert recount(_reading(), NOW) == down  # the same evidence, the same movement id
    assert recount(_reading(implied_units=10), NOW) is None
    for refused in (
        _reading(implied_units=None),
        _reading(fits=False),
        _reading(on_hand=None),
        _reading(implied_units=-1),
    ):
        with pytest.raises(RecountRefused):
            recount(refused, NOW)


def _recorded(seq: int) -> RecordedMovement:
    return RecordedMovement(
        seq=seq,
        site="t",
        movement=Movement(
            movement_id=MovementId(f"m-{seq}"),
            kind=MovementKind.TRANSFER,
            sku=Sku("SKU-1"),
            quantity=1,
            from_location=LocationId("a"),
            to_location=LocationId("b"),
            source_type=SourceType.MANUAL,
            source_id="clerk",
            observed_at=NOW,
            confidence=1.0,
        ),
    )


def test_the_feed_keeps_a_window_and_drops_a_page_that_falls_behind() -> None:
    feed = ConsoleFeed(utcnow=lambda: NOW, movements_kept=5, subscribers_max=2, queue_max=4)
    with feed.subscribe() as slow, feed.subscribe() as other:
        with pytest.raises(FeedFull), feed.subscribe():
            pass
        feed.recorded([_recorded(i) for i in range(1, 4)], [])
        assert slow.qsize() == 3
        other.get_nowait()
        feed.recorded([_recorded(4)], [])  # slow is full: told to reload, and dropped
        assert [slow.get_nowait()[0] for _ in range(4)] == ["movement"] * 3 + ["reload"]
        assert feed.subscribers == 1
        assert other.qsize() == 3
    assert feed.subscribers == 0
    feed.recorded([_recorded(i) for i in range(5, 12)], [])
    assert [m["seq"] for m in feed.movements] == [7, 8, 9, 10, 11]
    assert feed.this_minute() == 11


def _console(feed: ConsoleFeed) -> Console:
    async def none() -> list[object]:
        return []

    async def stock() -> list[StockLevel]:
        return [StockLevel(LocationId("a"), Sku("SKU-1"), 5, NOW, 1)]

    async def recent(count: int) -> list[RecordedMovement]:
        return []

    data = ConsoleData(
        site="t",
        devices=none,  # type: ignore[arg-type]
        device_ids=[("door-1-reader", "reader")],
        stock=stock,
        alerts=none,  # type: ignore[arg-type]
        recent=recent,
        sync=lambda: {"last_seq": 1, "mqtt": 1},
        shelves=list,
        doors=[],
        antennas=dict,
        receipts=None,
    )
    return Console(data, feed, operator_token=OPERATOR)


@asynccontextmanager
async def serving(console: Console, token: str | None = API_TOKEN) -> AsyncIterator[str]:
    server = MetricsServer(
        "127.0.0.1:0", dict, token, request_timeout_s=5.0, **console.listener_options()
    )
    port = await server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()


def _call(
    opener: urllib.request.OpenerDirector,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()


def test_pages_need_the_api_token_and_a_browser_signs_in_with_a_cookie() -> None:
    async def scenario() -> None:
        async with serving(_console(ConsoleFeed(utcnow=lambda: NOW))) as base:
            browser = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
            )
            assert (await asyncio.to_thread(_call, browser, base + "/stock"))[0] == 401
            for public in ("/login", "/static/console.js", "/healthz"):
                assert (await asyncio.to_thread(_call, browser, base + public))[0] == 200
            form = urllib.parse.urlencode({"token": API_TOKEN}).encode()
            status, body = await asyncio.to_thread(_call, browser, base + "/login", form)
            assert status == 200  # redirected to the overview, signed in
            assert b"Overview" in body
            status, body = await asyncio.to_thread(_call, browser, base + "/stock")
            assert status == 200
            assert b'id="stock-a|SKU-1"' in body
            bearer = {"Authorization": f"Bearer {API_TOKEN}"}
            plain = urllib.request.build_opener()
            assert (await asyncio.to_thread(_call, plain, base + "/", None, bearer))[0] == 200

    asyncio.run(scenario())


def test_actions_need_the_operator_token() -> None:
    async def scenario() -> None:
        feed = ConsoleFeed(utcnow=lambda: NOW)
        async with serving(_console(feed), token=None) as base:
            opener = urllib.request.build_opener()
            ack = base + "/actions/alerts/low_stock:SKU-1/acknowledge"
            assert (await asyncio.to_thread(_call, opener, ack, b""))[0] == 401
            wrong = {"X-Operator-Token": "nope"}
            assert (await asyncio.to_thread(_call, opener, ack, b"", wrong))[0] == 403
            right = {"X-Operator-Token": OPERATOR}
            assert (await asyncio.to_thread(_call, opener, ack, b"", right))[0] == 404
            assert (await asyncio.to_thread(_call, opener, base + "/", None))[0] == 200

    asyncio.run(scenario())


def test_the_stream_pushes_what_the_feed_hears() -> None:
    async def scenario() -> None:
        feed = ConsoleFeed(utcnow=lambda: NOW)
        async with serving(_console(feed), token=None) as base:
            port = int(base.rpartition(":")[2])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"retry: 2000\n\n")
                assert b"text/event-stream" in head
                assert feed.subscribers == 1  # subscribed before the head was sent
                feed.recorded([_recorded(42)], [])
                event = await reader.readuntil(b"\n\n")
                while b"event: tick" in event:
                    event = await reader.readuntil(b"\n\n")
            assert b"event: movement" in event
            assert b'"seq":42' in event
            writer.close()

    asyncio.run(scenario())


def test_a_stock_page_stream_starts_with_the_levels_changed_since_start() -> None:
    """The page is rendered before its stream subscribes: a level that changed in between is
    sent when the stream opens (it stayed wrong on the page until it changed again)."""

    async def scenario() -> None:
        feed = ConsoleFeed(utcnow=lambda: NOW)
        # Committed after the page was rendered, before its stream subscribed.
        feed.recorded([_recorded(7)], [StockLevel(LocationId("b"), Sku("SKU-1"), 8, NOW, 7)])
        async with serving(_console(feed), token=None) as base:
            port = int(base.rpartition(":")[2])
            for page, sent in ((b"stock", True), (b"movements", False)):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /events?page=" + page + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                async with asyncio.timeout(10):
                    await reader.readuntil(b"retry: 2000\n\n")
                    event = await reader.readuntil(b"\n\n")
                if sent:
                    assert b"event: stock" in event
                    assert b'"location":"b"' in event
                    assert b'"on_hand":8' in event
                else:
                    assert b"event: tick" in event  # no stock replay for a page without it
                writer.close()

    asyncio.run(scenario())


def test_with_client_certificates_the_pages_need_one_and_the_static_files_do_not(
    tmp_path: Path,
) -> None:
    server_ca = certificate_authority(tmp_path / "server-ca")
    client_ca = certificate_authority(tmp_path / "client-ca", "clients")
    server_pem = issue(server_ca, tmp_path / "server", "localhost", server=True)
    client_pem = issue(client_ca, tmp_path / "client", "supervisor", server=False)
    anonymous = ssl.create_default_context(cafile=server_ca.cert_file)
    with_cert = ssl.create_default_context(cafile=server_ca.cert_file)
    with_cert.load_cert_chain(client_pem.cert_file, client_pem.key_file)

    def fetch(url: str, context: ssl.SSLContext) -> int:
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code)

    async def scenario() -> None:
        console = _console(ConsoleFeed(utcnow=lambda: NOW))
        tls = server_tls_context(server_pem.cert_file, server_pem.key_file, client_ca.cert_file)
        server = MetricsServer("0.0.0.0:0", dict, tls=tls, **console.listener_options())
        port = await server.start()
        base = f"https://127.0.0.1:{port}"
        try:
            assert await asyncio.to_thread(fetch, base + "/stock", anonymous) == 403
            assert await asyncio.to_thread(fetch, base + "/stock", with_cert) == 200
            assert await asyncio.to_thread(fetch, base + "/static/console.css", anonymous) == 200
            assert await asyncio.to_thread(fetch, base + "/healthz", anonymous) == 200
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_the_reads_of_a_tag_are_found_by_urn_or_hex() -> None:
    hex_epc = encode_sgtin96("0614141", "812345", 6789)
    urn = decode_epc(hex_epc).uri
    feed = ConsoleFeed(utcnow=lambda: NOW, reads_kept=3)
    reader = DeviceId("door-1-reader")
    other = encode_sgtin96("0614141", "812345", 1)
    feed.reads([TagRead(reader, 1, Epc(other), -60.0, 1, 1)])  # pushed out of the window below
    feed.reads([TagRead(reader, a, Epc(hex_epc), -50.0 - a, 10 + a, 10 + a) for a in (1, 3)])
    feed.reads([TagRead(reader, 2, Epc(other), -70.0, 20, 20)])
    found = feed.reads_of([urn])
    assert [(r["antenna"], r["rssi"], r["epc"]) for r in found] == [
        (1, -51.0, urn),
        (3, -53.0, urn),
    ]
    assert len(feed.reads_of([hex_epc])) == 2
    assert [r["antenna"] for r in feed.reads_of([other])] == [2]
