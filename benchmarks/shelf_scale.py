"""200 weight shelves polled at 5 Hz by one gateway process: CPU share and event-loop lag.

How it is measured
------------------
* The shelves run in ANOTHER process: ``dockwatch simulate modbus --servers S --units U`` (default
  20 Modbus TCP ports x 10 units = 200 transmitters, each with generated picks, restocks, bumps
  and hands, noise and drift). It is started once and serves every run.
* This process is the gateway side on uvloop: one ``ModbusShelfPoller`` (one task and one TCP
  connection per port, every unit's weight + status + heartbeat planned into one 4-register read)
  at 5 Hz, a bounded ``SampleQueue``, and the gateway's own ``ShelfPipeline`` (the object
  ``dockwatch run`` drives) feeding 200 ``ShelfEngine``s and its low-stock monitor. Nothing else
  runs in it (no store, no MQTT: movements and alerts are counted, not recorded), so its CPU is
  the adapter's, the pipeline's and the engines'.
* Each run: connect and warm up for ``--warmup`` s, then measure for ``--seconds`` s:
  - gateway CPU share: this process's user+system CPU seconds / wall seconds (1.0 = one core);
  - simulator CPU share: the same for the simulator process, read from /proc;
  - event-loop lag: a probe task sleeps 10 ms in a loop; lag = how late it wakes. p50 / p99 / max;
  - sample rate: samples per shelf per second (target 5.0) and the slowest shelf's rate.
  Figures are medians over ``--runs`` runs. Targets: every shelf at ~5 Hz, lag p99 < 50 ms.

Run: ``.venv/bin/python benchmarks/shelf_scale.py [--seconds 20] [--runs 2]`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import uvloop

from gateway.adapters.modbus import ModbusShelfPoller, PollerSettings, SampleQueue, ShelfPoint
from gateway.domain.model import Alert, DeviceId, LocationId, Movement, Sku, WeightSample
from gateway.domain.shelf import ShelfEngine
from gateway.runtime.shelves import ShelfPipeline
from simulators.modbus.accuracy import point_for, tolerance_for
from simulators.modbus.server import default_scenario

LISTENING = re.compile(r"listening on ([\d.]+):(\d+) units (\d+)\.\.(\d+)")


@dataclass(frozen=True, slots=True)
class RunFigures:
    gateway_cpu: float
    simulator_cpu: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    rate_mean_hz: float
    rate_min_hz: float
    requests_per_s: float
    movements: int


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_run(
    points: list[ShelfPoint],
    engines: dict[str, ShelfEngine],
    sim_pid: int,
    args: argparse.Namespace,
) -> RunFigures:
    counts: dict[str, int] = dict.fromkeys(engines, 0)
    lags: list[float] = []
    movements = 0
    measuring = False

    async def record(out: Sequence[Movement]) -> None:
        nonlocal movements
        if measuring:
            movements += len(out)

    async def raise_alert(_alert: Alert) -> None:
        nonlocal movements
        if measuring:
            movements += 1

    def sampled(sample: WeightSample, _out: Sequence[Movement]) -> None:
        if measuring:
            counts[sample.shelf_id] += 1

    pipeline = ShelfPipeline(
        engines,
        record=record,
        raise_alert=raise_alert,
        taken=lambda _at: datetime.now(UTC),
        samples=SampleQueue(maxsize=20_000),
        on_sample=sampled,
    )
    poller = ModbusShelfPoller(points, on_sample=pipeline.samples.put, settings=PollerSettings())

    async def probe() -> None:
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            if measuring:
                lags.append(max(0.0, time.perf_counter() - t0 - 0.01))

    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(poller.run()),
            group.create_task(pipeline.run()),
            group.create_task(probe()),
        ]
        await asyncio.sleep(args.warmup)
        requests_before = poller.requests
        cpu0, sim0, wall0 = self_cpu_seconds(), proc_cpu_seconds(sim_pid), time.monotonic()
        measuring = True
        await asyncio.sleep(args.seconds)
        measuring = False
        wall = time.monotonic() - wall0
        cpu, sim = self_cpu_seconds() - cpu0, proc_cpu_seconds(sim_pid) - sim0
        requests = poller.requests - requests_before
        for task in tasks:
            task.cancel()
    rates = [c / wall for c in counts.values()]
    return RunFigures(
        gateway_cpu=cpu / wall,
        simulator_cpu=sim / wall,
        lag_p50_ms=1000 * percentile(lags, 0.50),
        lag_p99_ms=1000 * percentile(lags, 0.99),
        lag_max_ms=1000 * max(lags),
        rate_mean_hz=statistics.fmean(rates),
        rate_min_hz=min(rates),
        requests_per_s=requests / wall,
        movements=movements,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--servers", type=int, default=20, help="simulated Modbus TCP ports")
    parser.add_argument("--units", type=int, default=10, help="transmitters per port")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window per run")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "modbus",
            "--port",
            "0",
            "--servers",
            str(args.servers),
            "--units",
            str(args.units),
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        endpoints: list[tuple[str, int]] = []
        while len(endpoints) < args.servers:
            line = sim.stdout.readline()
            if not line:
                raise SystemExit(f"simulator exited early (code {sim.poll()})")
            if m := LISTENING.search(line):
                endpoints.append((m.group(1), int(m.group(2))))
        points: list[ShelfPoint] = []
        engines: dict[str, ShelfEngine] = {}
        for k, (host, port) in enumerate(endpoints):
            # The same shelves as the simulator's (their events do not matter here).
            for track in default_scenario(args.units, 1 + k, events_per_shelf=0).shelves:
                shelf_id = f"shelf-{k:02d}-{track.unit:03d}"
                points.append(replace(point_for(track, host, port), shelf_id=DeviceId(shelf_id)))
                engines[shelf_id] = ShelfEngine(
                    shelf_id,
                    location=LocationId(shelf_id),
                    sku=Sku(track.sku),
                    unit_weight_g=track.unit_weight_g,
                    tolerance_g=tolerance_for(track),
                )
        print(
            f"{len(points)} shelves on {len(endpoints)} Modbus TCP ports (simulator pid "
            f"{sim.pid}), polled at 5 Hz by one uvloop process; {args.runs} runs of "
            f"{args.seconds:g} s"
        )
        figures: list[RunFigures] = []
        for run in range(args.runs):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                fig = runner.run(one_run(points, engines, sim.pid, args))
            figures.append(fig)
            print(
                f"  run {run + 1}: gateway CPU {100 * fig.gateway_cpu:.1f} % of a core, "
                f"simulator CPU {100 * fig.simulator_cpu:.1f} %, loop lag p50 "
                f"{fig.lag_p50_ms:.2f} ms p99 {fig.lag_p99_ms:.2f} ms max {fig.lag_max_ms:.1f} ms, "
                f"{fig.rate_mean_hz:.2f} samples/shelf/s (slowest {fig.rate_min_hz:.2f}), "
                f"{fig.requests_per_s:.0f} reads/s, {fig.movements} movements/alerts"
            )

        def med(name: str) -> float:
            return float(statistics.median(float(getattr(f, name)) for f in figures))

        print(
            f"median: gateway CPU {100 * med('gateway_cpu'):.1f} % of one core "
            f"({100 * med('gateway_cpu') / len(points):.3f} % per shelf), "
            f"loop lag p50 {med('lag_p50_ms'):.2f} ms, p99 {med('lag_p99_ms'):.2f} ms "
            f"(target < 50 ms), {med('rate_mean_hz'):.2f} samples/shelf/s "
            f"(slowest shelf {med('rate_min_hz'):.2f}; target 5)"
        )
        ok = med("lag_p99_ms") < 50 and med("rate_min_hz") >= 4.5
        print(f"result: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        sim.terminate()
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()


if __name__ == "__main__":
    sys.exit(main())
