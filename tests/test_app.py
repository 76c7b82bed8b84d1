"""The whole gateway, end to end: LLRP simulator -> sllurp -> portal engine -> store -> MQTT.

A pallet of four cases crosses an inbound door; an independent MQTT subscriber must see one
receipt of four eaches, byte-for-byte the movement the store holds, plus the retained stock level
and the reader's retained ``online`` status. Stopping the gateway leaves no sllurp thread behind.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import uvloop
from paho.mqtt.enums import CallbackAPIVersion

from edge_store.repository import EdgeStore
from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from gateway.domain import payloads
from simulators.central import CentralLedger, CentralServer
from simulators.llrp.server import LlrpReaderSimulator
from simulators.modbus.server import ShelfSimulator
from simulators.scenario import parse_scenario
from simulators.shelf_scenario import ShelfScenario, shelf_scenario_from_mapping
from tests.support.broker import MosquittoBroker
from tests.support.net import free_port

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
    config = uvloop.run(_run_gateway_through_pick(tmp_path))
    with EdgeStore.open(config.store.url, site="e2e-shelf") as store:
        stored = [r.movement for r in store.movements_since(0)]
        level = store.stock(location="shelf-a1", sku="SKU-1001")[0].on_hand
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


async def _run_gateway_through_pick(tmp_path: Path) -> GatewayConfig:
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
                        assert gateway.central is not None
                        await gateway.central.wait_acked(2)
                finally:
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
        finally:
            await central.stop()
        received = ledger.movements("e2e-shelf")
    assert [r.seq for r in received] == [1, 2]
    assert received[1].movement.kind == "pick"
    return config
