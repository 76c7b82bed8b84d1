"""LLRP ingest throughput: tag reads/s arriving on the event loop through LlrpReaderAdapter.

How it is measured
------------------
* The reader runs in ANOTHER process: the project's LLRP simulator (``LlrpReaderSimulator``),
  which does the real LLRP handshake with sllurp. Two ways to produce the reports:

  - ``--mode pump`` (default): once the client inventories, the simulator's ``inject_bytes`` writes
    pre-encoded 100-tag RO_ACCESS_REPORTs (10 per write) as fast as the socket drains. This
    measures the gateway, not the simulator's per-tag encoder.
  - ``--mode inventory``: the simulator's own inventory (``simulate llrp --tags 100 --antennas 1
    --report-interval 0``): every report is built and encoded from the tag source. This is
    usually bounded by the simulator's encoder, not by the gateway.

* This process runs the real adapter (real sllurp thread, our framing, ``call_soon_threadsafe``
  hand-off, conversion to TagRead, a bounded queue) on uvloop; a consumer task counts the reads it
  takes from the queue. Each run connects a fresh adapter, waits for the first batch, counts reads
  for ``--seconds``, then stops the adapter. "gateway CPU" is this process's CPU seconds per wall
  second during the window (about 1.0: the gateway is the bottleneck).
* sllurp's own decode rate: after each run, in the same process with the adapter stopped, sllurp
  decodes (``LLRPMessage(msgbytes=...)``) the same 100-tag report bytes as many times as fit in
  ``--decode-seconds``: decoding only, no socket, no thread, no conversion, i.e. the ceiling of any
  sllurp-based ingest on this machine at that moment.
* Ratios, per run, medians over ``--runs``: reads delivered / reads sllurp's thread decoded in
  the same window (counted by wrapping ``LLRPClient.handleMessage``: is anything lost or piling
  up between sllurp's thread and the loop?); reads/s delivered / sllurp's decode-only reads/s
  (wall clock); and the same per CPU second (decode-only CPU per read / gateway CPU per read),
  which other people's load on a shared machine disturbs much less than wall-clock rates.

Targets: >= 30,000 reads/s and ratio >= 0.8. The default run takes about 40 s.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop
from sllurp.llrp import LLRPClient, LLRPMessage

from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.llrp import LlrpReaderAdapter, ReadBatch
from simulators.llrp import codec
from simulators.llrp.server import LlrpReaderSimulator

ROOT = Path(__file__).resolve().parent.parent
TAGS_PER_REPORT = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def reference_report(msg_id: int = 1) -> bytes:
    """A 100-tag report with the fields the adapter's ROSpec selects (as the simulator sends)."""
    now_us = time.time_ns() // 1000
    tags = tuple(
        codec.TagReportData(
            epc=bytes.fromhex(f"30{i:022X}"),
            antenna_id=1,
            peak_rssi=-58,
            first_seen_utc_us=now_us,
            last_seen_utc_us=now_us,
            tag_seen_count=1,
        )
        for i in range(TAGS_PER_REPORT)
    )
    return codec.ROAccessReport(msg_id=msg_id, tags=tags).encode()


async def pump(port: int) -> None:
    """The child process of ``--mode pump``: a simulator whose reports are pre-encoded."""
    sim = LlrpReaderSimulator(port=port, antennas=(1,), source=None, report_interval_s=0.5)
    burst = b"".join(reference_report(msg_id) for msg_id in range(1000, 1010))
    async with sim:
        while True:
            await sim.wait_for(lambda s: s.inventorying > 0, timeout_s=3600)
            while sim.inventorying > 0:
                await sim.inject_bytes(burst)  # drains: as fast as the client reads
                # A closing client's write returns without awaiting; yield so its session can end.
                await asyncio.sleep(0)


def start_reader(mode: str, port: int) -> subprocess.Popen[bytes]:
    if mode == "pump":
        command = [sys.executable, __file__, "--serve-pump", str(port)]
    else:
        command = [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "llrp",
            "--port",
            str(port),
            "--antennas",
            "1",
            "--tags",
            str(TAGS_PER_REPORT),
            "--report-interval",
            "0",
            "--summary-interval",
            "3600",
            "--log-level",
            "WARNING",
        ]
    return subprocess.Popen(command, cwd=ROOT)


def sllurp_decode_rate(frame: bytes, seconds: float) -> tuple[float, float]:
    """sllurp decoding ``frame`` in a loop: reads/s (wall) and CPU seconds per read."""
    entries = LLRPMessage(msgbytes=frame).msgdict["RO_ACCESS_REPORT"]["TagReportData"]
    assert len(entries) == TAGS_PER_REPORT, len(entries)
    decoded = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            LLRPMessage(msgbytes=frame)
        decoded += 20 * TAGS_PER_REPORT
    elapsed = time.perf_counter() - started
    return decoded / elapsed, (time.process_time() - cpu_started) / decoded


class SllurpThreadCounter:
    """Counts the tag reads sllurp's thread decodes: wraps ``LLRPClient.handleMessage``, which our
    framing calls on sllurp's thread for every decoded message (benchmark instrumentation only)."""

    def __init__(self) -> None:
        self.reads = 0
        original = LLRPClient.handleMessage

        def counting(client: object, message: LLRPMessage) -> object:
            if message.getName() == "RO_ACCESS_REPORT":
                self.reads += len(message.msgdict["RO_ACCESS_REPORT"]["TagReportData"])
            return original(client, message)

        LLRPClient.handleMessage = counting


@dataclass(frozen=True, slots=True)
class Run:
    reads: int  # reached the consumer of the adapter's queue on the event loop
    sllurp_reads: int  # decoded by sllurp's thread in the same window
    elapsed_s: float
    cpu_s: float  # the whole process: sllurp's thread + the event loop's thread
    loop_cpu_s: float  # the event loop's thread only
    dropped_batches: int

    @property
    def rate(self) -> float:
        return self.reads / self.elapsed_s


async def adapter_rate(port: int, seconds: float, counter: SllurpThreadCounter) -> Run:
    """Count the reads that reach the queue's consumer during ``seconds``."""
    queue: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=1024)
    adapter = LlrpReaderAdapter(
        reader_id="bench-reader",
        host="127.0.0.1",
        port=port,
        antennas=(1,),
        out=queue,
        on_status=lambda _: None,
        backoff=Backoff(BackoffPolicy(initial_s=0.1, max_s=1.0)),
        keepalive_s=5.0,
        report_every_ms=200,
        report_every_tags=TAGS_PER_REPORT,
    )
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(adapter.run())
        async with asyncio.timeout(20):
            await queue.get()  # connected and inventorying
        reads = 0
        sllurp_started = counter.reads
        cpu_started = time.process_time()
        loop_cpu_started = time.thread_time()  # this coroutine runs on the event loop's thread
        started = time.monotonic()
        deadline = started + seconds
        while (now := time.monotonic()) < deadline:
            try:
                async with asyncio.timeout(deadline - now):
                    batch = await queue.get()
            except TimeoutError:
                break
            reads += len(batch.reads)
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu_started
        loop_cpu = time.thread_time() - loop_cpu_started
        sllurp_reads = counter.reads - sllurp_started
        runner.cancel()
    return Run(
        reads=reads,
        sllurp_reads=sllurp_reads,
        elapsed_s=elapsed,
        cpu_s=cpu,
        loop_cpu_s=loop_cpu,
        dropped_batches=adapter.stats.dropped_batches,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per run")
    parser.add_argument("--decode-seconds", type=float, default=2.0)
    parser.add_argument("--mode", choices=("pump", "inventory"), default="pump")
    parser.add_argument("--serve-pump", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_pump is not None:
        uvloop.run(pump(args.serve_pump))
        return 0

    counter = SllurpThreadCounter()
    port = free_port()
    sim = start_reader(args.mode, port)
    rates: list[float] = []
    decode_rates: list[float] = []
    wall_ratios: list[float] = []
    cpu_ratios: list[float] = []
    handoff_ratios: list[float] = []
    capacities: list[float] = []
    try:
        wait_for_port(port, timeout_s=20)
        frame = reference_report()
        for number in range(1, args.runs + 1):
            run = uvloop.run(adapter_rate(port, args.seconds, counter))
            decode, decode_cpu_per_read = sllurp_decode_rate(frame, args.decode_seconds)
            # The machine is shared: wall rates move with other people's load, CPU microseconds
            # per read much less.
            total_us = run.cpu_s / run.reads * 1e6
            loop_us = run.loop_cpu_s / run.reads * 1e6
            rates.append(run.rate)
            decode_rates.append(decode)
            wall_ratios.append(run.rate / decode)
            cpu_ratios.append(decode_cpu_per_read * 1e6 / total_us)
            handoff_ratios.append(run.reads / run.sllurp_reads)
            capacities.append(1e6 / total_us)
            print(
                f"run {number}: adapter {run.rate:,.0f} reads/s "
                f"(sllurp thread decoded {run.sllurp_reads / run.elapsed_s:,.0f}/s), "
                f"decode-only {decode:,.0f} reads/s | CPU per read: gateway {total_us:.1f} us "
                f"(loop {loop_us:.1f}, sllurp thread {total_us - loop_us:.1f}), decode-only "
                f"{decode_cpu_per_read * 1e6:.1f} us | {run.cpu_s / run.elapsed_s:.2f} core, "
                f"dropped batches {run.dropped_batches}",
                flush=True,
            )
    finally:
        sim.terminate()
        sim.wait(timeout=10)

    rate = statistics.median(rates)
    handoff = statistics.median(handoff_ratios)
    print()
    print(
        f"LLRP ingest: {TAGS_PER_REPORT}-tag RO_ACCESS_REPORTs from a simulator in another process "
        f"(mode {args.mode}); medians of {args.runs} runs of {args.seconds:g} s"
    )
    print(f"  reads/s on the event loop through LlrpReaderAdapter: {rate:,.0f}")
    print(
        f"  sllurp decode-only reads/s (same bytes, same process): "
        f"{statistics.median(decode_rates):,.0f}"
    )
    print(
        f"  reads per CPU second of the gateway process (its rate on one whole core): "
        f"{statistics.median(capacities):,.0f}"
    )
    print(f"  ratio delivered / decoded by sllurp's thread (same window): {handoff:.2f}")
    print(f"  ratio delivered / decode-only, wall clock: {statistics.median(wall_ratios):.2f}")
    print(f"  ratio delivered / decode-only, per CPU second: {statistics.median(cpu_ratios):.2f}")
    print(
        f"  targets: >= 30,000 reads/s: {'met' if rate >= 30_000 else 'NOT met'}; "
        f"ratio >= 0.8 (delivered / sllurp's thread): {'met' if handoff >= 0.8 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
