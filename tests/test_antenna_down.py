"""End to end: the whole gateway, real sllurp, the reader simulator cutting one antenna.

Tags keep arriving at the door on all four antennas (a new EPC per antenna every round); the
simulator's ``cut_antenna`` fault then silences one antenna, as a knocked cable would. The gateway
must raise ``antenna_down`` (stored, listed, in the metrics) and mark the reader degraded within
``debounce.antenna.silence_s`` (2 s here; 30 s by default, the requirement is 60 s), and clear both
once the antenna reads again. A reader that notices (AntennaEvent) makes it immediate. Another
case: a reader whose clock is 5 s off is degraded and reports its skew.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from edge_store.repository import EdgeStore
from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from gateway.domain.model import AlertKind
from simulators.llrp.server import LlrpReaderSimulator
from simulators.llrp.source import SimRead
from tests.support.net import free_port

pytestmark = pytest.mark.integration

SILENCE_S = 2.0


class Arrivals:
    """A door with traffic: every poll, one new tag on each antenna (a ReadSource)."""

    def __init__(self, antennas: Sequence[int] = (1, 2, 3, 4)) -> None:
        self.antennas = antennas
        self._serials = itertools.count(1)

    def reads(self, t0: float, t1: float) -> Sequence[SimRead]:
        stamp = int(t1 * 1_000_000)
        return [
            SimRead(a, f"3074257BF7194E40{next(self._serials):08X}", -60.0, stamp, stamp)
            for a in self.antennas
        ]


def config(tmp_path: Path, reader_port: int, metrics_port: int) -> GatewayConfig:
    return parse_config(
        {
            "site": {"id": "antenna-e2e"},
            "store": {"url": f"sqlite:///{tmp_path / 'edge.db'}"},
            "catalog": {"items": [{"sku": "SKU-1001", "gtin": "00614141123452", "name": "W"}]},
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
            "debounce": {"antenna": {"silence_s": SILENCE_S, "rate_window_s": 1.0}},
            "api": {
                "grpc_listen": f"127.0.0.1:{free_port()}",
                "metrics_listen": f"127.0.0.1:{metrics_port}",
            },
        },
        environ={},
    )


def _scrape(port: int) -> dict[str, float]:
    """The gateway's metrics; none while its listener is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:  # connection refused (starting): URLError is an OSError
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[series(name)] = float(value)
    return out


def series(name: str) -> str:
    """A series name with its labels in one order (exposition may order them either way)."""
    metric, brace, labels = name.partition("{")
    if not brace:
        return name
    pairs = sorted(labels.rstrip("}").split(","))
    return metric + "{" + ",".join(pairs) + "}"


async def scrape(port: int) -> dict[str, float]:
    return await asyncio.to_thread(_scrape, port)


ANTENNA_2_UP = series('dockwatch_antenna_up{reader="door-1-reader",antenna="2"}')
ANTENNA_3_UP = series('dockwatch_antenna_up{reader="door-1-reader",antenna="3"}')
DEGRADED = series(
    'dockwatch_device_state{device="door-1-reader",type="llrp_reader",state="degraded"}'
)
ONLINE = series('dockwatch_device_state{device="door-1-reader",type="llrp_reader",state="online"}')
ANTENNA_1_UP = series('dockwatch_antenna_up{reader="door-1-reader",antenna="1"}')
ANTENNA_2_RATE = series('dockwatch_antenna_read_rate{reader="door-1-reader",antenna="2"}')


def antenna_alert(series: str) -> Callable[[dict[str, float]], bool]:
    """The antenna is down, the reader degraded and the alert raised (one alert at a time)."""
    return lambda m: (
        m.get(series) == 0.0 and m.get(DEGRADED) == 1.0 and m["dockwatch_alerts_active"] == 1
    )


def antenna_clear(series: str) -> Callable[[dict[str, float]], bool]:
    return lambda m: (
        m.get(series) == 1.0 and m.get(ONLINE) == 1.0 and m["dockwatch_alerts_active"] == 0
    )


async def until(predicate: Any, port: int, within_s: float) -> tuple[dict[str, float], float]:
    """Scrape until ``predicate(metrics)``; returns them and when it held."""
    deadline = time.monotonic() + within_s
    while True:
        metrics = await scrape(port)
        if predicate(metrics):
            return metrics, time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {metrics}")
        await asyncio.sleep(0.1)


def test_a_cut_antenna_raises_antenna_down_and_degrades_the_reader_until_it_reads_again(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()

    async def scenario() -> tuple[float, float, float]:
        async with LlrpReaderSimulator(source=Arrivals(), report_interval_s=0.1) as sim:
            cfg = config(tmp_path, sim.port, metrics_port)
            gateway = Gateway(cfg)
            task = asyncio.create_task(gateway.run())
            try:
                await until(lambda m: m.get(ONLINE) == 1.0, metrics_port, 20)
                metrics, _ = await until(
                    lambda m: m.get(ANTENNA_2_RATE, 0) > 0,
                    metrics_port,
                    10,
                )
                assert metrics[ANTENNA_2_UP] == 1.0

                cut_at = time.monotonic()
                sim.cut_antenna(2)  # silently: the reader does not notice
                metrics, down_at = await until(antenna_alert(ANTENNA_2_UP), metrics_port, 60)
                assert metrics[ANTENNA_1_UP] == 1
                assert metrics["dockwatch_alerts_active"] == 1.0

                sim.cut_antenna(2, cut=False)
                restored_at = time.monotonic()
                _, up_at = await until(antenna_clear(ANTENNA_2_UP), metrics_port, 10)

                # The reader notices a cut of antenna 3: down at once, back on "connected".
                reported_at = time.monotonic()
                sim.cut_antenna(3, announce=True)
                # The antenna's own state, at once; the reader's degraded state and the alert
                # follow through the store (a loaded machine's SQLite may take a while).
                _, reported_down_at = await until(
                    lambda m: m.get(ANTENNA_3_UP) == 0.0, metrics_port, 10
                )
                await until(antenna_alert(ANTENNA_3_UP), metrics_port, 10)
                sim.cut_antenna(3, cut=False, announce=True)
                await until(antenna_clear(ANTENNA_3_UP), metrics_port, 10)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        return down_at - cut_at, up_at - restored_at, reported_down_at - reported_at

    down_after, up_after, reported_after = asyncio.run(scenario())
    # Silence counts from the antenna's last read, up to a report round (0.2 s) before the cut.
    assert SILENCE_S - 0.5 <= down_after < 60.0
    assert down_after < SILENCE_S + 5.0  # the limit plus a check, ticks and scrapes
    assert up_after < 5.0
    # No silence needed when the reader says so: far sooner than silence (at least 1.5 s).
    assert reported_after < 1.0

    with EdgeStore.open(f"sqlite:///{tmp_path / 'edge.db'}", site="antenna-e2e") as store:
        alerts = [a for a in store.alerts(active_only=False) if a.kind == AlertKind.ANTENNA_DOWN]
    by_id = {a.alert_id: a for a in alerts}
    assert set(by_id) == {"antenna_down:door-1-reader:2", "antenna_down:door-1-reader:3"}
    assert not any(a.active for a in alerts)  # both cleared
    statuses = "; ".join(a.message for a in alerts)
    assert "antenna" in statuses


def test_a_reader_clock_off_by_5_s_is_degraded_and_its_skew_reported(tmp_path: Path) -> None:
    metrics_port = free_port()

    async def scenario() -> dict[str, float]:
        ahead = LlrpReaderSimulator(
            source=Arrivals(), report_interval_s=0.1, clock=lambda: time.time() + 5.0
        )
        async with ahead as sim:
            gateway = Gateway(config(tmp_path, sim.port, metrics_port))
            task = asyncio.create_task(gateway.run())
            try:
                metrics, _ = await until(lambda m: m.get(DEGRADED) == 1.0, metrics_port, 20)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        return metrics

    metrics = asyncio.run(scenario())
    skew = metrics['dockwatch_reader_clock_skew_seconds{reader="door-1-reader"}']
    assert 4.5 < skew < 5.5
