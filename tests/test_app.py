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
from simulators.llrp.server import LlrpReaderSimulator
from simulators.scenario import parse_scenario
from tests.support.broker import MosquittoBroker
from tests.support.net import free_port

pytestmark = pytest.mark.integration

CASES = 4


def scenario_data() -> dict[str, Any]:
    return {
        "name": "app-e2e",
        "seed": 7,
        "duration_s": 8,
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
                "at_s": 0.5,
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
