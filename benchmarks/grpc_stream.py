"""gRPC streaming throughput: WatchMovements from the local API, and central ingest.

What is measured
----------------
1. A fresh SQLite edge store is filled with ``--movements`` movements (default 100,000; the mixed
   flows of a DC: receipts with EPCs, transfers, picks) before any clock starts.
2. ``watch``: the production ``EdgeApiServer`` (page size as configured, default 500) serves the
   store on a loopback port in this process (uvloop, as ``dockwatch run``); a client in ANOTHER
   process (this script started with ``--watch-client``) opens ``WatchMovements(after_seq=0)``
   and reads until the movement with the last seq has arrived, decoding every message (each a
   page of up to 500 movements). The client times from sending the request to that last message
   (its process start-up and connect are outside the clock). Rate = movements / time.
   ``plain``: a reference, not a contender: a bare ``grpc.aio`` servicer in this process that
   yields the very same movements ONE PER MESSAGE, converted to protobuf before the clock
   starts, with no store, paging or waking at all; the same client process reads them. It is
   what one gRPC message costs in Python here, i.e. the ceiling of any
   one-message-per-movement stream, which is why ``WatchMovements`` sends pages;
   ratio = watch / plain within a repeat.
3. ``central``: the central simulator runs as its own process
   (``dockwatch simulate central`` on a fresh ledger; it validates, stores durably with
   ``synchronous=FULL`` and acknowledges every batch); the production ``CentralRelay`` (batch
   size as configured, default 500 like ``sinks.central.batch_max``, window 4) streams the store
   to it from a pristine copy of the store (cursor 0) in this process. The time runs from
   ``run()`` until central acknowledged the last seq (the relay's ``wait_acked``; every ack is
   also persisted as the store's ``central`` cursor). Rate = movements / time.
4. Each repeats ``--repeats`` times (default 3); the figures are medians. Targets: >= 10,000
   movements/s for the watch and for central ingest.

Run: ``.venv/bin/python benchmarks/grpc_stream.py [--movements N] [--repeats R]
[--watch-page N] [--batch N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import uvloop

from edge_store.records import LocationRecord
from edge_store.repository import EdgeStore
from gateway.adapters.central import CentralRelay
from gateway.adapters.grpc_api import EdgeApiServer
from gateway.adapters.proto_convert import movement_to_proto
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)
from gateway.proto.dockwatch.edge.v1 import edge_api_pb2, edge_api_pb2_grpc, types_pb2

SITE = "dc-bench"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
FLOWS = (
    (MovementKind.RECEIPT, "yard", "receiving"),
    (MovementKind.TRANSFER, "receiving", "shelf-a1"),
    (MovementKind.PICK, "shelf-a1", "customer"),
)
SKUS = tuple(f"SKU-{1000 + i}" for i in range(20))


def movements(start: int, count: int) -> list[Movement]:
    out = []
    for i in range(start, start + count):
        kind, src, dst = FLOWS[i % len(FLOWS)]
        rfid = kind is not MovementKind.PICK
        out.append(
            Movement(
                movement_id=MovementId(f"bench-{i:07d}"),
                kind=kind,
                sku=Sku(SKUS[i % len(SKUS)]),
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


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s}s")


@contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dockwatch-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fill(url: str, total: int) -> float:
    with EdgeStore.open(url, site=SITE) as store:
        store.sync_catalog(
            [CatalogItem(sku=Sku(sku), name=sku) for sku in SKUS],
            [LocationRecord(x) for x in ("yard", "receiving", "shelf-a1", "customer")],
        )
        started = time.perf_counter()
        for offset in range(0, total, 1000):
            store.record(movements(offset, min(1000, total - offset)), now=T0)
        return time.perf_counter() - started


# --- WatchMovements --------------------------------------------------------------------------

PLAIN_METHOD = "/dockwatch.bench.Plain/Watch"
"""The baseline's method: one ``Movement`` per message (not part of any API)."""


async def watch_client(port: int, total: int, mode: str) -> tuple[float, int]:
    """The client side (its own process): read the stream from seq 0 to ``total``; returns the
    time taken and the number of messages."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        request = edge_api_pb2.WatchRequest(after_seq=0)
        count = last = messages = 0
        started = time.perf_counter()
        if mode == "watch":
            call = edge_api_pb2_grpc.EdgeApiStub(channel).WatchMovements(request)
            async for response in call:
                messages += 1
                for movement in response.movements:
                    count, last = count + 1, movement.seq
                if last >= total:
                    break
            call.cancel()
        else:
            plain: grpc.aio.UnaryStreamMultiCallable[
                edge_api_pb2.WatchRequest, types_pb2.Movement
            ] = channel.unary_stream(
                PLAIN_METHOD,
                request_serializer=edge_api_pb2.WatchRequest.SerializeToString,
                response_deserializer=types_pb2.Movement.FromString,
            )
            plain_call = plain(request)
            async for movement in plain_call:
                messages += 1
                count, last = count + 1, movement.seq
                if last >= total:
                    break
            plain_call.cancel()
        elapsed = time.perf_counter() - started
    if count != total:
        raise RuntimeError(f"received {count} movements, expected {total}")
    return elapsed, messages


async def run_client(port: int, total: int, mode: str) -> tuple[float, int]:
    argv = [sys.executable, __file__, "--watch-client", str(port), "--client-mode", mode]
    done = await asyncio.to_thread(
        subprocess.run,
        [*argv, "--movements", str(total)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the watch client failed: {done.stderr.strip()}")
    elapsed, messages = done.stdout.split()
    return float(elapsed), int(messages)


async def watch_once(url: str, total: int, page_size: int) -> tuple[float, int]:
    with EdgeStore.open(url, site=SITE) as store:
        server = EdgeApiServer(store, site=SITE, listen="127.0.0.1:0", page_size=page_size)
        port = await server.start()
        try:
            return await run_client(port, total, "watch")
        finally:
            await server.stop(1.0)


def _plain_handler(messages: list[types_pb2.Movement]) -> grpc.GenericRpcHandler:
    """The baseline: prebuilt messages, yielded one per message (no generated servicer)."""

    async def watch(
        request: edge_api_pb2.WatchRequest, context: object
    ) -> AsyncIterator[types_pb2.Movement]:
        for message in messages:
            yield message
        await asyncio.Event().wait()  # like a watch: the client ends it

    handler = grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=edge_api_pb2.WatchRequest.FromString,
        response_serializer=types_pb2.Movement.SerializeToString,
    )
    service, method = PLAIN_METHOD.strip("/").split("/")
    return grpc.method_handlers_generic_handler(service, {method: handler})


async def plain_once(messages: list[types_pb2.Movement]) -> tuple[float, int]:
    server = grpc.aio.server(handlers=[_plain_handler(messages)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await run_client(port, len(messages), "plain")
    finally:
        await server.stop(0.5)


# --- central ingest --------------------------------------------------------------------------


async def central_once(pristine: Path, work: Path, total: int, batch: int, repeat: int) -> float:
    db = work / f"edge-{repeat}.db"
    shutil.copyfile(pristine, db)
    port = free_port()
    central = await asyncio.to_thread(_start_central, work, port, repeat)
    try:
        await asyncio.to_thread(wait_for_port, port)
        with EdgeStore.open(f"sqlite:///{db}", site=SITE) as store:
            relay = CentralRelay(store, site=SITE, target=f"127.0.0.1:{port}", batch_size=batch)
            started = time.perf_counter()
            async with asyncio.TaskGroup() as tasks:
                task = tasks.create_task(relay.run())
                await relay.wait_acked(total)
                elapsed = time.perf_counter() - started
                task.cancel()
            if store.get_cursor("central") != total:
                raise RuntimeError("the central cursor did not reach the last seq")
    finally:
        central.terminate()
        await asyncio.to_thread(central.wait, 20)
    return elapsed


def _start_central(work: Path, port: int, repeat: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "central",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(work / f"central-{repeat}.db"),
            "--log-level",
            "WARNING",
            "--summary-interval",
            "3600",
        ],
        stdout=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movements", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--watch-page", type=int, default=500, help="EdgeApiServer page_size")
    parser.add_argument("--batch", type=int, default=500, help="relay batch (batch_max)")
    parser.add_argument("--watch-client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--client-mode", choices=("watch", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = args.movements
    if args.watch_client is not None:
        elapsed, messages = uvloop.run(watch_client(args.watch_client, total, args.client_mode))
        print(f"{elapsed:.6f} {messages}")
        return 0
    # The servers' start-up lines (e.g. "listens on loopback without authentication") are not
    # the figures; real problems still show.
    logging.basicConfig(level=logging.ERROR)
    wall = time.perf_counter()
    with scratch() as work:
        pristine = work / "pristine.db"
        url = f"sqlite:///{pristine}"
        recording = fill(url, total)
        print(
            f"recorded {total:,} movements into a SQLite edge store: {recording:.1f} s; "
            f"python {sys.version.split()[0]}, grpcio {grpc.__version__}, {os.cpu_count()} cpus, "
            f"load {os.getloadavg()[0]:.1f}"
        )
        with EdgeStore.open(url, site=SITE) as store:
            prebuilt = [
                movement_to_proto(r)
                for offset in range(0, total, 5000)
                for r in store.movements_since(offset, 5000)
            ]
        rates: dict[str, list[float]] = {k: [] for k in ("watch", "plain", "central")}
        ratios: list[float] = []
        per_message: list[float] = []
        for repeat in range(1, args.repeats + 1):
            watch_s, watch_messages = uvloop.run(watch_once(url, total, args.watch_page))
            plain_s, _ = uvloop.run(plain_once(prebuilt))
            seconds = {
                "watch": watch_s,
                "plain": plain_s,
                "central": uvloop.run(central_once(pristine, work, total, args.batch, repeat)),
            }
            for key, elapsed in seconds.items():
                rates[key].append(total / elapsed)
            ratios.append(rates["watch"][-1] / rates["plain"][-1])
            per_message.append(total / watch_messages)
            print(
                f"  repeat {repeat}: "
                + ", ".join(f"{k} {rates[k][-1]:,.0f}/s ({seconds[k]:.2f} s)" for k in seconds)
                + f", watch/plain {ratios[-1]:.2f}, watch {per_message[-1]:.0f} movements/message"
            )
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"WatchMovements, 0 to the end, client in another process (pages of up to "
        f"{args.watch_page}, {statistics.median(per_message):.0f} movements/message): "
        f"{median['watch']:,.0f} movements/s, median of {args.repeats}  [target >= 10,000]"
    )
    print(
        f"reference: a bare grpc.aio stream of the same prebuilt movements, one per message "
        f"(the ceiling of one message per movement): {median['plain']:,.0f} movements/s; "
        f"WatchMovements / bare (median of per-repeat ratios): {statistics.median(ratios):.2f}"
    )
    print(
        f"central ingest to `dockwatch simulate central` in another process (batch {args.batch}, "
        f"window 4, acked = stored with synchronous=FULL): "
        f"{median['central']:,.0f} movements/s, median of {args.repeats}  [target >= 10,000]"
    )
    print(f"(whole run {time.perf_counter() - wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
