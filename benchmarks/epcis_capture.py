"""EPCIS capture: a backlog of movements delivered as EPCIS 2.0 events to the capture simulator.

What is measured
----------------
1. ``--movements`` movements (default 20,000: a third receipts of two cases on a pallet, which
   are two events each, a third transfers, a third shelf picks) are recorded into a fresh edge
   store while no sink runs.
2. The capture simulator (``dockwatch simulate epcis``) runs in ANOTHER process on a free port
   with a fresh database. ``EpcisRelay`` (the production sink: store pages read and mapped to
   events in a worker thread, canonical event hashes, one EPCISDocument of ``--batch``
   movements per POST, the next document prepared while one is in flight, the cursor written
   on each 202) delivers the backlog; the time runs from ``run()`` to the cursor at the last
   seq. Rates: events/s and movements/s.
3. In the same run, the MQTT relay (``MqttSink``, QoS 1, two publishes per movement) drains the
   same backlog to a private Mosquitto, for the ratio EPCIS movements/s / MQTT movements/s.
4. The capture simulator runs twice per repeat: validating every document against the GS1
   EPCIS 2.0 JSON Schema with format checks (what a repository does; the simulator's validator
   is then the bottleneck, on one core) and with ``--no-validate`` (the gateway's own rate).

Figures are medians over ``--repeats`` (default 3). Target: >= 5,000 events/s.

Run: ``.venv/bin/python benchmarks/epcis_capture.py [--movements N] [--repeats R] [--batch B]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_store.records import LocationRecord
from edge_store.repository import EdgeStore
from gateway.adapters.epcis import EpcisRelay
from gateway.adapters.mqtt import MqttSink
from gateway.domain.epc import decode_epc, encode_sgtin96, encode_sscc96
from gateway.domain.epcis import EpcisSite, movement_events
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)

SITE = "dc-bench"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
EPCIS_SITE = EpcisSite(
    site=SITE,
    read_points={"door-1": "urn:epc:id:sgln:0614141.00001.1"},
    gtins={"SKU-1001": "00614141123452"},
    inside={"door-1": "receiving"},
    shelves={"shelf-a1": "shelf-a1"},
)


def movements(start: int, count: int) -> list[Movement]:
    out = []
    for i in range(start, start + count):
        shape = i % 3
        if shape == 0:  # a receipt: two cases on a pallet (an ObjectEvent and an Aggregation)
            cases = tuple(
                decode_epc(encode_sgtin96("0614141", "812345", 2 * i + k)).uri for k in (0, 1)
            )
            pallet = decode_epc(encode_sscc96("0614141", f"1{i:09d}")).uri
            kind, src, dst, source = MovementKind.RECEIPT, "yard", "receiving", "door-1"
        elif shape == 1:
            cases = (decode_epc(encode_sgtin96("0614141", "812345", 2 * i)).uri,)
            pallet = None
            kind, src, dst, source = MovementKind.TRANSFER, "receiving", "backroom", "door-1"
        else:
            cases, pallet = (), None
            kind, src, dst, source = MovementKind.PICK, "shelf-a1", "picked", "shelf-a1"
        out.append(
            Movement(
                movement_id=MovementId(f"bench-{i:07d}"),
                kind=kind,
                sku=Sku("SKU-1001"),
                quantity=1 + i % 12,
                from_location=LocationId(src),
                to_location=LocationId(dst),
                source_type=SourceType.WEIGHT_SHELF if shape == 2 else SourceType.RFID_PORTAL,
                source_id=source,
                observed_at=T0 + timedelta(milliseconds=37 * i),
                confidence=0.97,
                epcs=cases,
                container=pallet,
            )
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on port {port}")


@contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dockwatch-bench-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def capture_simulator(work: Path, name: str, *, validate: bool, workers: int) -> Iterator[int]:
    port = free_port()
    command = [
        sys.executable, "-m", "gateway.cli", "simulate", "epcis",
        "--listen", f"127.0.0.1:{port}", "--db", str(work / f"{name}.db"),
        "--summary-interval", "3600", "--log-level", "WARNING",
    ]  # fmt: skip
    if not validate:
        command.append("--no-validate")
    command += ["--workers", str(workers)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def mosquitto(work: Path) -> Iterator[int]:
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest none\nmax_queued_messages 0\nmax_inflight_messages 0\n"
    )
    conf.chmod(0o644)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def drain_epcis(store: EdgeStore, port: int, cursor: str, total: int, batch: int) -> float:
    relay = EpcisRelay(
        store,
        site=EPCIS_SITE,
        capture_url=f"http://127.0.0.1:{port}/capture",
        batch_size=batch,
        cursor_name=cursor,
    )
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    await relay.wait_acked(total)
    elapsed = time.perf_counter() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if relay.counters["holds"] or relay.counters["duplicate_events"]:
        raise RuntimeError(f"unexpected refusals: {dict(relay.counters)}")
    return elapsed


async def drain_mqtt(store: EdgeStore, port: int, cursor: str, total: int) -> float:
    sink = MqttSink(
        store=store,
        site=SITE,
        url=f"mqtt://127.0.0.1:{port}",
        topic_prefix="dockwatch/dc-bench",
        client_id=f"bench-{cursor}",
        cursor_name=cursor,
    )
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sink.run())
        while sink.relay.persisted_seq < total:  # noqa: ASYNC110 - sampling the sink under test
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        task.cancel()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movements", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="movements per document (500)")
    parser.add_argument("--no-mqtt", action="store_true", help="skip the MQTT comparison")
    parser.add_argument(
        "--workers", type=int, default=2, help="the validating simulator's processes (2)"
    )
    args = parser.parse_args()
    total = args.movements
    wall = time.perf_counter()
    with scratch() as work:
        store = EdgeStore.open(f"sqlite:///{work / 'edge.db'}", site=SITE)
        store.sync_catalog(
            [CatalogItem(sku=Sku("SKU-1001"), name="Widget", gtin="00614141123452")],
            [LocationRecord(x) for x in ("yard", "receiving", "backroom", "shelf-a1", "picked")],
        )
        for offset in range(0, total, 1000):
            store.record(movements(offset, min(1000, total - offset)), now=T0)
        events = sum(
            len(movement_events(r, EPCIS_SITE))
            for offset in range(0, total, 5000)
            for r in store.movements_since(offset, 5000)
        )
        print(
            f"backlog: {total:,} movements = {events:,} EPCIS events; documents of {args.batch} "
            f"movements; python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
            f"load {os.getloadavg()[0]:.1f}"
        )
        rates: dict[str, list[float]] = {"validating": [], "not validating": [], "mqtt": []}
        ratios: dict[str, list[float]] = {"validating": [], "not validating": []}
        for repeat in range(1, args.repeats + 1):
            mqtt_rate = None
            if not args.no_mqtt:
                with mosquitto(work) as port:
                    elapsed = asyncio.run(drain_mqtt(store, port, f"mqtt-{repeat}", total))
                mqtt_rate = total / elapsed
                rates["mqtt"].append(mqtt_rate)
            for mode, validate in (("not validating", False), ("validating", True)):
                name = f"epcis-{repeat}-{'v' if validate else 'n'}"
                with capture_simulator(work, name, validate=validate, workers=args.workers) as port:
                    elapsed = asyncio.run(drain_epcis(store, port, name, total, args.batch))
                rates[mode].append(events / elapsed)
                if mqtt_rate is not None:
                    ratios[mode].append((total / elapsed) / mqtt_rate)
            print(
                f"repeat {repeat}: "
                + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items() if v)
            )
        store.close()
    print("EPCIS relay -> capture simulator (another process), medians:")
    for mode in ("not validating", "validating"):
        median = statistics.median(rates[mode])
        line = (
            f"  simulator {mode:<15}: {median:>8,.0f} events/s "
            f"({median * total / events:,.0f} movements/s)"
        )
        if ratios[mode]:
            line += f"; ratio to the MQTT relay {statistics.median(ratios[mode]):.2f}"
        print(line)
    if rates["mqtt"]:
        mqtt = statistics.median(rates["mqtt"])
        print(f"  MQTT relay (QoS 1, same backlog): {mqtt:,.0f} movements/s")
    best = statistics.median(rates["not validating"])
    print(f"target >= 5,000 events/s: {'met' if best >= 5000 else 'NOT met'} ({best:,.0f})")
    print(f"wall {time.perf_counter() - wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
