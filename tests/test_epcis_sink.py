"""EPCIS sink: the relay from a real edge store to the capture simulator over real HTTP.

Refusals the simulator cannot be made to give (a 409 that names no ids, a 400 for one chosen
movement) come from a small capture endpoint written here; every other test talks to the real
simulator, in process or as a process killed mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
import yaml
from aiohttp import web

from edge_store import EdgeStore, LocationRecord
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.epcis import SINK, EpcisRelay
from gateway.adapters.tls import client_context, server_context
from gateway.app import Gateway, epcis_site
from gateway.config import parse_config
from gateway.config_cli import summary
from gateway.domain.epcis import EpcisSite, ReceiptClosed, document_bytes, movement_events
from gateway.domain.model import (
    Alert,
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)
from simulators.epcis import CaptureServer, CaptureStore
from tests.support.epcis import GTINS, SITE_WITH_GLNS, T0, case, pallet, variety
from tests.support.net import free_port, wait_for_port
from tests.support.tls import self_signed_server
from tests.test_app import value
from tests.test_metrics import get, parse_exposition

pytestmark = pytest.mark.integration

WAIT_S = 30.0
FAST = BackoffPolicy(initial_s=0.02, max_s=0.2)
ITEMS = [CatalogItem(sku=Sku(sku), name=sku, gtin=gtin) for sku, gtin in GTINS.items()]
PLACES = ["yard", "receiving", "backroom", "picked", "shelf-a1", "adjustment"]


def _movements(count: int) -> list[Movement]:
    """Movements of every kind."""
    return [r.movement for r in variety(count)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore.open(f"sqlite:///{tmp_path / 'edge.db'}", site="dc-east") as s:
        s.sync_catalog(ITEMS, [LocationRecord(p) for p in PLACES])
        yield s


def _relay(store: EdgeStore, url: str, **kwargs: Any) -> EpcisRelay:
    kwargs.setdefault("batch_size", 7)
    kwargs.setdefault("backoff", Backoff(FAST))
    kwargs.setdefault("hold_retry_max_s", 0.2)
    return EpcisRelay(
        store,
        site=SITE_WITH_GLNS,
        capture_url=url,
        poll_interval_s=60.0,  # notify() wakes the relay; the poll is a safety net
        **kwargs,
    )


@contextlib.asynccontextmanager
async def running(relay: EpcisRelay) -> AsyncIterator[None]:
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def simulator(tmp_path: Path, **kwargs: Any) -> AsyncIterator[CaptureServer]:
    with CaptureStore(tmp_path / "epcis.db") as repository:
        server = CaptureServer(repository, listen="127.0.0.1:0", **kwargs)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


async def until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while not predicate():  # noqa: ASYNC110 - the relay's state has no event to await
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_S} s: {what}") from None


def _expected_events(store: EdgeStore) -> list[dict[str, object]]:
    return [
        e for r in store.movements_since(0, 100_000) for e in movement_events(r, SITE_WITH_GLNS)
    ]


def _assert_everything_captured_once_in_order(
    store: EdgeStore, repository: CaptureStore, *, ordered: bool = True
) -> None:
    """Every movement has its events, exactly once, in seq order (unless the test captured
    some itself first)."""
    expected = [str(e["eventID"]) for e in _expected_events(store)]
    captured = [str(e["eventID"]) for e in repository.events() if "dockwatch:receiptId" not in e]
    if ordered:
        assert captured == expected
    else:
        assert sorted(captured) == sorted(expected)
    stored = {r.movement.movement_id for r in store.movements_since(0, 100_000)}
    assert set(repository.movement_ids()) == stored


# --- against the simulator, in process ---------------------------------------------------------


def test_every_movement_is_captured_in_seq_order(store: EdgeStore, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with simulator(tmp_path, token="s3cret") as server:
            relay = _relay(store, server.url, token="s3cret")
            async with running(relay):
                # Known to answer before any movement needs it (OPTIONS at start).
                await until(lambda: relay.connected, "the discovery request")
                store.record(_movements(30), now=T0)
                relay.notify()
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(30)
                store.record(_movements(45)[30:], now=T0)
                relay.notify()
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(45)
            assert relay.connected
            _assert_everything_captured_once_in_order(store, server.store)
            stats = server.store.stats()
            assert (stats.refused_invalid, stats.refused_duplicate) == (0, 0)

    uvloop.run(scenario())
    assert store.get_cursor(SINK) == 45


def test_a_resend_after_a_lost_acknowledgement_counts_as_delivered(
    store: EdgeStore, tmp_path: Path
) -> None:
    """The repository captured movements 1..10 but the cursor never heard (a crash between the
    202 and the cursor write): the relay sends them again, learns from the 409 which events the
    repository has, and sends the rest of the document."""
    store.record(_movements(40), now=T0)
    already = [e for r in store.movements_since(0, 10) for e in movement_events(r, SITE_WITH_GLNS)]

    async def scenario() -> EpcisRelay:
        async with simulator(tmp_path) as server:
            server.store.capture(already)
            relay = _relay(store, server.url, batch_size=25)
            async with running(relay):
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(40)
            _assert_everything_captured_once_in_order(store, server.store, ordered=False)
            assert server.store.stats().refused_duplicate == 1
        return relay

    relay = uvloop.run(scenario())
    assert relay.counters["duplicate_events"] == len(already)


def test_closed_receipts_follow_their_movements(store: EdgeStore, tmp_path: Path) -> None:
    movements = _movements(9)
    store.record(movements, now=T0)
    receipt = movements[0]  # a receipt of cases on a pallet

    async def scenario() -> list[dict[str, object]]:
        async with simulator(tmp_path) as server:
            relay = _relay(store, server.url)
            closed = ReceiptClosed(
                "ASN-1",
                T0,
                door="door-1",
                received={receipt.sku: receipt.quantity},
                purchase_order="PO-1",
                movement_ids=(receipt.movement_id,),
            )
            relay.receipt_closed(closed, after_seq=9)
            async with running(relay):
                await until(lambda: server.store.stats().events > len(_expected_events(store)), "")
            return server.store.events()

    events = uvloop.run(scenario())
    closure = events[-1]
    assert closure["dockwatch:receiptId"] == "ASN-1"
    assert closure["disposition"] == "completeness_verified"
    epcs = closure["epcList"]
    assert isinstance(epcs, list)
    assert set(epcs) == {*receipt.epcs, *([receipt.container] if receipt.container else [])}


def test_an_unreachable_repository_is_retried_with_one_error(
    store: EdgeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.adapters.epcis")
    port = free_port()
    store.record(_movements(12), now=T0)

    async def scenario() -> None:
        relay = _relay(store, f"http://127.0.0.1:{port}/capture")
        async with running(relay):
            await until(lambda: relay.counters["retries"] >= 3, "three failed attempts")
            assert not relay.connected
            with CaptureStore(tmp_path / "epcis.db") as repository:
                server = CaptureServer(repository, listen=f"127.0.0.1:{port}")
                await server.start()
                try:
                    async with asyncio.timeout(WAIT_S):
                        await relay.wait_acked(12)
                    _assert_everything_captured_once_in_order(store, repository)
                finally:
                    await server.stop()

    uvloop.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "unreachable or failing" in errors[0].getMessage()
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1


def test_a_wrong_token_holds_every_movement_with_one_alert(
    store: EdgeStore, tmp_path: Path
) -> None:
    store.record(_movements(5), now=T0)
    alerts: list[Alert] = []

    async def collect(alert: Alert) -> None:
        alerts.append(alert)

    async def scenario() -> int:
        async with simulator(tmp_path, token="right") as server:
            relay = _relay(store, server.url, token="wrong", on_alert=collect)
            async with running(relay):
                await until(lambda: relay.held, "the hold")
                await until(lambda: server.store.stats().events == 0 and bool(alerts), "")
                await asyncio.sleep(0.5)  # several retries: still one alert
            return server.store.stats().events

    assert uvloop.run(scenario()) == 0
    assert [(a.alert_id, a.active) for a in alerts] == [("epcis_rejected:authorization", True)]
    assert store.get_cursor(SINK) == 0


def test_https_with_the_repositorys_certificate(store: EdgeStore, tmp_path: Path) -> None:
    pem = self_signed_server(tmp_path / "tls")
    store.record(_movements(8), now=T0)

    async def scenario() -> None:
        context = server_context(pem.cert_file, pem.key_file)
        async with simulator(tmp_path, tls=context) as server:
            assert server.url.startswith("https://")
            trusted = client_context(ca_file=pem.cert_file, cert_file=None, key_file=None)
            relay = _relay(store, server.url, ssl_context=trusted)
            async with running(relay):
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(8)
            _assert_everything_captured_once_in_order(store, server.store)

    uvloop.run(scenario())


def test_from_config_builds_the_relay_with_its_site_identifiers(
    store: EdgeStore, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("t0k3n\n")
    config = parse_config(
        {
            "site": {"id": "dc-east", "sgln": "urn:epc:id:sgln:0614141.00000.0"},
            "catalog": {"items": [{"sku": "SKU-1001", "gtin": "00614141123452", "name": "W"}]},
            "locations": [
                {"id": "yard"},
                {"id": "receiving", "sgln": "urn:epc:id:sgln:0614141.00001.0"},
            ],
            "readers": [{"id": "r1", "host": "127.0.0.1", "antennas": [1, 2]}],
            "portals": [
                {
                    "id": "door-1",
                    "reader": "r1",
                    "outside_antennas": [1],
                    "inside_antennas": [2],
                    "outside_location": "yard",
                    "inside_location": "receiving",
                    "sgln": "urn:epc:id:sgln:0614141.00001.7",
                }
            ],
            "sinks": {
                "epcis": {
                    "capture_url": "http://127.0.0.1:8090/capture",
                    "token_file": str(token),
                    "base_uri": "https://epcis.example.com/sites/",
                }
            },
        },
        environ={},
    )
    site = epcis_site(config)
    assert site == EpcisSite(
        site="dc-east",
        base_uri="https://epcis.example.com/sites",
        site_sgln="urn:epc:id:sgln:0614141.00000.0",
        read_points={"door-1": "urn:epc:id:sgln:0614141.00001.7"},
        locations={"receiving": "urn:epc:id:sgln:0614141.00001.0"},
        gtins={"SKU-1001": "00614141123452"},
        inside={"door-1": "receiving"},
        shelves={},
    )
    assert config.sinks.epcis is not None
    assert "epcis http://127.0.0.1:8090/capture" in summary(config)  # dockwatch check-config
    relay = EpcisRelay.from_config(config.sinks.epcis, store, site=site)
    assert "t0k3n" not in repr(relay)
    with pytest.raises(Exception, match=r"sinks\.epcis\.capture_url"):
        parse_config(
            {"site": {"id": "x"}, "sinks": {"epcis": {"capture_url": "ftp://h/capture"}}},
            environ={},
        )
    with pytest.raises(Exception, match=r"site.sgln: must be an SGLN"):
        parse_config({"site": {"id": "x", "sgln": "0614141000005"}}, environ={})


# --- refusals from a capture endpoint written here --------------------------------------------


class Refusing:
    """A capture endpoint over a real :class:`CaptureStore` that answers 409 without naming the
    duplicates, and 400 for any document holding ``refuse`` (a movement id) while it is set."""

    def __init__(self, repository: CaptureStore) -> None:
        self.repository = repository
        self.refuse: str | None = None
        self.statuses: list[int] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_post("/capture", self._capture)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/capture"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _capture(self, request: web.Request) -> web.Response:
        events = json.loads(await request.read())["epcisBody"]["eventList"]
        if self.refuse is not None and any(
            e.get("dockwatch:movementId") == self.refuse for e in events
        ):
            self.statuses.append(400)
            problem = {"title": "invalid EPCIS document", "detail": ["bizStep: not allowed"]}
            return web.json_response(problem, status=400)
        outcome = self.repository.capture(events)
        status = 202 if outcome.capture_id is not None else 409
        self.statuses.append(status)
        return web.json_response({}, status=status)


def test_a_409_that_names_nothing_is_resolved_by_halves(store: EdgeStore, tmp_path: Path) -> None:
    store.record(_movements(32), now=T0)
    records = store.movements_since(0, 100)
    already = [
        e for r in records if r.seq in {3, 4, 17} for e in movement_events(r, SITE_WITH_GLNS)
    ]

    async def scenario() -> list[int]:
        with CaptureStore(tmp_path / "epcis.db") as repository:
            repository.capture(already)
            endpoint = Refusing(repository)
            await endpoint.start()
            try:
                relay = _relay(store, endpoint.url, batch_size=32)
                async with running(relay):
                    async with asyncio.timeout(WAIT_S):
                        await relay.wait_acked(32)
                _assert_everything_captured_once_in_order(store, repository, ordered=False)
            finally:
                await endpoint.stop()
            return endpoint.statuses

    statuses = uvloop.run(scenario())
    assert statuses[0] == 409
    assert statuses.count(202) >= 2  # halves, down to the duplicates alone
    assert len(statuses) < 32  # not one request per movement


def test_a_refused_movement_is_held_with_one_alert_and_nothing_after_it_is_sent(
    store: EdgeStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.adapters.epcis")
    store.record(_movements(30), now=T0)
    bad = store.movements_since(11, 1)[0]
    alerts: list[Alert] = []

    async def collect(alert: Alert) -> None:
        alerts.append(alert)

    async def scenario() -> None:
        with CaptureStore(tmp_path / "epcis.db") as repository:
            endpoint = Refusing(repository)
            endpoint.refuse = bad.movement.movement_id
            await endpoint.start()
            try:
                relay = _relay(store, endpoint.url, batch_size=10, on_alert=collect)
                async with running(relay):
                    async with asyncio.timeout(WAIT_S):
                        await relay.wait_acked(11)
                    await until(lambda: relay.held, "the hold")
                    retries = endpoint.statuses.count(400)
                    await until(lambda: endpoint.statuses.count(400) >= retries + 3, "retries")
                    # Held at 11: nothing of seq 12 or later reached the repository.
                    assert relay.acked_seq == 11
                    assert store.get_cursor(SINK) == 11
                    captured = set(repository.movement_ids())
                    later = {r.movement.movement_id for r in store.movements_since(11, 100)}
                    assert not captured & later
                    assert len(alerts) == 1
                    endpoint.refuse = None  # the repository is fixed
                    async with asyncio.timeout(WAIT_S):
                        await relay.wait_acked(30)
                _assert_everything_captured_once_in_order(store, repository)
            finally:
                await endpoint.stop()

    uvloop.run(scenario())
    alert_id = f"epcis_rejected:{bad.movement.movement_id}"
    assert [(a.alert_id, a.active) for a in alerts] == [(alert_id, True), (alert_id, False)]
    # Its own retained MQTT topic: not the subject of the sink's lag alert ("epcis").
    assert {a.subject for a in alerts} == {f"epcis:{bad.movement.movement_id}"}
    assert "seq 12" in alerts[0].message
    assert "bizStep: not allowed" in alerts[0].message
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "nothing is skipped" in errors[0]


# --- the simulator as a process, killed and restarted ------------------------------------------


def _start_simulator(port: int, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "epcis",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(db),
            "--summary-interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_simulator_killed_mid_stream_and_restarted_loses_nothing(
    store: EdgeStore, tmp_path: Path
) -> None:
    port, db = free_port(), tmp_path / "epcis.db"
    total = 400
    store.record(_movements(total), now=T0)

    async def scenario() -> str:
        sim = _start_simulator(port, db)
        try:
            await asyncio.to_thread(wait_for_port, "127.0.0.1", port, WAIT_S)
            relay = _relay(store, f"http://127.0.0.1:{port}/capture", batch_size=5)
            async with running(relay):
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(60)
                sim.kill()  # SIGKILL while documents are in flight
                await asyncio.to_thread(sim.communicate, timeout=10)
                cursor_while_down = store.get_cursor(SINK)
                assert 60 <= cursor_while_down < total
                with CaptureStore(db) as after_kill:
                    # Only 202/409 move the cursor: it never passes what the repository holds.
                    captured = set(after_kill.movement_ids())
                    delivered = {
                        r.movement.movement_id for r in store.movements_since(0, cursor_while_down)
                    }
                    assert delivered <= captured
                sim = _start_simulator(port, db)
                async with asyncio.timeout(WAIT_S * 2):
                    await relay.wait_acked(total)
            sim.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(sim.communicate, timeout=10)
        finally:
            if sim.poll() is None:
                sim.kill()
                sim.wait()
        assert sim.returncode == 0, err
        return out

    out = uvloop.run(scenario())
    assert store.get_cursor(SINK) == total
    with CaptureStore(db) as repository:
        _assert_everything_captured_once_in_order(store, repository)
        stats = repository.stats()
    assert stats.events == len(_expected_events(store))
    assert stats.refused_invalid == 0
    assert out.strip().splitlines()[-1] == stats.line()
    assert "listening on http://127.0.0.1:" in out


# --- in the gateway ------------------------------------------------------------------------------


def test_the_gateway_relays_movements_and_closed_receipts_with_lag_metrics(
    tmp_path: Path,
) -> None:
    expected = tmp_path / "expected.yaml"
    expected.write_text(
        yaml.safe_dump(
            {
                "receipts": [
                    {
                        "id": "ASN-7",
                        "door": "door-1",
                        "po": "PO-7",
                        "lines": [{"sku": "SKU-1001", "quantity": 24}],
                    }
                ]
            }
        )
    )

    metrics_port = free_port()

    async def scenario() -> tuple[list[dict[str, object]], dict[str, int], float]:
        async with simulator(tmp_path) as server:
            config = parse_config(
                {
                    "site": {"id": "dc-east"},
                    "store": {"url": f"sqlite:///{tmp_path / 'edge.db'}"},
                    "catalog": {
                        "items": [{"sku": "SKU-1001", "gtin": "00614141123452", "name": "W"}]
                    },
                    "locations": [{"id": "yard", "kind": "dock"}, {"id": "receiving"}],
                    "receiving": {"expected_file": str(expected), "idle_close_s": 1.0},
                    "api": {
                        "grpc_listen": f"127.0.0.1:{free_port()}",
                        "metrics_listen": f"127.0.0.1:{metrics_port}",
                    },
                    "sinks": {
                        "epcis": {
                            "capture_url": server.url,
                            "reconnect": {"initial_s": 0.02, "max_s": 0.2},
                        }
                    },
                },
                environ={},
            )
            gateway = Gateway(config)
            task = asyncio.create_task(gateway.run())
            try:
                async with asyncio.timeout(WAIT_S):
                    await gateway.ready.wait()
                    # Wait for the expected receipts file to be loaded.
                    while gateway.receiving is None or not gateway.receiving.receipts:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                relay = gateway.sinks["epcis"]
                assert isinstance(relay, EpcisRelay)
                observed = datetime.now(UTC) - timedelta(seconds=10)
                receipt = Movement(
                    movement_id=MovementId("gw-receipt-1"),
                    kind=MovementKind.RECEIPT,
                    sku=Sku("SKU-1001"),
                    quantity=24,
                    from_location=LocationId("yard"),
                    to_location=LocationId("receiving"),
                    source_type=SourceType.RFID_PORTAL,
                    source_id="door-1",
                    observed_at=observed,
                    confidence=0.99,
                    epcs=(case(1), case(2)),
                    container=pallet(1),
                )
                await gateway.record([receipt])
                async with asyncio.timeout(WAIT_S):
                    await relay.wait_acked(1)
                await until(lambda: server.store.stats().events == 3, "the closure's event")
                _, _, body = await get(metrics_port, "/metrics")
                families = parse_exposition(body.decode("utf-8"))
                lag = value(families, "dockwatch_sink_lag", sink="epcis")
                assert value(families, "dockwatch_sink_connected", sink="epcis") == 1
                return server.store.events(), gateway.sync_status(), lag
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    events, status, lag = uvloop.run(scenario())
    assert status["epcis"] == status["last_seq"] == 1
    assert lag == 0
    kinds = [(e["type"], e.get("dockwatch:receiptId")) for e in events]
    assert kinds == [("ObjectEvent", None), ("AggregationEvent", None), ("ObjectEvent", "ASN-7")]
    closure = events[2]
    assert closure["disposition"] == "completeness_verified"
    assert closure["bizTransactionList"] == [
        {
            "type": "desadv",
            "bizTransaction": "https://example.invalid/dockwatch/site/dc-east/desadv/ASN-7",
        },
        {"type": "po", "bizTransaction": "https://example.invalid/dockwatch/site/dc-east/po/PO-7"},
    ]


def test_the_simulator_validates_in_worker_processes_too(tmp_path: Path) -> None:
    """``--workers 2``: a large document is split over two processes; a problem keeps its index,
    a valid document is captured, and a duplicate is a 409 naming it."""
    events = [e for r in variety(150) for e in movement_events(r, SITE_WITH_GLNS)]
    bad = [dict(e) for e in events]
    bad[101]["bizStep"] = "recieving"

    async def scenario() -> tuple[int, list[str], int, int, list[str]]:
        async with simulator(tmp_path, workers=2) as server, aiohttp.ClientSession() as session:
            async with session.post(server.url, data=document_bytes(bad, creation_date=T0)) as r:
                refused, problems = r.status, (await r.json())["detail"]
            async with session.post(server.url, data=document_bytes(events, creation_date=T0)) as r:
                accepted = r.status
            again = document_bytes(events[:3], creation_date=T0)
            async with session.post(server.url, data=again) as r:
                duplicate, named = r.status, (await r.json())["detail"]
        return refused, problems, accepted, duplicate, named

    refused, problems, accepted, duplicate, named = uvloop.run(scenario())
    assert refused == 400
    assert problems[0].startswith("epcisBody.eventList[101].bizStep:"), problems
    assert accepted == 202
    assert duplicate == 409
    assert named == [e["eventID"] for e in events[:3]]
