"""Weight-shelf accuracy, end to end, against the simulator's ground truth.

How it is measured
------------------
* Each run is ``simulators.modbus.accuracy.run_accuracy``: the Modbus shelf simulator (a real
  pymodbus TCP server) plays a scenario from ``simulators/scenarios``; the real adapter
  (``ModbusShelfPoller``, 5 Hz in scenario time) reads it over TCP; one ``ShelfEngine`` per shelf
  turns samples into movements; the movements are committed to a real ``EdgeStore`` (SQLite in a
  temporary directory). The truth file the simulator wrote is then matched with the movements:
  a pick/restock is *exact* when a movement of the same shelf, kind and quantity was observed
  between its start and 4 s after its end (6 s after a sensor failure overlapping it). Unmatched
  movements are *phantoms*; truth events without an exact movement are *missed*.
* Scenarios run ``--speed`` times faster than real time on a paced clock (a stall of this process
  pauses the scenario instead of hiding seconds of it).
* ``shelf_noisy`` (5 picking shelves, sigma 1 g noise, drift, varying item weights, occasional
  bumps and hands, plus a hands-and-knocks-only shelf) runs ``--runs`` times, each with another
  seed (so other generated events); ``shelf_hand_bumps`` runs once with the transmitter's stable
  bit used (the default) and once without; ``shelf_failures`` once.
* Targets: >= 99 % exact on shelf_noisy and zero phantoms from bumps or resting hands.

Run: ``.venv/bin/python benchmarks/shelf_accuracy.py [--runs 3] [--speed 10]`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop
import yaml

from gateway.domain.params import ShelfParams
from simulators.modbus.accuracy import AccuracyReport, run_accuracy
from simulators.shelf_scenario import ShelfScenario, shelf_scenario_from_mapping

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "simulators" / "scenarios"


def scenario(name: str, seed: int | None = None) -> ShelfScenario:
    raw: dict[str, Any] = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text(encoding="utf-8"))
    if seed is not None:
        raw["seed"] = seed
    return shelf_scenario_from_mapping(raw, default_name=name)


def run_one(sc: ShelfScenario, speed: float, params: ShelfParams | None = None) -> AccuracyReport:
    with tempfile.TemporaryDirectory() as tmp:
        coro = run_accuracy(
            sc,
            store_url=f"sqlite:///{Path(tmp) / 'edge.db'}",
            truth_path=Path(tmp) / "truth.jsonl",
            speed=speed,
            params=params,
        )
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="seeds of shelf_noisy to run")
    parser.add_argument("--speed", type=float, default=10.0, help="scenario seconds per second")
    parser.add_argument("--verbose", action="store_true", help="list every miss and phantom")
    args = parser.parse_args()
    # The runs log every device state change; only the figures matter here.
    logging.basicConfig(level=logging.CRITICAL)

    def show(report: AccuracyReport, label: str) -> None:
        lines = report.lines()
        print(f"[{label}] {lines[0]}")
        for line in lines[1:]:
            if args.verbose or not line.startswith("    "):
                print(line)

    print(f"shelf accuracy, end to end at {args.speed:g}x real time\n")
    noisy: list[AccuracyReport] = []
    for k in range(args.runs):
        seed = 20261122 + k
        report = run_one(scenario("shelf_noisy", seed), args.speed)
        noisy.append(report)
        show(report, f"noisy seed {seed}")
    events = sum(r.events for r in noisy)
    exact = sum(r.exact for r in noisy)
    phantom = sum(r.phantom for r in noisy)
    missed = sum(r.missed for r in noisy)
    ratios = sorted(r.exact_ratio for r in noisy)
    print(
        f"\nshelf_noisy over {args.runs} runs: {exact}/{events} picks and restocks counted exactly "
        f"({100 * exact / events:.2f} %; per run min {100 * ratios[0]:.1f} %, median "
        f"{100 * ratios[len(ratios) // 2]:.1f} %), {missed} missed, {phantom} phantom "
        f"(target >= 99 %, 0 phantom)\n"
    )
    hands = run_one(scenario("shelf_hand_bumps"), args.speed * 2)
    show(hands, "hands+bumps, stable bit used")
    no_bit = run_one(
        scenario("shelf_hand_bumps"), args.speed * 2, ShelfParams(use_stable_bit=False)
    )
    show(no_bit, "hands+bumps, stable bit ignored")
    print(
        f"\nphantom movements from resting hands and bumps: {hands.phantom} with the stable bit, "
        f"{no_bit.phantom} on weight alone (target 0 with the default settings)\n"
    )
    failures = run_one(scenario("shelf_failures"), args.speed)
    show(failures, "failures")
    for status in failures.statuses:
        print(f"    {status.device_id}: {status.state} {status.detail}")
    ok = all(r.exact_ratio >= 0.99 and r.phantom == 0 for r in noisy) and hands.phantom == 0
    print(f"\nresult: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
