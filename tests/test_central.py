"""Central ingest: the simulator over a real socket, and the relay from a real edge store to it."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.central import CentralRelay, ChannelTls
from gateway.adapters.proto_convert import movement_to_proto
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    RecordedMovement,
    Sku,
    SourceType,
)
from gateway.proto.dockwatch.central.v1 import ingest_pb2, ingest_pb2_grpc
from simulators.central import (
    CentralLedger,
    CentralServer,
    IngestService,
    ServerTls,
    SiteStats,
    SiteTotal,
)
from tests.conftest import missing
from tests.support.net import free_port, wait_for_port

pytestmark = pytest.mark.integration

SITE = "dc-test"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
FAST_BACKOFF = BackoffPolicy(initial_s=0.02, max_s=0.2)
WAIT_S = 20.0


def _movement(i: int) -> Movement:
    return Movement(
        movement_id=MovementId(f"m-{i:05d}"),
        kind=MovementKind.RECEIPT,
        sku=Sku("SKU-1"),
        quantity=1 + i % 5,
        from_location=LocationId("yard"),
        to_location=LocationId("receiving"),
        source_type=SourceType.RFID_PORTAL,
        source_id="door-1",
        observed_at=T0 + timedelta(microseconds=1_000_001 * i),
        confidence=0.97,
        epcs=(f"3074257BF7194E40000{i:05X}",),
    )


def _record(store: EdgeStore, first: int, count: int) -> None:
    store.record([_movement(i) for i in range(first, first + count)], now=T0)


@pytest.fixture
def store(database_url: str) -> Iterator[EdgeStore]:
    with EdgeStore.open(database_url, site=SITE) as s:
        s.sync_catalog(
            [CatalogItem(sku=Sku("SKU-1"), name="Widget")],
            [LocationRecord(id="yard"), LocationRecord(id="receiving")],
        )
        yield s


def _relay(
    store: EdgeStore,
    port: int,
    *,
    token: str | None = None,
    tls: ChannelTls | None = None,
    batch_size: int = 10,
    max_in_flight: int = 3,
) -> CentralRelay:
    return CentralRelay(
        store,
        site=SITE,
        target=f"127.0.0.1:{port}",
        token=token,
        tls=tls,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        # Long: the tests prove that notify() wakes the relay, not this safety-net poll.
        poll_interval_s=60.0,
        backoff=Backoff(FAST_BACKOFF),
    )


@asynccontextmanager
async def running(relay: CentralRelay) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(relay.run())
        try:
            yield
        finally:
            task.cancel()


class LogWatch(logging.Handler):
    """Sets an event once ``logger`` logged a message containing ``text`` ``times`` times.

    The relay logs from the event loop's thread, so setting the asyncio event here is safe.
    """

    def __init__(self, logger: str, text: str, *, times: int = 1) -> None:
        super().__init__(logging.DEBUG)
        self._logger = logging.getLogger(logger)
        self._text = text
        self._left = times
        self._event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self._text in record.getMessage():
            self._left -= 1
            if self._left <= 0:
                self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    def __enter__(self) -> LogWatch:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)


def _stats(ledger: CentralLedger) -> SiteStats:
    (stats,) = ledger.stats()
    return stats


def _assert_exactly_once_in_order(arrived: Sequence[RecordedMovement], count: int) -> None:
    assert [r.seq for r in arrived] == list(range(1, count + 1))
    assert [r.movement for r in arrived] == [_movement(i) for i in range(count)]
    assert {r.site for r in arrived} == {SITE}


# --- the relay against the simulator in-process ----------------------------------------------


def test_every_movement_arrives_once_in_order_and_the_cursor_follows_acks(
    store: EdgeStore, tmp_path: Path
) -> None:
    async def scenario() -> None:
        with CentralLedger(tmp_path / "central.db") as ledger:
            server = CentralServer(ledger, listen="127.0.0.1:0")
            port = await server.start()
            relay = _relay(store, port)
            _record(store, 0, 45)  # a backlog from before the relay started
            async with running(relay):
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(45)
                assert relay.connected
                assert store.get_cursor("central") == 45
                _record(store, 45, 30)
                relay.notify()
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(75)
            assert store.get_cursor("central") == 75
            # The gateway restarts: a new relay resumes after the stored cursor, re-sending nothing.
            _record(store, 75, 5)
            restarted = _relay(store, port)
            async with running(restarted):
                async with asyncio.timeout(WAIT_S):
                    await restarted.wait_acked(80)
            await server.stop()
            assert store.get_cursor("central") == 80
            _assert_exactly_once_in_order(ledger.movements(SITE), 80)
            assert _stats(ledger) == SiteStats(SITE, 80, 80, 80, 0, 0, 0)

    asyncio.run(scenario())


def test_central_restored_from_an_old_backup_is_refilled(
    store: EdgeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GetCursor below the store's cursor makes the relay resend from central's position."""

    async def scenario() -> None:
        _record(store, 0, 25)
        port = free_port()
        with CentralLedger(tmp_path / "first.db") as first:
            server = CentralServer(first, listen=f"127.0.0.1:{port}")
            await server.start()
            relay = _relay(store, port)
            async with running(relay):
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(25)
                await server.stop()
                # The same address, an empty database: central lost everything.
                with CentralLedger(tmp_path / "restored.db") as restored:
                    server = CentralServer(restored, listen=f"127.0.0.1:{port}")
                    await server.start()
                    async with asyncio.timeout(WAIT_S):
                        await server.wait_stored(SITE, 25)
                    await server.stop()
                    _assert_exactly_once_in_order(restored.movements(SITE), 25)
        assert store.get_cursor("central") == 25
        assert any("only through seq 0" in r.getMessage() for r in caplog.records)

    asyncio.run(scenario())


def test_bearer_token_is_required_and_a_refusal_is_logged_once(
    store: EdgeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.adapters.central")

    async def scenario() -> None:
        _record(store, 0, 5)
        with CentralLedger(tmp_path / "central.db") as ledger:
            server = CentralServer(ledger, listen="127.0.0.1:0", token="s3cret-token")
            port = await server.start()
            wrong = _relay(store, port, token="wrong")
            with LogWatch("gateway.adapters.central", "attempt failed", times=3) as retried:
                async with running(wrong):
                    async with asyncio.timeout(WAIT_S):
                        await retried.wait()
            assert ledger.stats() == []
            right = _relay(store, port, token="s3cret-token")
            async with running(right):
                async with asyncio.timeout(WAIT_S):
                    await right.wait_acked(5)
            await server.stop()
            assert _stats(ledger).unique == 5

    asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "UNAUTHENTICATED" in errors[0].getMessage()
    assert all("s3cret-token" not in r.getMessage() for r in caplog.records)


def _self_signed(tmp_path: Path) -> tuple[bytes, bytes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("the openssl binary")
    assert openssl is not None
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert.read_bytes(), key.read_bytes()


def test_relay_streams_over_tls(store: EdgeStore, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)

    async def scenario() -> None:
        _record(store, 0, 12)
        with CentralLedger(tmp_path / "central.db") as ledger:
            server = CentralServer(ledger, listen="127.0.0.1:0", tls=ServerTls(cert, key))
            port = await server.start()
            relay = _relay(store, port, tls=ChannelTls(root_certificates=cert))
            async with running(relay):
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(12)
            await server.stop()
            _assert_exactly_once_in_order(ledger.movements(SITE), 12)

    asyncio.run(scenario())


class SilentCentral(ingest_pb2_grpc.InventoryIngestServicer):
    """A central that takes batches and never acknowledges them (a hung peer)."""

    def __init__(self) -> None:
        self.first_seqs: list[int] = []
        self.resent = asyncio.Event()
        self.acking = False

    async def Ingest(
        self,
        request_iterator: AsyncIterator[ingest_pb2.IngestBatch],
        context: grpc.aio.ServicerContext[ingest_pb2.IngestBatch, ingest_pb2.IngestAck],
    ) -> AsyncIterator[ingest_pb2.IngestAck]:
        async for batch in request_iterator:
            self.first_seqs.append(batch.movements[0].seq)
            if self.first_seqs.count(1) >= 2:
                self.resent.set()
            if self.acking:
                yield ingest_pb2.IngestAck(
                    site=batch.site, acked_through_seq=batch.movements[-1].seq
                )

    async def GetCursor(
        self,
        request: ingest_pb2.CursorRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.CursorRequest, ingest_pb2.Cursor],
    ) -> ingest_pb2.Cursor:
        return ingest_pb2.Cursor(site=request.site, acked_through_seq=0)


# Armed when the first batch goes out: the second batch of the window must be sent within it
# (a query and a write, milliseconds; the rest is room for a loaded machine).
ACK_TIMEOUT_S = 0.6


def test_without_acks_the_cursor_stays_and_the_window_is_resent(
    store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The silent central is a fake; the real simulator's acks are tested above."""

    async def scenario() -> None:
        _record(store, 0, 50)
        silent = SilentCentral()
        server = grpc.aio.server()
        ingest_pb2_grpc.add_InventoryIngestServicer_to_server(silent, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        relay = CentralRelay(
            store,
            site=SITE,
            target=f"127.0.0.1:{port}",
            batch_size=10,
            max_in_flight=2,
            ack_timeout_s=ACK_TIMEOUT_S,
            backoff=Backoff(FAST_BACKOFF),
        )
        async with running(relay):
            async with asyncio.timeout(WAIT_S):
                await silent.resent.wait()
        await server.stop(None)
        # The window (2 batches of 10) was sent, then nothing until the ack timeout, then the
        # same window again from the cursor.
        assert silent.first_seqs[:3] == [1, 11, 1]
        assert store.get_cursor("central") == 0

    asyncio.run(scenario())
    assert any(f"no ack for {ACK_TIMEOUT_S}s" in r.getMessage() for r in caplog.records)


# --- the simulator as a process, killed and restarted ----------------------------------------


def _start_central(port: int, db: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "central",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(db),
            "--summary-interval",
            "0.1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_central_killed_mid_stream_and_restarted_loses_nothing(
    store: EdgeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.adapters.central")
    port, db = free_port(), tmp_path / "central.db"
    report_file = tmp_path / "report" / "central.json"
    total = 400

    async def scenario() -> str:
        _record(store, 0, total)
        central = _start_central(port, db)
        try:
            await asyncio.to_thread(wait_for_port, "127.0.0.1", port, WAIT_S)
            relay = _relay(store, port, batch_size=5, max_in_flight=4)
            async with running(relay):
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(60)
                with LogWatch("gateway.adapters.central", "unreachable") as down:
                    central.kill()  # SIGKILL while batches are in flight
                    await asyncio.to_thread(central.communicate, timeout=10)
                    async with asyncio.timeout(WAIT_S):
                        await down.wait()
                assert not relay.connected
                cursor_while_down = store.get_cursor("central")
                assert 60 <= cursor_while_down < total
                # Only acks move the cursor: it never passes what central durably stored.
                with CentralLedger(db) as after_kill:
                    assert cursor_while_down <= _stats(after_kill).acked_through_seq
                central = _start_central(port, db, "--totals-file", str(report_file))
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(total)
            central.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(central.communicate, timeout=10)
        finally:
            if central.poll() is None:
                central.kill()
                central.wait()
        assert central.returncode == 0, err
        return out

    out = asyncio.run(scenario())
    assert store.get_cursor("central") == total
    with CentralLedger(db) as ledger:
        _assert_exactly_once_in_order(ledger.movements(SITE), total)
        stats = _stats(ledger)
    assert (stats.unique, stats.gaps, stats.missing, stats.conflicts) == (total, 0, 0, 0)
    assert stats.received == total + stats.duplicates
    last_line = out.strip().splitlines()[-1]
    assert f"unique={total}" in last_line
    assert "gaps=0" in last_line
    assert f"{SITE}@{total}" in last_line
    # The report at exit: central's totals are the gateway's stock, as a table and as JSON.
    stock = store.stock()
    assert {(lv.location, lv.sku) for lv in stock} == {("receiving", "SKU-1"), ("yard", "SKU-1")}
    table = out[out.index("central totals per site, location and SKU:") :].splitlines()
    assert table[1].split() == ["SITE", "LOCATION", "SKU", "ON_HAND", "LAST_SEQ"]
    assert [row.split() for row in table[2:4]] == [
        [SITE, lv.location, lv.sku, str(lv.on_hand), str(lv.last_seq)] for lv in stock
    ]
    written = json.loads(report_file.read_text())["sites"][SITE]
    assert (written["unique"], written["gaps"], written["missing"]) == (total, 0, 0)
    assert written["totals"] == [
        {"location": lv.location, "sku": lv.sku, "on_hand": lv.on_hand, "last_seq": lv.last_seq}
        for lv in stock
    ]
    relay_logs = [r for r in caplog.records if r.name == "gateway.adapters.central"]
    assert [r.levelname for r in relay_logs if r.levelno >= logging.ERROR] == ["ERROR"]
    assert sum("reachable again" in r.getMessage() for r in relay_logs) == 1


# --- the simulator's checks, driven by a raw client ------------------------------------------


def _pb(
    i: int, *, seq: int | None = None, site: str = SITE, batch_site: str | None = None
) -> ingest_pb2.IngestBatch:
    """A batch of one: movement ``i`` (seq ``i + 1`` unless given)."""
    recorded = RecordedMovement(seq=i + 1 if seq is None else seq, site=site, movement=_movement(i))
    return ingest_pb2.IngestBatch(
        site=site if batch_site is None else batch_site, movements=[movement_to_proto(recorded)]
    )


async def _stream(
    stub: ingest_pb2_grpc.InventoryIngestAsyncStub, batches: Sequence[ingest_pb2.IngestBatch]
) -> list[int]:
    call = stub.Ingest()
    acks = []
    for batch in batches:
        await call.write(batch)
        ack = await call.read()
        assert isinstance(ack, ingest_pb2.IngestAck)
        acks.append(ack.acked_through_seq)
    await call.done_writing()
    return acks


def test_simulator_counts_duplicates_gaps_and_conflicts(tmp_path: Path) -> None:
    async def scenario() -> None:
        with CentralLedger(tmp_path / "central.db") as ledger:
            server = CentralServer(ledger, listen="127.0.0.1:0")
            port = await server.start()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = ingest_pb2_grpc.InventoryIngestStub(channel)
                # seq 1, 2, then 5: seqs 3..4 are missing (one gap).
                assert await _stream(stub, [_pb(0), _pb(1), _pb(4)]) == [1, 2, 5]
                # A new stream: 2 again (duplicate), 3 (fills part of the gap), and another
                # movement claiming seq 5 (conflict).
                assert await _stream(stub, [_pb(1), _pb(2), _pb(99, seq=5)]) == [2, 3, 5]
                cursor = await stub.GetCursor(ingest_pb2.CursorRequest(site=SITE))
                assert cursor.acked_through_seq == 5
                unknown = await stub.GetCursor(ingest_pb2.CursorRequest(site="elsewhere"))
                assert unknown.acked_through_seq == 0

                # seq 7 is stored (seq 6 missing: a second gap), then the stream goes backwards.
                with pytest.raises(grpc.aio.AioRpcError) as backwards:
                    await _stream(stub, [_pb(6), _pb(5)])
                assert backwards.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "increasing seq order" in (backwards.value.details() or "")

                with pytest.raises(grpc.aio.AioRpcError) as foreign:
                    await _stream(stub, [_pb(8, site="other-site", batch_site=SITE)])
                assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "other-site" in (foreign.value.details() or "")
            await server.stop()
            assert ledger.stats() == [
                SiteStats(
                    site=SITE,
                    acked_through_seq=7,
                    received=7,
                    unique=5,
                    duplicates=1,
                    conflicts=1,
                    gaps=2,
                )
            ]
            assert ledger.stats()[0].missing == 2  # seqs 4 and 6
            assert [r.seq for r in ledger.movements(SITE)] == [1, 2, 5, 3, 7]
            # Only the unique movements (0, 1, 4, 2, 6: 1+2+5+3+2 eaches) count in the totals.
            assert ledger.totals() == [
                SiteTotal(SITE, "receiving", "SKU-1", 13, 7),
                SiteTotal(SITE, "yard", "SKU-1", -13, 7),
            ]

    asyncio.run(scenario())


def test_simulator_refuses_calls_without_the_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        with CentralLedger(tmp_path / "central.db") as ledger:
            server = CentralServer(ledger, listen="127.0.0.1:0", token="t0ken")
            port = await server.start()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = ingest_pb2_grpc.InventoryIngestStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as no_token:
                    await stub.GetCursor(ingest_pb2.CursorRequest(site=SITE))
                assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as stream:
                    await _stream(stub, [_pb(0)])
                assert stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
                good = (("authorization", "Bearer t0ken"),)
                cursor = await stub.GetCursor(ingest_pb2.CursorRequest(site=SITE), metadata=good)
                assert cursor.acked_through_seq == 0
            await server.stop()
            assert ledger.stats() == []

    asyncio.run(scenario())


def test_a_ledger_without_totals_gets_them_from_its_movements(tmp_path: Path) -> None:
    """A ledger written before totals existed: opening it computes them."""
    db = tmp_path / "central.db"
    with CentralLedger(db) as ledger:
        batch = [movement_to_proto(RecordedMovement(i + 1, SITE, _movement(i))) for i in range(9)]
        ledger.apply(SITE, batch, now=T0)
        before = ledger.totals()
    assert before == [
        SiteTotal(SITE, "receiving", "SKU-1", sum(1 + i % 5 for i in range(9)), 9),
        SiteTotal(SITE, "yard", "SKU-1", -sum(1 + i % 5 for i in range(9)), 9),
    ]
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE totals")
    with CentralLedger(db) as reopened:
        assert reopened.totals() == before
        assert reopened.totals("elsewhere") == []


def test_report_prints_the_totals_of_a_ledger_and_exits(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    with CentralLedger(db) as ledger:
        batch = [movement_to_proto(RecordedMovement(i + 1, SITE, _movement(i))) for i in range(3)]
        ledger.apply(SITE, batch, now=T0)
    argv = [sys.executable, "-m", "gateway.cli", "simulate", "central", "--report", "--db"]
    done = subprocess.run([*argv, str(db)], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "central totals per site, location and SKU:",
        "SITE     LOCATION   SKU    ON_HAND  LAST_SEQ",
        "dc-test  receiving  SKU-1        6         3",
        "dc-test  yard       SKU-1       -6         3",
        "central: received=3 unique=3 duplicates=0 gaps=0 missing=0 conflicts=0 sites=dc-test@3",
    ]
    missing_db = subprocess.run(
        [*argv, str(tmp_path / "nope.db")], check=False, capture_output=True, text=True, timeout=60
    )
    assert missing_db.returncode == 2
    assert "no ledger at" in missing_db.stderr


def test_pages_larger_than_the_message_limit_travel_as_several_batches(
    store: EdgeStore, tmp_path: Path
) -> None:
    """A central whose gRPC message limit is 4 KiB (gRPC's default is 4 MiB: the same
    situation as a large ``batch_max``) still gets every movement."""
    limit = 4096

    @asynccontextmanager
    async def limited_central(ledger: CentralLedger) -> AsyncIterator[int]:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)])
        ingest_pb2_grpc.add_InventoryIngestServicer_to_server(IngestService(ledger), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield port
        finally:
            await server.stop(None)

    def relay(port: int, max_batch_bytes: int) -> CentralRelay:
        return CentralRelay(
            store,
            site=SITE,
            target=f"127.0.0.1:{port}",
            batch_size=200,  # ~200 bytes each: a page is ten times the limit
            max_batch_bytes=max_batch_bytes,
            backoff=Backoff(FAST_BACKOFF),
        )

    async def scenario() -> None:
        _record(store, 0, 300)
        with CentralLedger(tmp_path / "split.db") as ledger:
            async with limited_central(ledger) as port:
                split = relay(port, limit - 200)
                async with running(split):
                    async with asyncio.timeout(WAIT_S):
                        await split.wait_acked(300)
            _assert_exactly_once_in_order(ledger.movements(SITE), 300)
        # The control: one batch per page is refused by the same central; nothing arrives.
        with (
            CentralLedger(tmp_path / "whole.db") as ledger,
            LogWatch("gateway.adapters.central", "RESOURCE_EXHAUSTED") as refused,
        ):
            async with limited_central(ledger) as port, running(relay(port, 1 << 20)):
                async with asyncio.timeout(WAIT_S):
                    await refused.wait()
            assert ledger.stats() == []

    asyncio.run(scenario())
