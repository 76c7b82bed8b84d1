"""LLRP ingest throughput: tag reads/s arriving on the event loop through LlrpReaderAdapter.

How it is measured
------------------
* The reader runs in ANOTHER process: the project's LLRP simulator (``LlrpReaderSimulator``),
  which does the real LLRP handshake with sllurp. Two ways to produce the reports:

  - ``--mode pump`` (default): once the client inventories, the simulator's ``inject_bytes`` writes
    pre-encoded 100-tag RO_ACCESS_REPORTs (10 per write) as fast as the socket drains. This
    measures the gateway, not the simulator's per-tag encoder.
  - ``--mode inventory``: the simulator's own inventory (``simulate llrp --tags 100 --antennas 1
    --report-interval 0``): every report is built and encoded from the tag source. This can be
    bounded by the simulator's encoder rather than by the gateway.

* This process runs the real adapter (real sllurp thread, our socket reads and framing, sllurp's
  decoding, conversion to TagRead, ``call_soon_threadsafe`` hand-off, a bounded queue) on uvloop;
  a consumer task counts the reads it takes from the queue.
* sllurp's own decode rate is measured in the same run, in the same process, interleaved with the
  adapter so that both see the same load on a shared machine (measured one after the other, a
  burst of someone else's work skews the ratio either way). Each run connects a fresh adapter,
  then ``--slices`` times: (1) lets the simulator pump for ``--seconds``, then pauses it
  (SIGSTOP) and counts the reads delivered until the adapter has worked through what the kernel
  buffered (1 to 2 s more here) and gone idle: the window runs from a batch's arrival to the last
  batch, data waiting throughout; (2) with the adapter connected and idle, lets sllurp decode
  (``LLRPMessage(msgbytes=...)``) the same 100-tag report bytes in a loop for
  ``--decode-seconds``: decoding only, no socket, no thread, no conversion, i.e. the ceiling of
  any sllurp-based ingest on this machine at that moment, with CPU and wall time taken the same
  way as the adapter's; (3) resumes the simulator (SIGCONT) and waits for reads to flow again.
* Per run (its slices summed), medians over ``--runs``: reads/s delivered on the loop; sllurp's
  decode-only reads/s; their ratio (wall clock: the target); the same per CPU second (decode-only
  CPU per read / the gateway process's CPU per read, which other people's load disturbs less);
  and reads delivered / reads sllurp's thread decoded in the same windows (counted by wrapping
  ``LLRPClient.handleMessage``: is anything lost or piling up between sllurp's thread and the
  loop?). "core" is the gateway process's CPU seconds per wall second while delivering.

* The adapter writes the read journal (``gateway/adapters/journal.py``, as the gateway does by
  default) to a temporary directory: its cost is part of the figures. ``--no-journal`` leaves it
  out, for comparison.

Targets: >= 30,000 reads/s and delivered / decode-only (wall clock) >= 0.8. The default run takes
about 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop
from sllurp.llrp import LLRPClient, LLRPMessage

from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.journal import JournalWriter
from gateway.adapters.llrp import LlrpReaderAdapter, ReadBatch
from gateway.llrp import codec
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


@dataclass(slots=True)
class Totals:
    """What one run measured, its slices summed."""

    reads: int = 0  # reached the consumer of the adapter's queue on the event loop
    sllurp_reads: int = 0  # decoded by sllurp's thread in the same windows
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # the whole process: sllurp's thread + the event loop's thread
    loop_cpu_s: float = 0.0  # the event loop's thread only
    decoded: int = 0  # reads decoded by the decode-only loop
    decode_elapsed_s: float = 0.0
    decode_cpu_s: float = 0.0
    dropped_batches: int = 0

    @property
    def rate(self) -> float:
        return self.reads / self.elapsed_s

    @property
    def decode_rate(self) -> float:
        return self.decoded / self.decode_elapsed_s


def decode_only(frame: bytes, seconds: float, totals: Totals) -> None:
    """sllurp decoding ``frame`` in a loop for ``seconds`` (blocks the event loop meanwhile)."""
    decoded = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            LLRPMessage(msgbytes=frame)
        decoded += 20 * TAGS_PER_REPORT
    totals.decode_elapsed_s += time.perf_counter() - started
    totals.decode_cpu_s += time.process_time() - cpu_started
    totals.decoded += decoded


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


class Consumer:
    """Takes every batch from the queue as it arrives and counts its reads."""

    def __init__(self, queue: asyncio.Queue[ReadBatch]) -> None:
        self.queue = queue
        self.reads = 0
        self.last_batch_at = 0.0
        self.arrived = asyncio.Event()

    async def run(self) -> None:
        while True:
            batch = await self.queue.get()
            self.reads += len(batch.reads)
            self.last_batch_at = time.monotonic()
            self.arrived.set()

    async def until_flowing(self, timeout_s: float = 20.0) -> None:
        self.arrived.clear()
        async with asyncio.timeout(timeout_s):
            await self.arrived.wait()

    async def until_idle(self, quiet_s: float = 0.1, timeout_s: float = 20.0) -> None:
        """Until nothing has arrived for ``quiet_s`` (the socket and the queue are drained)."""
        async with asyncio.timeout(timeout_s):
            while True:
                before = self.reads
                await asyncio.sleep(quiet_s)
                if self.reads == before and self.queue.empty():
                    return


async def one_run(
    args: argparse.Namespace,
    port: int,
    sim: subprocess.Popen[bytes],
    counter: SllurpThreadCounter,
) -> Totals:
    frame = reference_report()
    entries = LLRPMessage(msgbytes=frame).msgdict["RO_ACCESS_REPORT"]["TagReportData"]
    assert len(entries) == TAGS_PER_REPORT, len(entries)
    queue: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=1024)
    adapter = LlrpReaderAdapter(
        reader_id="bench-reader",
        host="127.0.0.1",
        port=port,
        antennas=(1,),
        out=queue,
        on_status=lambda _: None,
        backoff=Backoff(BackoffPolicy(initial_s=0.1, max_s=1.0)),
        keepalive_s=5.0,  # the watchdog allows 10 s of silence: a paused simulator is fine
        report_every_ms=200,
        report_every_tags=TAGS_PER_REPORT,
        journal=None if args.journal_dir is None else JournalWriter(args.journal_dir, "bench"),
    )
    consumer = Consumer(queue)
    totals = Totals()
    async with asyncio.TaskGroup() as group:
        runner = group.create_task(adapter.run())
        counting = group.create_task(consumer.run())
        try:
            await consumer.until_flowing()  # connected and inventorying
            for _ in range(args.slices):
                # The window opens at a batch's arrival and closes at the last batch once the
                # paused simulator's buffered bytes are worked through: the adapter has data
                # waiting throughout (it is slower than the simulator), so all of it counts.
                reads = consumer.reads
                sllurp_reads = counter.reads
                cpu_started = time.process_time()
                loop_cpu_started = time.thread_time()  # this coroutine runs on the loop's thread
                started = consumer.last_batch_at
                await asyncio.sleep(args.seconds)
                sim.send_signal(signal.SIGSTOP)
                try:
                    await consumer.until_idle()
                    totals.elapsed_s += consumer.last_batch_at - started
                    totals.cpu_s += time.process_time() - cpu_started
                    totals.loop_cpu_s += time.thread_time() - loop_cpu_started
                    totals.reads += consumer.reads - reads
                    totals.sllurp_reads += counter.reads - sllurp_reads
                    decode_only(frame, args.decode_seconds, totals)
                finally:
                    sim.send_signal(signal.SIGCONT)
                await consumer.until_flowing()
        finally:
            runner.cancel()
            counting.cancel()
    totals.dropped_batches = adapter.stats.dropped_batches
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=3, help="adapter/decode pairs per run")
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="simulator pumping before each pause"
    )
    parser.add_argument("--decode-seconds", type=float, default=1.0, help="decode-only per slice")
    parser.add_argument("--mode", choices=("pump", "inventory"), default="pump")
    parser.add_argument("--serve-pump", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--journal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the read journal, as the gateway does (default: yes)",
    )
    args = parser.parse_args()
    if args.serve_pump is not None:
        uvloop.run(pump(args.serve_pump))
        return 0
    with tempfile.TemporaryDirectory(prefix="llrp-journal-") as journal_dir:
        args.journal_dir = Path(journal_dir) if args.journal else None
        return measure(args)


def measure(args: argparse.Namespace) -> int:

    counter = SllurpThreadCounter()
    port = free_port()
    sim = start_reader(args.mode, port)
    runs: list[Totals] = []
    try:
        wait_for_port(port, timeout_s=20)
        for number in range(1, args.runs + 1):
            run = uvloop.run(one_run(args, port, sim, counter))
            runs.append(run)
            # The machine is shared: wall rates move with other people's load, CPU microseconds
            # per read much less.
            total_us = run.cpu_s / run.reads * 1e6
            loop_us = run.loop_cpu_s / run.reads * 1e6
            decode_us = run.decode_cpu_s / run.decoded * 1e6
            print(
                f"run {number}: adapter {run.rate:,.0f} reads/s, decode-only "
                f"{run.decode_rate:,.0f} reads/s, ratio {run.rate / run.decode_rate:.2f} | "
                f"CPU per read: gateway {total_us:.1f} us (loop {loop_us:.1f}, sllurp thread "
                f"{total_us - loop_us:.1f}), decode-only {decode_us:.1f} us | "
                f"{run.cpu_s / run.elapsed_s:.2f} core, sllurp thread decoded "
                f"{run.sllurp_reads / run.elapsed_s:,.0f} reads/s, dropped batches "
                f"{run.dropped_batches}",
                flush=True,
            )
    finally:
        sim.send_signal(signal.SIGCONT)
        sim.terminate()
        sim.wait(timeout=10)

    rate = statistics.median(r.rate for r in runs)
    ratio = statistics.median(r.rate / r.decode_rate for r in runs)
    window = statistics.median(r.elapsed_s for r in runs) / args.slices
    print()
    print(
        f"LLRP ingest: {TAGS_PER_REPORT}-tag RO_ACCESS_REPORTs from a simulator in another process "
        f"(mode {args.mode}); medians of {args.runs} runs, each {args.slices} x (delivering "
        f"{window:.1f} s, decode-only {args.decode_seconds:g} s) interleaved; read journal "
        f"{'on' if args.journal else 'off'}"
    )
    print(f"  reads/s on the event loop through LlrpReaderAdapter: {rate:,.0f}")
    print(
        f"  sllurp decode-only reads/s (same bytes, same process, interleaved): "
        f"{statistics.median(r.decode_rate for r in runs):,.0f}"
    )
    print(
        f"  reads per CPU second of the gateway process (its rate on one whole core): "
        f"{statistics.median(r.reads / r.cpu_s for r in runs):,.0f}"
    )
    print(f"  ratio delivered / decode-only, wall clock: {ratio:.2f}")
    print(
        f"  ratio delivered / decode-only, per CPU second: "
        f"{statistics.median(r.reads / r.cpu_s / (r.decoded / r.decode_cpu_s) for r in runs):.2f}"
    )
    print(
        f"  ratio delivered / decoded by sllurp's thread (same windows): "
        f"{statistics.median(r.reads / r.sllurp_reads for r in runs):.2f}"
    )
    print(
        f"  targets: >= 30,000 reads/s: {'met' if rate >= 30_000 else 'NOT met'}; "
        f"delivered / decode-only >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
