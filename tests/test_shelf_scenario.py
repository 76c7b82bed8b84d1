"""Shelf scenarios (parsing, validation, seeded generation) and the transmitter physics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dockwatch_core.errors import ConfigError
from simulators.modbus.physics import HEARTBEAT_HZ, ShelfPhysics
from simulators.shelf_scenario import (
    Encoding,
    FailureMode,
    ShelfEvent,
    ShelfEventKind,
    ShelfTrack,
    WeightType,
    WordOrder,
    load_shelf_scenario,
    parse_shelves,
    shelf_scenario_from_mapping,
)

SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"


def shelf(**over: Any) -> dict[str, Any]:
    return {"id": "s1", "unit": 1, **over}


def test_bundled_scenarios_load() -> None:
    names = sorted(p.stem for p in SCENARIOS.glob("shelf_*.yaml"))
    assert {"shelf_noisy", "shelf_hand_bumps", "shelf_failures"} <= set(names)
    for name in names:
        scenario = load_shelf_scenario(SCENARIOS / f"{name}.yaml")
        assert scenario.shelves
        assert scenario.end_s > 0


def test_a_shelf_entry_is_parsed_with_its_events() -> None:
    [track] = parse_shelves(
        [
            shelf(
                sku="SKU-9",
                unit_weight_g=120,
                initial_units=10,
                encoding={"type": "int32", "word_order": "little", "scale": 0.1},
                events=[
                    {"t": 5, "restock": 2},
                    {"t": 1, "pick": 3},
                    {"t": 9, "bump": 400},
                    {"t": 12, "hand": 600, "duration": 4},
                    {"t": 2, "failure": "exception", "duration": 3, "exception_code": 6},
                ],
            )
        ]
    )
    assert track.encoding == Encoding(WeightType.INT32, WordOrder.LITTLE, 0.1)
    kinds = [(e.t, e.kind) for e in track.events]
    assert kinds == sorted(kinds)  # ordered by time
    failure = next(e for e in track.events if e.kind is ShelfEventKind.FAILURE)
    assert failure.mode is FailureMode.EXCEPTION
    assert failure.exception_code == 6
    pick = next(e for e in track.events if e.kind is ShelfEventKind.PICK)
    assert (pick.units, pick.duration) == (3, 0.8)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (shelf(events=[{"t": 1, "pick": 99}]), r"shelves\[0\].*leaves -59 units"),
        (shelf(events=[{"t": 1}]), r"shelves\[0\]\.events\[0\]: exactly one of"),
        (
            shelf(events=[{"t": 1, "pick": 0}]),
            r"shelves\[0\]\.events\[0\]\.pick: must be an integer >= 1, got 0",
        ),
        (
            shelf(events=[{"t": 1, "failure": "melted"}]),
            r"events\[0\]\.failure: must be one of 'adc_error', .*got 'melted'",
        ),
        (shelf(colour="red"), r"shelves\[0\]\.colour: unknown key \(allowed: id, unit, sku"),
        (shelf(unit_weight_g="heavy"), r"shelves\[0\]\.unit_weight_g: must be a number"),
        (shelf(encoding={"type": "float64"}), r"shelves\[0\]\.encoding"),
        (
            shelf(events=[{"t": 1, "pick": 1}, {"t": 1.5, "restock": 1}]),
            r"restock at t=1.5 overlaps the pick at t=1.0",
        ),
        ({"unit": 1}, r"shelves\[0\]\.id: missing required key"),
        (shelf(random={"count": 3, "mix": {"failure": 1}}), r"random\.mix"),
    ],
)
def test_invalid_entries_name_their_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_shelves([entry])


def test_every_problem_of_the_shelves_section_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shelves(
            [
                shelf(colour="red", events=[{"t": 1, "pick": 0}]),
                {"unit": 300},
                shelf(id="s3", encoding={"type": "float64"}, random={"mix": {"failure": 1}}),
            ]
        )
    assert caught.value.problems == [
        "shelves[0].colour: unknown key (allowed: id, unit, sku, unit_weight_g, initial_units, "
        "item_sigma_g, tare_g, capacity_g, noise_g, drift_g_per_min, encoding, events, random)",
        "shelves[0].events[0].pick: must be an integer >= 1, got 0",
        "shelves[1].id: missing required key",
        "shelves[1].unit: must be an integer in 1..247, got 300",
        "shelves[2].encoding.type: must be one of 'float32', 'int32', got 'float64'",
        "shelves[2].random.mix.failure: failures are listed explicitly, not generated",
    ]


def test_two_shelves_on_one_unit_are_rejected() -> None:
    with pytest.raises(ConfigError, match="share a unit id"):
        shelf_scenario_from_mapping({"shelves": [shelf(), shelf(id="s2")]})


def test_a_failure_may_overlap_goods_moving() -> None:
    [track] = parse_shelves(
        [shelf(events=[{"t": 1, "failure": "frozen", "duration": 5}, {"t": 2, "pick": 1}])]
    )
    assert len(track.events) == 2


def test_generation_is_seeded_and_respects_stock() -> None:
    entry = shelf(
        initial_units=2,
        random={"start": 1, "count": 60, "units": [1, 3], "mix": {"pick": 3, "restock": 1}},
    )
    a = parse_shelves([entry], seed=5)
    b = parse_shelves([entry], seed=5)
    c = parse_shelves([entry], seed=6)
    assert a == b
    assert a != c
    units = 2
    for event in a[0].events:
        if event.kind is ShelfEventKind.PICK:
            units -= event.units
        elif event.kind is ShelfEventKind.RESTOCK:
            units += event.units
        assert units >= 0


def test_a_combined_scenario_file_only_contributes_its_shelves(tmp_path: Path) -> None:
    path = tmp_path / "combined.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "dock-and-shelves",
                "seed": 3,
                "doors": [{"id": "door-1"}],
                "shelves": [shelf(events=[{"t": 1, "pick": 1}])],
            }
        ),
        encoding="utf-8",
    )
    scenario = load_shelf_scenario(path)
    assert scenario.name == "dock-and-shelves"
    assert scenario.seed == 3
    assert [t.shelf_id for t in scenario.shelves] == ["s1"]


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_shelf_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_shelf_scenario(bad)


# -- physics ---------------------------------------------------------------------------------------


def track(*events: ShelfEvent, noise: float = 0.0, drift: float = 0.0) -> ShelfTrack:
    return ShelfTrack(
        shelf_id="s1",
        unit=1,
        unit_weight_g=250.0,
        initial_units=20,
        item_sigma_g=2.0,
        tare_g=800.0,
        noise_g=noise,
        drift_g_per_min=drift,
        events=events,
    )


def test_reading_is_a_pure_function_of_time() -> None:
    t = track(
        ShelfEvent(2.0, ShelfEventKind.PICK, 0.8, units=2),
        ShelfEvent(6.0, ShelfEventKind.HAND, 3.0, grams=500.0),
        noise=1.5,
        drift=1.0,
    )
    a, b = ShelfPhysics(t, seed=4), ShelfPhysics(t, seed=4)
    times = [i * 0.137 for i in range(100)]
    assert [a.reading(x) for x in times] == [b.reading(x) for x in reversed(times)][::-1]
    other = ShelfPhysics(t, seed=5)
    assert [a.reading(x).gross_g for x in times] != [other.reading(x).gross_g for x in times]


def test_a_pick_removes_units_of_varying_weight() -> None:
    p = ShelfPhysics(track(ShelfEvent(2.0, ShelfEventKind.PICK, 0.8, units=2)), seed=1)
    before = p.reading(1.0)
    after = p.reading(5.0)
    assert p.units_at(1.0) == 20
    assert p.units_at(5.0) == 18
    assert before.gross_g == pytest.approx(800.0 + 20 * 250.0)
    assert before.gross_g - after.gross_g == pytest.approx(500.0, abs=10.0)
    assert before.gross_g - after.gross_g != 500.0  # real items are not all alike
    assert before.stable
    assert after.stable
    assert not p.reading(2.4).stable  # the hand is on the shelf


def test_a_resting_hand_is_never_stable_and_leaves_no_trace() -> None:
    p = ShelfPhysics(track(ShelfEvent(2.0, ShelfEventKind.HAND, 4.0, grams=500.0)), seed=1)
    # Tremor (20 g), sway (3 %: 15 g) and physiological tremor (7.5 g) around the hand's force.
    assert p.reading(4.0).gross_g == pytest.approx(5_800.0 + 500.0, abs=45.0)
    assert not any(p.reading(2.5 + i * 0.1).stable for i in range(30))
    assert p.reading(8.0).gross_g == pytest.approx(5_800.0)


def test_noise_has_the_configured_spread_and_drift_accumulates() -> None:
    p = ShelfPhysics(track(noise=2.0, drift=6.0), seed=9)
    values = [p.reading(i / 50.0).gross_g - 5_800.0 - 6.0 * i / 50.0 / 60.0 for i in range(5000)]
    mean = sum(values) / len(values)
    sigma = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    assert abs(mean) < 0.2
    assert sigma == pytest.approx(2.0, rel=0.1)
    assert ShelfPhysics(track(drift=6.0), seed=1).reading(600.0).gross_g == pytest.approx(5_860.0)


def test_failures_freeze_or_flag_the_reading() -> None:
    p = ShelfPhysics(
        track(
            ShelfEvent(2.0, ShelfEventKind.FAILURE, 4.0, mode=FailureMode.FROZEN),
            ShelfEvent(3.0, ShelfEventKind.PICK, 0.8, units=1),
            ShelfEvent(10.0, ShelfEventKind.FAILURE, 2.0, mode=FailureMode.ADC_ERROR),
        ),
        seed=1,
    )
    frozen = p.reading(5.0)
    assert frozen.failure is FailureMode.FROZEN
    assert frozen.gross_g == p.reading(2.0).gross_g == pytest.approx(5_800.0)
    assert frozen.heartbeat == p.reading(2.0).heartbeat
    assert p.reading(6.5).gross_g == pytest.approx(5_550.0, abs=8.0)
    assert p.reading(6.5).heartbeat == int(6.5 * HEARTBEAT_HZ)
    adc = p.reading(11.0)
    assert adc.adc_error
    assert adc.failure is FailureMode.ADC_ERROR
    assert p.reading(12.5).failure is None


def test_overload_above_capacity() -> None:
    t = ShelfTrack(shelf_id="s1", unit=1, initial_units=10, capacity_g=2_000.0, tare_g=0.0)
    assert ShelfPhysics(t, seed=0).reading(1.0).overload
