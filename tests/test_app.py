"""The whole gateway, end to end: LLRP simulator -> sllurp -> portal engine -> store -> MQTT.

A pallet of four cases crosses an inbound door; an independent MQTT subscriber must see one
receipt of four eaches, byte-for-byte the movement the store holds, plus the retained stock level
and the reader's retained ``online`` status. Stopping the gateway leaves no sllurp thread behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import paho.mqtt.client as mqtt
import psycopg
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paho.mqtt.enums import CallbackAPIVersion

from dockwatch_core.errors import ConfigError, StoreError
from edge_store.records import AlertFields, AlertRecord
from edge_store.repository import EdgeStore
from gateway.adapters.central import CentralRelay
from gateway.adapters.mqtt import MqttSink
from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from gateway.domain import payloads
from gateway.domain.model import (
    Alert,
    AlertKind,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Severity,
    Sku,
    SourceType,
)
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2
from simulators.central import CentralLedger, CentralServer
from simulators.llrp.server import LlrpReaderSimulator
from simulators.modbus.server import ShelfSimulator
from simulators.scenario import parse_scenario
from simulators.shelf_scenario import ShelfScenario, shelf_scenario_from_mapping
from tests.conftest import PG_ADMIN_URL
from tests.support.broker import MosquittoBroker
from tests.support.net import free_port
from tests.support.tls import self_signed_server
from tests.test_metrics import Family, get, parse_exposition

pytestmark = pytest.mark.integration

CASES = 4


def scenario_data() -> dict[str, Any]:
    return {
        "name": "app-e2e",
        "seed": 7,
        "duration_s": 10,
        "radio": {"miss_rate": 0.0, "shadowing_sigma_db": 1.0, "fading_sigma_db": 0.5},
        "doors": [
            {
                "id": "door-1",
                "reader": "door-1-reader",
                "port": 5084,
                "outside_location": "yard",
                "inside_location": "receiving",
            }
        ],
        "pallets": [
            {
                "id": "p1",
                "door": "door-1",
                "direction": "in",
                # On the door plane at 4 s: it starts 6 m out, so the reader, inventorying
                # within a second or two, hears the whole approach (the outside antennas aim
                # 2 m out; a pallet starting at the door would be heard by one side only).
                "at_s": 4.0,
                "speed_mps": 1.5,
                "sscc": {"company_prefix": "0614141", "serial": 424242},
                "cases": [
                    {
                        "gtin": "00614141123452",
                        "company_prefix": "0614141",
                        "count": CASES,
                        "first_serial": 1,
                    }
                ],
            }
        ],
    }


def gateway_config(tmp_path: Path, reader_port: int, broker: MosquittoBroker) -> GatewayConfig:
    return parse_config(
        {
            "site": {"id": "e2e"},
            "store": {"url": f"sqlite:///{tmp_path / 'edge.db'}"},
            "catalog": {
                "items": [
                    {"sku": "SKU-1001", "gtin": "00614141123452", "name": "Widget"},
                ]
            },
            "locations": [{"id": "yard", "kind": "dock"}, {"id": "receiving"}],
            "readers": [
                {
                    "id": "door-1-reader",
                    "host": "127.0.0.1",
                    "port": reader_port,
                    "antennas": [1, 2, 3, 4],
                    "keepalive_s": 2,
                    "reconnect": {"initial_s": 0.1, "max_s": 1.0},
                }
            ],
            "portals": [
                {
                    "id": "door-1",
                    "reader": "door-1-reader",
                    "outside_antennas": [1, 2],
                    "inside_antennas": [3, 4],
                    "outside_location": "yard",
                    "inside_location": "receiving",
                }
            ],
            "debounce": {"portal": {"idle_close_s": 1.0}},
            "sinks": {"mqtt": {"url": broker.url, "topic_prefix": "dw/e2e"}},
            "api": {
                "grpc_listen": f"127.0.0.1:{free_port()}",
                "metrics_listen": f"127.0.0.1:{free_port()}",
            },
        },
        environ={},
    )


class Subscriber:
    """An independent paho subscriber collecting (topic, payload, retained)."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-sub")
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def subscriber(mosquitto: MosquittoBroker) -> Iterator[Subscriber]:
    sub = Subscriber(mosquitto, "dw/e2e/#")
    yield sub
    sub.close()


async def _until(predicate: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(0.05)


def test_pallet_crossing_is_received_stored_and_published(
    tmp_path: Path, mosquitto: MosquittoBroker, subscriber: Subscriber
) -> None:
    config = uvloop.run(_run_gateway_through_crossing(tmp_path, mosquitto, subscriber))
    _check_outcome(config, subscriber)


async def _run_gateway_through_crossing(
    tmp_path: Path, mosquitto: MosquittoBroker, subscriber: Subscriber
) -> GatewayConfig:
    scenario = parse_scenario(scenario_data())
    source = scenario.read_source("door-1", time.time() + 0.5)
    async with LlrpReaderSimulator(port=0, source=source, report_interval_s=0.05) as sim:
        config = gateway_config(tmp_path, sim.port, mosquitto)
        gateway = Gateway(config)
        task = asyncio.create_task(gateway.run())
        try:
            topic = "dw/e2e/movements/receiving"
            await _until(lambda: subscriber.on(topic), within_s=20)
            await _until(lambda: subscriber.on("dw/e2e/stock/receiving/SKU-1001"), within_s=5)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    return config


def _check_outcome(config: GatewayConfig, subscriber: Subscriber) -> None:
    with EdgeStore.open(config.store.url, site="e2e") as store:
        stored = store.movements_since(0)
        levels: dict[tuple[str, str], int] = {
            (lv.location, lv.sku): lv.on_hand for lv in store.stock()
        }
    assert len(stored) == 1
    recorded = stored[0]
    movement = recorded.movement
    assert (movement.kind, movement.sku, movement.quantity) == ("receipt", "SKU-1001", CASES)
    assert (movement.from_location, movement.to_location) == ("yard", "receiving")
    assert movement.container == "urn:epc:id:sscc:0614141.0000424242"
    assert len(movement.epcs) == CASES
    assert levels[("receiving", "SKU-1001")] == CASES

    published = subscriber.on("dw/e2e/movements/receiving")
    assert published[0] == payloads.movement_json(recorded)
    assert json.loads(published[0])["seq"] == 1
    stock = json.loads(subscriber.on("dw/e2e/stock/receiving/SKU-1001")[-1])
    assert stock["on_hand"] == CASES
    status = [json.loads(p) for p in subscriber.on("dw/e2e/devices/door-1-reader/status")]
    assert status[0]["state"] == "online"
    assert subscriber.on("dw/e2e/gateway/status")[0] == b"online"
    assert not [t for t in threading.enumerate() if "sllurp" in t.name.lower()]


# -- weight shelf -> store -> central ingest, with the low-stock alert --------------------------

SHELF_UNITS = 12
PICKED_UNITS = 4


def shelf_scenario() -> ShelfScenario:
    return shelf_scenario_from_mapping(
        {
            "name": "app-shelf",
            "seed": 3,
            "duration_s": 60,
            "shelves": [
                {
                    "id": "shelf-a1",
                    "unit": 1,
                    "sku": "SKU-1001",
                    "unit_weight_g": 250.0,
                    "item_sigma_g": 2.0,
                    "initial_units": SHELF_UNITS,
                    "noise_g": 0.5,
                    "encoding": {"type": "float32", "word_order": "big", "scale": 1.0},
                    # The gateway first sets the stock from the weight (reconcile_after_s: 1).
                    "events": [{"t": 5.0, "pick": PICKED_UNITS}],
                }
            ],
        }
    )


def shelf_config(tmp_path: Path, modbus_port: int, central_port: int) -> GatewayConfig:
    return parse_config(
        {
            "site": {"id": "e2e-shelf"},
            "store": {"url": f"sqlite:///{tmp_path / 'shelf.db'}"},
            "catalog": {
                "items": [
                    {
                        "sku": "SKU-1001",
                        "gtin": "00614141123452",
                        "name": "Widget",
                        "unit_weight_g": 250.0,
                        "weight_tolerance_g": 15.0,
                        "reorder_point": 10,
                    }
                ]
            },
            "locations": [{"id": "shelf-a1"}],
            "shelves": [
                {
                    "id": "shelf-a1",
                    "location": "shelf-a1",
                    "sku": "SKU-1001",
                    "modbus": {"host": "127.0.0.1", "port": modbus_port, "unit": 1},
                    "weight": {"table": "holding", "address": 0, "type": "float32"},
                    "status": {"table": "holding", "address": 2, "stable_bit": 0},
                }
            ],
            "debounce": {"shelf": {"reconcile_after_s": 1.0}},
            "sinks": {"central": {"target": f"127.0.0.1:{central_port}"}},
            "api": {
                "grpc_listen": f"127.0.0.1:{free_port()}",
                "metrics_listen": f"127.0.0.1:{free_port()}",
            },
        },
        environ={},
    )


def test_shelf_pick_reaches_central_and_raises_low_stock(tmp_path: Path) -> None:
    config, central_totals = uvloop.run(_run_gateway_through_pick(tmp_path))
    with EdgeStore.open(config.store.url, site="e2e-shelf") as store:
        stored = [r.movement for r in store.movements_since(0)]
        level = store.stock(location="shelf-a1", sku="SKU-1001")[0].on_hand
        gateway_totals = {(s.location, s.sku): s.on_hand for s in store.stock()}
        alerts = store.alerts(active_only=True)
        central_cursor = store.get_cursor("central")
    assert [(m.kind, m.quantity, m.from_location, m.to_location) for m in stored] == [
        ("adjustment", SHELF_UNITS, "adjustment", "shelf-a1"),
        ("pick", PICKED_UNITS, "shelf-a1", "picked"),
    ]
    assert level == SHELF_UNITS - PICKED_UNITS
    assert [a.kind for a in alerts] == ["low_stock"]
    assert "shelf-a1" in alerts[0].message
    assert central_cursor == 2  # advanced on central's ack
    # Central inventory, from what it received alone, holds what the gateway holds.
    assert central_totals == gateway_totals
    assert central_totals[("shelf-a1", "SKU-1001")] == SHELF_UNITS - PICKED_UNITS


async def _run_gateway_through_pick(
    tmp_path: Path,
) -> tuple[GatewayConfig, dict[tuple[str, str], int]]:
    with CentralLedger(tmp_path / "central.db") as ledger:
        central = CentralServer(ledger, listen="127.0.0.1:0")
        central_port = await central.start()
        try:
            async with ShelfSimulator(scenario=shelf_scenario()) as sim:
                config = shelf_config(tmp_path, sim.port, central_port)
                gateway = Gateway(config)
                task = asyncio.create_task(gateway.run())
                try:
                    async with asyncio.timeout(30):
                        await central.wait_stored("e2e-shelf", 2)
                        await gateway.ready.wait()
                        relay = gateway.sinks["central"]
                        assert isinstance(relay, CentralRelay)
                        await relay.wait_acked(2)
                finally:
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
        finally:
            await central.stop()
        received = ledger.movements("e2e-shelf")
        totals = {(t.location, t.sku): t.on_hand for t in ledger.totals("e2e-shelf")}
    assert [r.seq for r in received] == [1, 2]
    assert received[1].movement.kind == "pick"
    return config, totals


# -- health, readiness, metrics and the sync-behind alert ---------------------------------------

LAG_ALERT_S = 0.3
CHECK_EVERY_S = 0.05


def health_config(
    tmp_path: Path,
    *,
    store_url: str | None = None,
    mqtt_url: str | None = None,
    reader_port: int | None = None,
    lag_alert_s: float | None = LAG_ALERT_S,
) -> GatewayConfig:
    """A gateway with one item, a door, optionally an MQTT sink and a reader."""
    raw: dict[str, Any] = {
        "site": {"id": "health"},
        "store": {"url": store_url or f"sqlite:///{tmp_path / 'health.db'}"},
        "catalog": {"items": [{"sku": "SKU-1001", "gtin": "00614141123452", "name": "Widget"}]},
        "locations": [{"id": "yard", "kind": "dock"}, {"id": "receiving"}],
        "api": {
            "grpc_listen": f"127.0.0.1:{free_port()}",
            "metrics_listen": f"127.0.0.1:{free_port()}",
        },
    }
    if mqtt_url is not None:
        raw["sinks"] = {
            "mqtt": {
                "url": mqtt_url,
                "topic_prefix": "dw/health",
                "lag_alert_s": lag_alert_s,
                "reconnect": {"initial_s": 0.05, "max_s": 0.2},
            }
        }
    if reader_port is not None:
        raw["readers"] = [
            {
                "id": "door-1-reader",
                "host": "127.0.0.1",
                "port": reader_port,
                "antennas": [1, 2],
                "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            }
        ]
        raw["portals"] = [
            {
                "id": "door-1",
                "reader": "door-1-reader",
                "outside_antennas": [1],
                "inside_antennas": [2],
                "outside_location": "yard",
                "inside_location": "receiving",
            }
        ]
    return parse_config(raw, environ={})


def receipt(n: int) -> Movement:
    return Movement(
        movement_id=MovementId(f"health-{n}"),
        kind=MovementKind.RECEIPT,
        sku=Sku("SKU-1001"),
        quantity=1,
        from_location=LocationId("yard"),
        to_location=LocationId("receiving"),
        source_type=SourceType.MANUAL,
        source_id="test",
        observed_at=datetime.now(UTC),
        confidence=1.0,
    )


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[int]:
    """The gateway running until the block ends; yields the metrics port once it is ready."""
    task = asyncio.create_task(gateway.run())
    try:
        async with asyncio.timeout(WAIT_S):
            ready = asyncio.create_task(gateway.ready.wait())
            await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # start-up failed: raise its error here
        assert gateway.metrics is not None
        yield gateway.metrics.port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


WAIT_S = 20.0


async def until_true(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Re-check ``predicate`` until it holds; fail after ``WAIT_S`` (a broken run only)."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if await predicate():
                    return
                await asyncio.sleep(CHECK_EVERY_S)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_S} s: {what}") from None


async def scrape(port: int) -> dict[str, Family]:
    status, _, body = await get(port, "/metrics")
    assert status == 200
    return parse_exposition(body.decode("utf-8"))


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    samples = families[name].samples
    assert samples is not None
    by_labels = {tuple(sorted(pairs)): v for pairs, v in samples.items()}
    return by_labels[tuple(sorted(labels.items()))]


async def active_alerts(gateway: Gateway) -> dict[str, AlertRecord]:
    worker = gateway.worker
    assert worker is not None
    return {a.alert_id: a for a in await worker.call(worker.store.alerts, active_only=True)}


def test_a_sink_behind_raises_sync_behind_and_catching_up_clears_it(
    tmp_path: Path, own_broker: MosquittoBroker
) -> None:
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))  # bound, never listening: the reader is refused
        config = health_config(
            tmp_path, mqtt_url=own_broker.url, reader_port=refusing.getsockname()[1]
        )
        uvloop.run(_sink_behind_then_caught_up(config, own_broker))


async def _sink_behind_then_caught_up(config: GatewayConfig, broker: MosquittoBroker) -> None:
    gateway = Gateway(config, check_every_s=CHECK_EVERY_S)
    async with running(gateway) as port:
        mqtt_sink = gateway.sinks["mqtt"]
        assert isinstance(mqtt_sink, MqttSink)
        assert (await get(port, "/readyz"))[::2] == (200, b"ready\n")
        assert (await get(port, "/healthz"))[::2] == (200, b"ok\n")

        async def connected() -> bool:
            return mqtt_sink.connected

        await until_true(connected, "connected to the broker")
        broker.stop()
        await until_true(lambda: _not(connected), "the broker connection lost")
        recording = time.monotonic()
        await gateway.record([receipt(1)])

        async def behind() -> bool:
            return "sync_behind:mqtt" in await active_alerts(gateway)

        await until_true(behind, "a sync_behind alert")
        raised = (await active_alerts(gateway))["sync_behind:mqtt"]
        assert (raised.kind, raised.severity, raised.subject) == ("sync_behind", "warning", "mqtt")
        assert "1 movement(s) not acknowledged" in raised.message
        assert raised.details["lag_movements"] == 1
        assert cast(float, raised.details["lag_seconds"]) > LAG_ALERT_S
        assert gateway.api is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.api.port}") as channel:
            listed = await edge_api_pb2_grpc.EdgeApiStub(channel).ListAlerts(
                edge_api_pb2.AlertQuery()
            )
        [listed_alert] = [a for a in listed.alerts if a.alert_id == "sync_behind:mqtt"]
        assert listed_alert.kind == types_pb2.ALERT_KIND_SYNC_BEHIND
        assert listed_alert.message == raised.message

        families = await scrape(port)
        assert value(families, "dockwatch_sink_lag", sink="mqtt") == 1
        lag_s = value(families, "dockwatch_sink_lag_seconds", sink="mqtt")
        assert LAG_ALERT_S < lag_s <= time.monotonic() - recording  # the age of seq 1
        assert value(families, "dockwatch_sink_connected", sink="mqtt") == 0
        assert value(families, "dockwatch_movements_total", kind="receipt") == 1
        assert value(families, "dockwatch_movements_total", kind="shipment") == 0
        record_time = families["dockwatch_store_record_seconds"]
        assert record_time.type == "summary"
        assert record_time.suffixed["_count"] == {(): 1.0}
        assert record_time.suffixed["_sum"][()] > 0
        # The reader never answered: its antennas have series at 0, its state is offline.
        assert value(families, "dockwatch_reads_total", antenna="1", reader="door-1-reader") == 0
        assert value(families, "dockwatch_reads_total", antenna="2", reader="door-1-reader") == 0
        reader = {"device": "door-1-reader", "type": "llrp_reader"}
        assert value(families, "dockwatch_device_state", **reader, state="offline") == 1
        assert value(families, "dockwatch_device_state", **reader, state="online") == 0
        assert (
            value(families, "dockwatch_reader_dropped_batches_total", reader="door-1-reader") == 0
        )
        assert value(families, "dockwatch_read_queue_batches") == 0
        # A sink that is behind does not make the gateway unready: it still records.
        assert value(families, "dockwatch_ready") == 1
        assert (await get(port, "/readyz"))[0] == 200

        broker.start()

        async def caught_up() -> bool:
            return "sync_behind:mqtt" not in await active_alerts(gateway)

        await until_true(caught_up, "the sync_behind alert cleared")
        assert mqtt_sink.relay.acked_seq == 1
        families = await scrape(port)
        assert value(families, "dockwatch_sink_lag", sink="mqtt") == 0
        assert value(families, "dockwatch_sink_lag_seconds", sink="mqtt") == 0
        worker = gateway.worker
        assert worker is not None
        cleared = {a.alert_id: a for a in await worker.call(worker.store.alerts, active_only=False)}
        assert cleared["sync_behind:mqtt"].active is False
        assert cleared["sync_behind:mqtt"].message == "mqtt caught up"


async def _not(predicate: Callable[[], Awaitable[bool]]) -> bool:
    return not await predicate()


def test_lag_of_movements_from_a_previous_run_is_dated_by_the_store(tmp_path: Path) -> None:
    hour = timedelta(hours=1)
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))  # no broker: the backlog stays
        dead_broker = f"mqtt://127.0.0.1:{refusing.getsockname()[1]}"

        async def first_run() -> None:
            config = health_config(tmp_path, mqtt_url=dead_broker, lag_alert_s=None)
            gateway = Gateway(config, check_every_s=CHECK_EVERY_S)
            async with running(gateway):
                await gateway.record([receipt(1), receipt(2)])

        async def second_run_an_hour_later() -> tuple[float, float]:
            config = health_config(tmp_path, mqtt_url=dead_broker, lag_alert_s=300.0)
            later = Gateway(
                config, utcnow=lambda: datetime.now(UTC) + hour, check_every_s=CHECK_EVERY_S
            )
            async with running(later) as port:

                async def alerted() -> bool:
                    return "sync_behind:mqtt" in await active_alerts(later)

                await until_true(alerted, "a sync_behind alert for the old backlog")
                families = await scrape(port)
                return (
                    value(families, "dockwatch_sink_lag", sink="mqtt"),
                    value(families, "dockwatch_sink_lag_seconds", sink="mqtt"),
                )

        uvloop.run(first_run())
        lag, lag_s = uvloop.run(second_run_an_hour_later())
    # Recorded an hour ago by the second run's clock: the store's recorded_at counts, not the
    # second process' start (which would say a fraction of a second).
    assert lag == 2
    assert hour.total_seconds() <= lag_s < hour.total_seconds() + WAIT_S


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_readyz_reports_an_unavailable_store_until_it_answers_again(
    tmp_path: Path, database_url: str
) -> None:
    config = health_config(tmp_path, store_url=database_url)
    database = database_url.rpartition("/")[2]
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")

    def allow_connections(allowed: bool) -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:  # and drop the gateway's pooled connections: a server going away
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )

    async def scenario() -> tuple[bytes, float, float]:
        gateway = Gateway(config, check_every_s=CHECK_EVERY_S)
        async with running(gateway) as port:
            assert (await get(port, "/readyz"))[::2] == (200, b"ready\n")
            await asyncio.to_thread(allow_connections, False)
            try:

                async def unready() -> bool:
                    return (await get(port, "/readyz"))[0] == 503

                await until_true(unready, "/readyz 503 while the store is unreachable")
                reason = (await get(port, "/readyz"))[2]
                assert (await get(port, "/healthz"))[0] == 200  # alive: no restart needed
                families = await scrape(port)
            finally:
                await asyncio.to_thread(allow_connections, True)

            async def ready() -> bool:
                return (await get(port, "/readyz"))[0] == 200

            await until_true(ready, "/readyz 200 once the store answers again")
            return (
                reason,
                value(families, "dockwatch_ready"),
                value(families, "dockwatch_store_errors_total"),
            )

    reason, ready_gauge, errors = uvloop.run(scenario())
    # The driver's message names the database server: it stays in the log, unauthenticated
    # probes get the operation and the error class.
    assert reason == (
        b"store unavailable: last_seq failed: OperationalError (details in the gateway log)\n"
    )
    assert ready_gauge == 0
    assert errors >= 1


def test_a_hanging_store_makes_the_gateway_unready_and_grpc_health_not_serving(
    tmp_path: Path,
) -> None:
    """A database host gone silent hangs calls instead of failing them: readiness must say so."""
    config = health_config(tmp_path)
    serving = health_pb2.HealthCheckResponse.SERVING
    release = threading.Event()

    async def scenario() -> tuple[bytes, int]:
        gateway = Gateway(config, check_every_s=CHECK_EVERY_S, check_timeout_s=0.3)
        async with running(gateway) as port:
            assert gateway.worker is not None
            store = gateway.worker.store
            last_seq = store.last_seq
            async with grpc.aio.insecure_channel(config.api.grpc_listen) as channel:
                # grpcio-health-checking's stub types declare no methods.
                health: Any = health_pb2_grpc.HealthStub(channel)

                async def health_is(status: int) -> bool:
                    answer = await health.Check(health_pb2.HealthCheckRequest())
                    return bool(answer.status == status)

                await until_true(lambda: health_is(serving), "gRPC health SERVING once started")

                def hanging() -> int:
                    release.wait(WAIT_S)
                    return last_seq()

                store.last_seq = hanging  # type: ignore[method-assign]
                try:

                    async def unready() -> bool:
                        return (await get(port, "/readyz"))[0] == 503

                    await until_true(unready, "/readyz 503 while the store does not answer")
                    reason = (await get(port, "/readyz"))[2]
                    await until_true(
                        lambda: health_is(health_pb2.HealthCheckResponse.NOT_SERVING),
                        "gRPC health NOT_SERVING while the store does not answer",
                    )
                finally:
                    store.last_seq = last_seq  # type: ignore[method-assign]
                    release.set()

                async def ready() -> bool:
                    return (await get(port, "/readyz"))[0] == 200

                await until_true(ready, "/readyz 200 once the store answers again")
                await until_true(lambda: health_is(serving), "gRPC health SERVING again")
                status = (await health.Check(health_pb2.HealthCheckRequest())).status
            return reason, status

    reason, status = uvloop.run(scenario())
    assert reason == b"store unavailable: not answering within 0.3 s\n"
    assert status == serving


def test_an_alert_the_store_refuses_is_stored_once_it_takes_it(tmp_path: Path) -> None:
    config = health_config(tmp_path)
    refusals = 3

    async def scenario() -> list[str]:
        gateway = Gateway(config, check_every_s=CHECK_EVERY_S)
        async with running(gateway) as port:
            assert gateway.worker is not None
            store = gateway.worker.store
            upsert = store.upsert_alert
            calls: list[str] = []

            def flaky(alert: AlertFields) -> None:
                calls.append(alert.alert_id)
                if len(calls) <= refusals:
                    raise StoreError("upsert_alert failed: disk I/O error")
                upsert(alert)

            store.upsert_alert = flaky  # type: ignore[method-assign]
            raising = asyncio.create_task(gateway.raise_alert(device_down_alert()))

            async def unready() -> bool:
                return (await get(port, "/readyz"))[0] == 503

            await until_true(unready, "/readyz 503 while the alert cannot be stored")
            async with asyncio.timeout(WAIT_S):
                await raising
            assert (await get(port, "/readyz"))[0] == 200
            stored = [a.alert_id for a in await asyncio.to_thread(store.alerts)]
            assert len(calls) == refusals + 1
            return stored

    assert uvloop.run(scenario()) == [device_down_alert().alert_id]


def device_down_alert() -> Alert:
    return Alert(
        alert_id="device_down:door-1-reader",
        kind=AlertKind.DEVICE_DOWN,
        severity=Severity.WARNING,
        subject="door-1-reader",
        active=True,
        message="door-1-reader is offline: connection refused",
        raised_at=datetime(2026, 11, 22, 9, 0, tzinfo=UTC),
    )


def test_lag_alert_threshold_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        health_config(tmp_path, mqtt_url="mqtt://127.0.0.1", lag_alert_s=0)
    assert err.value.problems == ["sinks.mqtt.lag_alert_s: must be a number > 0, got 0"]
    config = health_config(tmp_path, mqtt_url="mqtt://127.0.0.1", lag_alert_s=None)
    assert config.sinks.mqtt is not None
    assert config.sinks.mqtt.lag_alert_s is None


def test_metrics_are_served_over_https_with_the_api_tls_certificate(tmp_path: Path) -> None:
    # One api.tls for both listeners: the gRPC API and the metrics endpoint.
    pem = self_signed_server(tmp_path / "tls")
    config = parse_config(
        {
            "site": {"id": "tls"},
            "store": {"url": f"sqlite:///{tmp_path / 'tls.db'}"},
            "api": {
                "grpc_listen": f"127.0.0.1:{free_port()}",
                "metrics_listen": f"127.0.0.1:{free_port()}",
                "tls": {"cert_file": str(pem.cert_file), "key_file": str(pem.key_file)},
            },
        },
        environ={},
    )
    trusted = ssl.create_default_context(cafile=pem.cert_file)

    async def scenario() -> None:
        async with running(Gateway(config)) as port:
            status, _, body = await get(port, "/metrics", tls=trusted)
            assert status == 200
            assert value(parse_exposition(body.decode()), "dockwatch_ready") == 1
            assert (await get(port, "/healthz", tls=trusted))[::2] == (200, b"ok\n")
            assert (await get(port, "/readyz", tls=trusted))[::2] == (200, b"ready\n")
            with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
                await get(port, "/healthz")  # plain HTTP: the port speaks HTTPS only

    uvloop.run(scenario())
