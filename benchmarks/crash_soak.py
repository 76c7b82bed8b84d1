"""Crash soak: the gateway SIGKILLed while pallets cross its doors, restarted; door recall and
precision against the scenario's ground truth.

How it is measured
------------------
* One LLRP reader simulator per door of the scenario (``hard.yaml`` by default: two neighbouring
  doors, four minutes of traffic, strays and cross-reads) runs in this process, in real time (the
  gateway runs on the wall clock).
* The gateway is a real process (``python -m gateway.cli run``) with a SQLite store and, unless
  ``--no-journal``, its read journal (the default) in a temporary directory. It is SIGKILLed
  ``--kills`` times, each ``--kill-after-s`` (2.5 s) after a pallet crossed a door plane (pallets
  spread over the run): the pallet has just gone through, its pass is not decided yet (a pass
  closes ``idle_close_s`` after its last read and a load settles some seconds later), and other
  pallets may be on their way. It is started again ``--restart-s`` later (1 s: with its own
  start-up and reconnection the doors are unheard for about 2 to 3 s). ``--no-journal`` deletes
  the journal before each restart: the gateway as it was before the journal.
* After the scenario the gateway is given ``--tail-s`` to settle, stopped, and the movements in
  its store are scored as in ``benchmarks/portal_accuracy.py``: the case EPCs moved, as
  ``(EPC, from, to)`` multisets, against every truth crossing of a case. A crossing recorded twice
  counts against precision.
* Missed crossings are split by when the pallet crossed the door plane: *before a kill* (at least
  1 s before it, within 30 s: its reads had reached the gateway, and the journal is meant to save
  these), *while the gateway was down* (from 1 s before the kill until the restart plus
  ``--gap-s`` for start-up and reconnection: some of its reads were never sent to the gateway;
  only a reader that holds reports across a reconnect could save these), and *other*.

    .venv/bin/python benchmarks/crash_soak.py                   # ~5 min, journal on
    .venv/bin/python benchmarks/crash_soak.py --no-journal      # the same without it
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from edge_store import EdgeStore
from gateway.domain.epc import decode_epc
from gateway.domain.views import MovementView
from simulators.llrp.accuracy import scenario_catalog, score
from simulators.llrp.server import LlrpReaderSimulator
from simulators.scenario import Scenario, load_scenario
from simulators.truth import read_ground_truth

SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"
SITE = "soak"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_config(
    scenario: Scenario, ports: dict[str, int], workdir: Path, metrics_port: int
) -> Path:
    catalog = scenario_catalog(scenario)
    places = sorted(
        {d.outside_location for d in scenario.doors} | {d.inside_location for d in scenario.doors}
    )
    config: dict[str, Any] = {
        "site": {"id": SITE},
        "store": {"url": f"sqlite:///{workdir / 'edge.db'}", "journal_dir": str(workdir / "j")},
        "catalog": {"items": [{"sku": i.sku, "gtin": i.gtin, "name": i.name} for i in catalog]},
        "locations": [{"id": p} for p in places],
        "readers": [
            {
                "id": d.reader,
                "host": "127.0.0.1",
                "port": ports[d.reader],
                "antennas": list(d.antenna_ids),
                "keepalive_s": 2,
                "reconnect": {"initial_s": 0.1, "max_s": 0.5},
            }
            for d in scenario.doors
        ],
        "portals": [
            {
                "id": d.id,
                "reader": d.reader,
                "outside_antennas": list(d.outside_antennas),
                "inside_antennas": list(d.inside_antennas),
                "outside_location": d.outside_location,
                "inside_location": d.inside_location,
            }
            for d in scenario.doors
        ],
        "api": {
            "grpc_listen": f"127.0.0.1:{free_port()}",
            "metrics_listen": f"127.0.0.1:{metrics_port}",
        },
        "logging": {"level": "INFO"},
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Gateway:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # our own gateway
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.config.parent,
            )

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def kill_times(scenario: Scenario, kills: int, after_s: float) -> list[float]:
    """Scenario seconds ``after_s`` after pallets crossed a door plane, spread over the run."""
    moments = sorted({p.at_s for p in scenario.pallets})
    if kills <= 0 or not moments:
        return []
    step = len(moments) / kills
    return [moments[int(step * k + step / 2)] + after_s for k in range(kills)]


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    scenario = load_scenario(SCENARIOS / f"{args.scenario}.yaml")
    truth_path = scenario.write_truth(workdir / "truth.jsonl")
    t0 = time.time() + 3.0  # the gateway connects first
    sims = [
        LlrpReaderSimulator(
            port=0,
            reader_id=d.reader,
            antennas=d.antenna_ids,
            source=scenario.read_source(d.reader, t0),
            report_interval_s=0.1,
        )
        for d in scenario.doors
    ]
    for sim in sims:
        await sim.start()
    ports = {sim.reader_id: sim.port for sim in sims}
    gateway = Gateway(
        gateway_config(scenario, ports, workdir, free_port()), workdir / "gateway.log"
    )
    downtimes: list[tuple[float, float]] = []
    try:
        gateway.start()
        for at in kill_times(scenario, args.kills, args.kill_after_s):
            await asyncio.sleep(max(0.0, t0 + at - time.time()))
            killed = time.time() - t0
            gateway.kill()
            if not args.journal:
                shutil.rmtree(workdir / "j", ignore_errors=True)
            await asyncio.sleep(args.restart_s)
            gateway.start()
            downtimes.append((killed - 1.0, time.time() - t0 + args.gap_s))
            print(f"  killed at {killed:6.1f} s, restarted {args.restart_s:g} s later", flush=True)
        await asyncio.sleep(max(0.0, t0 + scenario.duration_s + args.tail_s - time.time()))
    finally:
        gateway.stop()
        for sim in sims:
            await sim.stop()

    with EdgeStore.open(f"sqlite:///{workdir / 'edge.db'}", site=SITE) as store:
        stored: list[MovementView] = []
        after = 0
        while page := store.movements_since(after):
            stored.extend(r.movement for r in page)
            after = page[-1].seq
    catalog = scenario_catalog(scenario)
    truth = [e for e in read_ground_truth(truth_path) if e["event"] == "crossing"]
    cases = [e for e in truth if catalog.classify(e["epc"]).item is not None]
    uri = {e["epc"]: decode_epc(e["epc"]).uri for e in cases}
    truth_triples = [(uri[e["epc"]], e["from"], e["to"]) for e in cases]
    moved = [(epc, m.from_location, m.to_location) for m in stored for epc in m.epcs]
    door_of = {(d.outside_location, d.inside_location): d.id for d in scenario.doors}
    door_of |= {(d.inside_location, d.outside_location): d.id for d in scenario.doors}
    result = score(moved, truth_triples, door_of)
    missing = Counter(truth_triples) - Counter(moved)
    missed = Counter[str]()
    for e in cases:
        key = (uri[e["epc"]], e["from"], e["to"])
        if missing[key] <= 0:
            continue
        missing[key] -= 1
        t = float(e["t"])
        if any(start <= t <= end for start, end in downtimes):
            missed["while down"] += 1
        elif any(start - 30.0 <= t < start for start, _ in downtimes):
            missed["before a kill"] += 1
        else:
            missed["other"] += 1
    extra = Counter(moved) - Counter(truth_triples)
    wrong = []
    for m in stored:
        n = sum(1 for epc in m.epcs if extra[(epc, m.from_location, m.to_location)] > 0)
        if n:
            at = m.observed_at.timestamp() - t0
            wrong.append(f"{n} of {m.kind} {m.from_location}->{m.to_location} at {at:.1f} s")
    ids = Counter(m.movement_id for m in stored)
    return {
        "wrong": wrong,
        "truth": result.truth,
        "found": result.predicted,
        "correct": result.correct,
        "precision": result.precision,
        "recall": result.recall,
        "missed": dict(missed),
        "movements": len(stored),
        "duplicate_ids": sum(n - 1 for n in ids.values() if n > 1),
        "downtimes": downtimes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="hard")
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--restart-s", type=float, default=1.0)
    parser.add_argument("--kill-after-s", type=float, default=2.5)
    parser.add_argument(
        "--gap-s", type=float, default=2.0, help="start-up + reconnection after a restart"
    )
    parser.add_argument("--tail-s", type=float, default=40.0, help="settling after the scenario")
    parser.add_argument("--journal", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="crash-soak-"))
    print(
        f"crash soak: scenario {args.scenario}, {args.kills} SIGKILLs, restart after "
        f"{args.restart_s:g} s, read journal {'on' if args.journal else 'off'} ({workdir})",
        flush=True,
    )
    try:
        r = asyncio.run(soak(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"  case crossings: truth {r['truth']}, recorded {r['found']}, correct {r['correct']}; "
        f"precision {r['precision']:.3f}, recall {r['recall']:.3f}"
    )
    print(
        f"  missed: {r['missed'] or 'none'}; movements {r['movements']}, "
        f"movement ids recorded twice: {r['duplicate_ids']}"
    )
    for line in r["wrong"]:
        print(f"  wrong case crossings: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
