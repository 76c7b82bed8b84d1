"""MQTT backlog drain: movements recorded while the broker is down, then streamed by the relay.

What is measured
----------------
1. A private Mosquitto (started here, on a free port, config printed) is DOWN while
   ``--movements`` movements (default 100,000) are recorded into a fresh edge store.
2. Mosquitto starts. ``MqttSink`` (the production relay: store reads in worker threads, payload
   building, in-flight window, contiguous cursor writes) drains the backlog: the time runs from
   ``run()`` to the cursor *persisted in the store* at the last seq. Rate = movements / time.
3. In the same run, against the same broker, a plain aiomqtt client publishes the very same
   payloads on the same topics (two per movement, prebuilt before timing) with QoS 1 and the
   same window of un-acknowledged publishes, until every PUBACK arrived.
4. Steps 2-3 repeat ``--repeats`` times (default 3, alternating which goes first; each repeat
   uses a new cursor name, so the relay starts from seq 0 again, and a restarted broker). The
   figures are medians; the ratio is median(relay rate / baseline rate) over the repeats,
   i.e. each ratio is taken within one repeat, against the same broker.

No subscriber is attached (the broker acknowledges and discards): this isolates the publisher.
Targets: relay >= 3,000 movements/s and ratio >= 0.7.

Run: ``.venv/bin/python benchmarks/mqtt_backlog.py [--movements N] [--repeats R]
[--protocol 5|3.1.1] [--inflight 100] [--store-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
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

import aiomqtt

from edge_store.records import LocationRecord
from edge_store.repository import EdgeStore
from gateway.adapters.mqtt import MqttSink
from gateway.domain import payloads
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
PREFIX = "dockwatch/dc-bench"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
FLOWS = (
    (MovementKind.RECEIPT, "yard", "receiving"),
    (MovementKind.TRANSFER, "receiving", "shelf-a1"),
    (MovementKind.PICK, "shelf-a1", "customer"),
)


def movements(start: int, count: int) -> list[Movement]:
    out = []
    for i in range(start, start + count):
        kind, src, dst = FLOWS[i % len(FLOWS)]
        rfid = kind is MovementKind.RECEIPT
        out.append(
            Movement(
                movement_id=MovementId(f"bench-{i:07d}"),
                kind=kind,
                sku=Sku("SKU-1001"),
                quantity=1 + i % 12,
                from_location=LocationId(src),
                to_location=LocationId(dst),
                source_type=SourceType.RFID_PORTAL if rfid else SourceType.WEIGHT_SHELF,
                source_id="door-1" if rfid else "shelf-a1",
                observed_at=T0 + timedelta(milliseconds=37 * i),
                confidence=0.97,
                epcs=(f"urn:epc:id:sgtin:0614141.812345.{i}",) if rfid else (),
            )
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private mosquitto; its directory is readable by the unprivileged user it drops to."""

    def __init__(self, workdir: Path, receive_maximum: int) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"log_dest none\nmax_queued_messages 0\nmax_inflight_messages {receive_maximum}\n"
        )
        self.conf.chmod(0o644)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._proc = subprocess.Popen([binary, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


@contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dockwatch-bench-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def drain_with_relay(
    store: EdgeStore, port: int, cursor: str, total: int, protocol: str, inflight: int
) -> float:
    sink = MqttSink(
        store=store,
        site=SITE,
        url=f"mqtt://127.0.0.1:{port}",
        topic_prefix=PREFIX,
        client_id=f"bench-relay-{cursor}",
        protocol=protocol,  # type: ignore[arg-type]
        inflight_max=inflight,
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


async def publish_with_aiomqtt(
    messages: list[tuple[str, bytes]], port: int, protocol: str, inflight: int
) -> float:
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-aiomqtt",
        protocol=version,
        max_inflight_messages=inflight,
    ) as client:
        client.pending_calls_threshold = 10 * inflight  # not a benchmark of its warnings
        window = asyncio.Semaphore(inflight)

        async def one(topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1, timeout=math.inf)
            finally:
                window.release()

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for topic, payload in messages:
                await window.acquire()
                tg.create_task(one(topic, payload))
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movements", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--inflight", type=int, default=100, help="window (config default)")
    parser.add_argument(
        "--receive-maximum",
        type=int,
        default=0,
        help="broker max_inflight_messages (0 = unlimited; mosquitto's own default is 20)",
    )
    parser.add_argument("--store-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    total = args.movements
    wall = time.perf_counter()

    with scratch() as work:
        url = args.store_url or f"sqlite:///{work / 'edge.db'}"
        broker = Broker(work, args.receive_maximum)
        store = EdgeStore.open(url, site=SITE)
        store.sync_catalog(
            [CatalogItem(sku=Sku("SKU-1001"), name="Widget")],
            [LocationRecord(x) for x in ("yard", "receiving", "shelf-a1", "customer")],
        )
        first = store.last_seq()
        if first:
            print(f"store {url} is not empty (last seq {first}); use a fresh one", file=sys.stderr)
            return 2
        started = time.perf_counter()
        for offset in range(0, total, 1000):
            store.record(movements(offset, min(1000, total - offset)), now=T0)
        recording = time.perf_counter() - started
        messages = [
            (topic, payloads.movement_json(r))
            for offset in range(0, total, 5000)
            for r in store.movements_since(offset, 5000)
            for topic in payloads.movement_topics(PREFIX, r)
        ]
        print(
            f"recorded {total:,} movements while the broker was down: {recording:.1f} s "
            f"({total / recording:,.0f}/s); store {url.split(':')[0]}, MQTT {args.protocol}, "
            f"window {args.inflight}, broker receive maximum "
            f"{args.receive_maximum or 'unlimited'}, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
        )
        relay_rates: list[float] = []
        base_rates: list[float] = []
        ratios: list[float] = []
        try:
            for repeat in range(1, args.repeats + 1):
                broker.start()  # the backlog is there; the broker comes (back) up
                relay_first = repeat % 2 == 1
                order = ("relay", "aiomqtt") if relay_first else ("aiomqtt", "relay")
                rates: dict[str, float] = {}
                for who in order:
                    if who == "relay":
                        elapsed = asyncio.run(
                            drain_with_relay(
                                store, broker.port, f"bench-{repeat}", total, args.protocol,
                                args.inflight,
                            )
                        )  # fmt: skip
                    else:
                        elapsed = asyncio.run(
                            publish_with_aiomqtt(
                                messages, broker.port, args.protocol, args.inflight
                            )
                        )
                    rates[who] = total / elapsed
                broker.stop()
                relay_rates.append(rates["relay"])
                base_rates.append(rates["aiomqtt"])
                ratios.append(rates["relay"] / rates["aiomqtt"])
                print(
                    f"  repeat {repeat} ({' then '.join(order)}): relay "
                    f"{rates['relay']:,.0f} movements/s, plain aiomqtt {rates['aiomqtt']:,.0f} "
                    f"movements/s, ratio {ratios[-1]:.2f}"
                )
        finally:
            broker.stop()
            store.close()
    relay = statistics.median(relay_rates)
    base = statistics.median(base_rates)
    ratio = statistics.median(ratios)
    print(
        f"MovementRelay drain: {relay:,.0f} movements/s ({2 * relay:,.0f} publishes/s), "
        f"median of {args.repeats}  [target >= 3,000]"
    )
    print(f"plain aiomqtt, same payloads, QoS 1: {base:,.0f} movements/s, median")
    print(f"ratio relay / plain (median of per-repeat ratios): {ratio:.2f}  [target >= 0.7]")
    print(f"(whole run {time.perf_counter() - wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
