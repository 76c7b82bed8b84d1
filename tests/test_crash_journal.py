"""Crash-safe door decisions: the gateway process SIGKILLed while a pass is open, restarted.

The gateway runs as a real process (``dockwatch run``) against the reader simulator playing one
pallet of four cases through a door. It is killed after every read of the pallet reached it (they
are in its read journal) but before it decided the pass (``idle_close_s`` is long here, to open
that window wide); the simulator has nothing more to say about that pallet. Without the journal
the crossing would be lost. With it, the restarted gateway replays the reads and records the
receipt; killed and restarted once more, it replays the same reads again and records nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_store.repository import EdgeStore
from gateway.adapters.journal import replay_journal
from simulators.llrp.server import LlrpReaderSimulator
from simulators.llrp.source import ScriptedReads, SimRead
from simulators.scenario import parse_scenario
from tests.support.net import free_port
from tests.test_app import CASES, scenario_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READER = "door-1-reader"


def _script(t0: float) -> list[SimRead]:
    """The scenario's reads, sampled once (in 50 ms windows) so they are known in advance."""
    source = parse_scenario(scenario_data()).read_source("door-1", t0)
    step = 0.05
    return [r for k in range(240) for r in source.reads(t0 + k * step, t0 + (k + 1) * step)]


def _config(tmp_path: Path, reader_port: int, metrics_port: int) -> Path:
    config = {
        "site": {"id": "crash"},
        "store": {"url": f"sqlite:///{tmp_path / 'edge.db'}"},
        "catalog": {"items": [{"sku": "SKU-1001", "gtin": "00614141123452", "name": "Widget"}]},
        "locations": [{"id": "yard", "kind": "dock"}, {"id": "receiving"}],
        "readers": [
            {
                "id": READER,
                "host": "127.0.0.1",
                "port": reader_port,
                "antennas": [1, 2, 3, 4],
                "keepalive_s": 2,
                "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            }
        ],
        "portals": [
            {
                "id": "door-1",
                "reader": READER,
                "outside_antennas": [1, 2],
                "inside_antennas": [3, 4],
                "outside_location": "yard",
                "inside_location": "receiving",
            }
        ],
        # Long enough that the kill below lands between the last read and the decision.
        # quiet_close_s as long: no early quiet-side decision closes the window either
        "debounce": {"portal": {"idle_close_s": 4.0, "quiet_close_s": 4.0, "stray_dwell_s": 30.0}},
        "api": {
            "grpc_listen": f"127.0.0.1:{free_port()}",
            "metrics_listen": f"127.0.0.1:{metrics_port}",
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class GatewayProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # our own gateway, a fixed command line
                command, stdout=out, stderr=subprocess.STDOUT, cwd=self.config.parent
            )

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:  # not listening yet
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    return None


def _movements(db: Path) -> list[Any]:
    with EdgeStore.open(f"sqlite:///{db}", site="crash") as store:
        return [r.movement for r in store.movements_since(0)]


async def until(predicate: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        await asyncio.sleep(0.1)


def test_a_pass_open_when_the_gateway_is_killed_is_recorded_once_after_restarts(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    db = tmp_path / "edge.db"
    journal = tmp_path / "journal"

    async def scenario() -> None:
        script = _script(time.time() + 1.5)
        last_read_us = max(r.last_seen_us for r in script)
        async with LlrpReaderSimulator(source=ScriptedReads(script), report_interval_s=0.05) as sim:
            gateway = GatewayProcess(_config(tmp_path, sim.port, metrics_port), tmp_path / "gw.log")
            gateway.start()
            try:

                def journaled_all() -> bool:
                    reports = replay_journal(journal, [READER]) if journal.exists() else []
                    seen = [r.last_seen_us for rep in reports for r in rep.reads]
                    return bool(seen) and max(seen) >= last_read_us

                await until(journaled_all, 30, "every read of the pallet journaled")
                assert _movements(db) == []  # not decided yet (idle_close_s 4 s)
                gateway.kill()

                gateway.start()  # the reader has nothing more about that pallet
                await until(lambda: len(_movements(db)) == 1, 30, "the receipt recorded")
                (movement,) = _movements(db)
                assert (movement.kind, movement.quantity) == ("receipt", CASES)
                assert (movement.from_location, movement.to_location) == ("yard", "receiving")

                gateway.kill()
                gateway.start()  # replays the same reads: the crossings are known, none new
                suppressed = 'dockwatch_portal_passes_total{outcome="repeats_suppressed"}'
                await until(
                    lambda: (_metric(metrics_port, suppressed) or 0) >= CASES,
                    30,
                    "the replayed crossings found already recorded",
                )
                assert [m.movement_id for m in _movements(db)] == [movement.movement_id]
            finally:
                gateway.stop()

    asyncio.run(scenario())
    log = (tmp_path / "gw.log").read_text()
    assert "read journal:" in log
