"""The package installs, its console script runs, and the shared fixtures give real services."""

from __future__ import annotations

import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import main
from tests.support.broker import MosquittoBroker


def test_version_flag_prints_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith("dockwatch ")


def test_unknown_command_is_rejected() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_private_broker_round_trip(mosquitto: MosquittoBroker) -> None:
    got: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="smoke")
    client.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe("smoke/#", qos=1)
    client.loop_start()
    try:
        client.publish("smoke/x", b"hello", qos=1).wait_for_publish(5)
        for _ in range(100):
            if got:
                break
            time.sleep(0.02)
    finally:
        client.loop_stop()
        client.disconnect()
    assert got == [b"hello"]
