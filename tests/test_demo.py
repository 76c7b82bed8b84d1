"""``make demo`` as a newcomer runs it (``DEMO_SECONDS=60``): movements from both doors and the
shelves, a low-stock alert, the metrics endpoint answering meanwhile, then a clean exit.

The demo uses the fixed ports of ``deploy/demo.yaml`` (a real demo on this machine would make it
refuse to start, which this test would report).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.conftest import missing
from tests.support.broker import find_mosquitto

pytestmark = pytest.mark.integration

DEMO_SECONDS = 60


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_demo_shows_both_doors_the_shelves_and_a_low_stock_alert_then_stops_cleanly() -> None:
    if find_mosquitto() is None:
        missing("the mosquitto binary")
    lines: list[str] = []
    scraped: dict[str, tuple[int, str]] = {}
    errors: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--seconds", str(DEMO_SECONDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as demo:
        assert demo.stdout is not None
        assert demo.stderr is not None
        stderr_pipe = demo.stderr
        reader = threading.Thread(target=lambda: errors.append(stderr_pipe.read()), daemon=True)
        reader.start()
        metrics_url = console_url = None
        for line in demo.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("metrics: "):
                metrics_url = line.split()[1]
            if line.startswith("console: "):
                console_url = line.split()[1]
            # While the demo runs (its first movement is in), scrape as Prometheus would.
            if metrics_url and not scraped and re.search(r"#\d+\s+adjustment", line):
                scraped["metrics"] = _get(metrics_url)
                assert console_url is not None  # printed before the board starts
                scraped["console"] = _get(console_url)
                scraped["healthz"] = _get(metrics_url.replace("/metrics", "/healthz"))
                scraped["readyz"] = _get(metrics_url.replace("/metrics", "/readyz"))
        returncode = demo.wait(timeout=60)
        reader.join(timeout=10)
    out = "\n".join(lines)
    stderr = "".join(errors)
    assert returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]

    for device in (
        "door-1-reader",
        "door-2-reader",
        "shelf-a1",
        "shelf-a2",
        "shelf-a3",
        "shelf-b1",
    ):
        assert f"device {device} online" in out, out
    # The shelves' stock is set from their weight; the goods the scenario ships were counted.
    assert re.search(r"#\d+\s+adjustment SKU-1001\s+x13\s+adjustment -> shelf-a1", out), out
    assert re.search(r"#\d+\s+adjustment SKU-1002\s+x\d+\s+adjustment -> staging", out), out
    # Door 1 receives, door 2 ships, every shelf is picked from, a restock clears the alert.
    assert re.search(r"#\d+\s+receipt\s+SKU-1001\s+x12\s+yard -> receiving\s+\[door-1", out), out
    assert re.search(r"#\d+\s+shipment\s+SKU-1002\s+x8\s+staging -> shipping\s+\[door-2", out), out
    for shelf in ("shelf-a1", "shelf-a2", "shelf-a3", "shelf-b1"):
        assert re.search(rf"#\d+\s+pick\s+SKU-\d+\s+x\d+\s+{shelf} -> picked", out), out
    assert re.search(r"ALERT RAISED\s+low_stock: SKU-1001 at shelf-a1", out), out
    assert re.search(r"ALERT cleared low_stock: SKU-1001 at shelf-a1", out), out

    # The final board: every movement reached MQTT and central, shipped stock is not negative.
    final = out[out.rindex("--- dockwatch demo") :]
    synced = re.search(r"sync: last seq (\d+); central acked (\d+), mqtt acked (\d+)", final)
    assert synced, final
    assert int(synced[1]) > 10
    assert synced[1] == synced[2] == synced[3], final
    staged = re.search(r"staging\s+SKU-1002\s+(-?\d+)", final)
    assert staged, final
    assert int(staged[1]) >= 0, final
    assert "active alerts: none" in final

    status, body = scraped["metrics"]
    assert status == 200
    assert re.search(r"^dockwatch_movements_total\S* \d+", body, re.MULTILINE), body
    assert scraped["healthz"][0] == 200
    assert scraped["console"][0] == 200  # the operator console, at the printed console: URL
    assert "<h1>Overview</h1>" in scraped["console"][1]
    assert scraped["readyz"][0] == 200
    assert scraped["readyz"][1].strip() == "ready"
    assert out.rstrip().endswith("dockwatch demo stopped.")
    leftovers = subprocess.run(
        ["pgrep", "-f", "gateway.cli simulate"], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""


def test_without_mosquitto_the_demo_runs_on_the_embedded_broker() -> None:
    """A machine without mosquitto: the embedded Python broker (MQTT 3.1.1) carries the demo."""
    environ = {**os.environ, "DOCKWATCH_DEMO_BROKER": "embedded"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--seconds", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environ,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedded amqtt broker on 127.0.0.1:11883" in out, out
    assert re.search(r"#\d+\s+adjustment SKU-1001\s+x13\s+adjustment -> shelf-a1", out), out
    assert re.search(r"#\d+\s+receipt\s+SKU-1001\s+x12\s+yard -> receiving", out), out
    final = out[out.rindex("--- dockwatch demo") :]
    synced = re.search(r"sync: last seq (\d+); central acked (\d+), mqtt acked (\d+)", final)
    assert synced, final
    assert synced[1] == synced[3], final  # everything recorded reached the embedded broker
    assert out.rstrip().endswith("dockwatch demo stopped.")
