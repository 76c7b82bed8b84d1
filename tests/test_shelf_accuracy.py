"""End to end: simulator -> Modbus TCP -> adapter -> shelf engine -> edge store, against truth.

The scenarios run 10-20x faster than real time (see ``simulators.modbus.accuracy``); each prints
its tally (visible with ``pytest -s`` or on failure).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.domain.model import DeviceState
from simulators.modbus.accuracy import AccuracyReport, run_accuracy
from simulators.shelf_scenario import load_shelf_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"


def run(name: str, tmp_path: Path, speed: float) -> AccuracyReport:
    scenario = load_shelf_scenario(SCENARIOS / f"{name}.yaml")
    report = asyncio.run(
        run_accuracy(
            scenario,
            store_url=f"sqlite:///{tmp_path / 'edge.db'}",
            truth_path=tmp_path / "truth.jsonl",
            speed=speed,
        )
    )
    print("\n".join(report.lines()))
    return report


def test_noisy_shelves_count_99_percent_exactly_without_phantoms(tmp_path: Path) -> None:
    # 10x, as benchmarks/shelf_accuracy.py: at 15x a loaded machine's scheduling jitter becomes
    # whole seconds of scenario time between polls, and close picks merge.
    report = run("shelf_noisy", tmp_path, speed=10.0)
    assert report.events >= 100
    assert report.exact_ratio >= 0.99, report.lines()
    assert report.phantom == 0, report.lines()
    for shelf in report.shelves:
        assert shelf.store_final == shelf.truth_final, shelf
        assert shelf.adjustments == 0
    hands_only = next(s for s in report.shelves if s.shelf_id == "shelf-a6")
    assert hands_only.events == 0
    assert hands_only.phantom == 0


def test_resting_hands_and_bumps_make_no_movement(tmp_path: Path) -> None:
    report = run("shelf_hand_bumps", tmp_path, speed=20.0)
    assert report.events == 0
    assert report.phantom == 0
    for shelf in report.shelves:
        assert shelf.adjustments == 0
        assert shelf.store_final == shelf.truth_final


def test_failures_are_reported_and_goods_moved_meanwhile_are_counted(tmp_path: Path) -> None:
    report = run("shelf_failures", tmp_path, speed=12.0)
    failing, healthy = report.shelves
    # Every pick and restock of the failing shelf is counted, those during failures included.
    assert failing.exact == failing.events == 8
    assert failing.phantom == 0
    assert failing.store_final == failing.truth_final
    # Its line-mate loses a few polls while the silent unit is retried, never stock.
    assert healthy.store_final == healthy.truth_final
    online, degraded, offline = DeviceState.ONLINE, DeviceState.DEGRADED, DeviceState.OFFLINE
    states = [(s.state, s.detail) for s in report.statuses if s.device_id == "shelf-f1"]
    assert [state for state, _ in states] == [
        online,
        degraded,  # ADC error bit
        online,
        degraded,  # heartbeat frozen
        online,
        degraded,  # exception 0x04
        online,
        offline,  # no answer
        online,
    ]
    assert "ADC error" in states[1][1]
    assert "heartbeat frozen" in states[3][1]
    assert "0x04" in states[5][1]
    assert "no answer" in states[7][1]
    assert [s.state for s in report.statuses if s.device_id == "shelf-f2"] == [online]
